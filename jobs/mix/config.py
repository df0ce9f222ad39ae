"""The mix stage's settings, declared once: ``MixParams`` (the arm size, set in the spec's ``train:``
section because every arm is trained on it) and ``MixConfig``, one step's config (written by
``workflows/plan.py``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.common.config import Params, StageConfig


class MixParams(Params):
    """How big every arm is."""

    examples: int = Field(1000, ge=1, description="training examples per arm (the same for every arm)")
    val_fraction: float = Field(
        0.05, ge=0, lt=1, description="validation rows per arm = round(examples * this)"
    )


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str = Field(description="URI of the dataset's filtered kept.jsonl")
    fraction: float = Field(gt=0, le=1, description="share of the condition's examples from this dataset")


class MixConfig(StageConfig, MixParams):  # type: ignore[misc]
    """Build one condition's training set: exactly ``examples`` train rows (and a validation split)
    drawn from the filtered datasets in exact proportions, seeded, without replacement, spread over
    prompts, in the shared base-model prompt format."""

    stage: ClassVar[str] = "mix"

    condition: str = Field(description="condition (arm) name")
    sources: dict[str, Source] = Field(description="dataset -> {uri, fraction}; fractions sum to 1")
    seed: int = Field(
        0, description="sampling seed (per dataset, so arms share the rows of a shared dataset)"
    )
    train: str = Field(description="URI of train.jsonl (MixRow per line)")
    val: str = Field(description="URI of val.jsonl (MixRow per line)")

    @model_validator(mode="after")
    def _fractions(self) -> MixConfig:
        if not self.sources:
            raise ValueError("sources: at least one dataset is needed")
        total = sum(s.fraction for s in self.sources.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"sources: fractions sum to {total:g}, must sum to 1")
        return self
