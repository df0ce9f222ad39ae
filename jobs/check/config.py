"""The check stage's settings, declared once: ``CheckParams`` is what a spec's ``checks.<value>``
section sets (it adds the personas and the sets), ``CheckConfig`` the step's config (the parameters
plus its URIs; written by ``workflows/plan.py``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.common.config import Params, StageConfig
from jobs.common.records import ClassifierKind
from jobs.llm import LLMConfig


class CheckParams(Params):
    """How much of a value system's eval sets the teacher is asked, and what counts as valid."""

    max_items: int | None = Field(
        None,
        ge=1,
        description="ask a seeded subset of at most this many violation items per set (the same subset "
        "as eval.max_items chooses, with their twins); null: every item",
    )
    max_personas: int | None = Field(
        None, ge=1, description="ask a seeded subset of this many personas; null: every persona"
    )
    seed: int = Field(0, description="seed of the persona subset")
    valid_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="an item is valid when at least this share of the personas' coherent answers "
        "object to the violation and at least this share help with its twin",
    )
    max_failed_fraction: float = Field(
        0.05, ge=0, le=1, description="exit 75 (retryable) if more requests than this fail after retries"
    )


class CheckSet(BaseModel):
    """One violation set and its same-topic twin set, as the step reads them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    violations: str = Field(description="URI of the violation items")
    neutral: str = Field(description="name of the twin set")
    neutral_uri: str = Field(description="URI of the twin items (each names its violation in `pair`)")


class CheckConfig(StageConfig, CheckParams):  # type: ignore[misc]
    """Ask the teacher, in every persona of one value system, each violation item and its twin;
    label the answers with the experiment's refusal classifier; write every answer, one CheckItem per
    violation item (its validity) and a per-set summary."""

    stage: ClassVar[str] = "check"

    value: str = Field(description="the value system checked (names the step and its folder)")
    personas: str = Field(description="URI of the value system's persona YAML")
    sets: dict[str, CheckSet] = Field(description="violation set name -> its items and its twin set")
    teacher: LLMConfig = Field(description="the teacher LLM (as in generate)")
    classifier: ClassifierKind = Field(
        "lexical", description="refusal classifier (the experiment's eval classifier)"
    )
    judge: LLMConfig | None = Field(None, description="judge LLM (classifier judge/ensemble)")
    cache: str = Field("", description="store prefix of the LLM response cache; empty: no cache")
    answers: str = Field(description="URI of every labelled answer (CheckAnswer JSONL)")
    items: str = Field(description="URI of the per-item validity (CheckItem JSONL)")
    summary: str = Field(description="URI of summary.json: per set, items, valid share, rates")
    progress: bool = Field(True, description="progress bar on a terminal, progress log lines otherwise")

    @model_validator(mode="after")
    def _check(self) -> CheckConfig:
        if not self.sets:
            raise ValueError("sets is empty: name at least one violation set and its twin set")
        if self.classifier != "lexical" and self.judge is None:
            raise ValueError(f"classifier '{self.classifier}' needs a judge (set `judge` in the spec)")
        return self
