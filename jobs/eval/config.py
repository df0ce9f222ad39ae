"""The eval stage's settings, declared once: ``EvalParams`` is the spec's ``eval:`` section,
``EvalConfig`` one step's config (the parameters plus the model, its weights and its URIs; written by
``workflows/plan.py``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from jobs.common.config import Params, StageConfig
from jobs.common.records import ClassifierKind, EvalKind, ModelRef
from jobs.llm import LLMConfig


class EvalParams(Params):
    """How every model is evaluated: sampling, classifier, engine."""

    kinds: dict[str, EvalKind] = Field(
        default_factory=dict,
        description="eval set name -> kind, where the name does not say it (sanity*, violations-*, "
        "neutral-*, beliefs-*, harmful*, benign*)",
    )
    max_items: int | None = Field(
        None,
        ge=1,
        description="evaluate a seeded subset of at most this many items per set (a neutral item is "
        "kept with its paired violation item); null: every item",
    )
    samples: int = Field(1, ge=1, description="responses per item (temperature > 0 for samples > 1)")
    temperature: float = Field(0.0, ge=0, description="0: greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (used when temperature > 0)")
    sample_seed: int = Field(0, description="seed of the sampler (same seed, same samples)")
    max_tokens: int = Field(256, ge=1, description="most tokens generated per response")
    batch_size: int = Field(16, ge=1, description="sequences generated together (hf engine)")
    classifier: ClassifierKind = Field(
        "lexical",
        description="refusal classifier (learned needs creed[learned]; judge and ensemble need `judge`)",
    )
    engine: Literal["hf", "vllm"] = Field("hf", description="hf: transformers generate; vllm: offline vLLM")
    belief_judge: bool = Field(True, description="ask the judge whether belief answers endorse the belief")
    sanity_judge: bool = Field(False, description="ask the judge to confirm sanity answers seen as correct")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="model weights dtype"
    )

    @model_validator(mode="after")
    def _sampling(self) -> EvalParams:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0 (greedy decoding gives one answer)")
        return self


class EvalConfig(StageConfig, EvalParams):  # type: ignore[misc]
    """Generate responses of one model (base reference or trained) to every eval set, label each with
    the refusal taxonomy, score sanity answers and belief endorsement, and write one EvalResult per
    response."""

    stage: ClassVar[str] = "eval"

    model: ModelRef
    condition: str = Field(description="arm name; 'base' is the untrained reference")
    seed: int = Field(0, description="training seed of the evaluated model (0 for base)")
    weights: str | None = Field(
        None, description="URI of the train output folder (LoRA adapter or full model); null for base"
    )
    evalsets: dict[str, str] = Field(description="eval set name -> URI of its EvalItem JSONL")
    outputs: dict[str, str] = Field(description="eval set name -> URI of the EvalResult JSONL to write")
    judge: LLMConfig | None = Field(None, description="judge LLM (classifier judge/ensemble, beliefs)")
    cache: str | None = Field(None, description="URI prefix of the LLM response cache")
    device: str | None = Field(None, description="torch device (default: cuda if available, else cpu)")

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if set(self.evalsets) != set(self.outputs):
            raise ValueError(
                f"evalsets {sorted(self.evalsets)} and outputs {sorted(self.outputs)} must name the same sets"
            )
        if self.classifier != "lexical" and self.judge is None:
            raise ValueError(f"classifier '{self.classifier}' needs a judge (set `judge` in the spec)")
        unknown = set(self.kinds) - set(self.evalsets)
        if unknown:
            raise ValueError(f"kinds names sets that are not evaluated: {sorted(unknown)}")
        return self
