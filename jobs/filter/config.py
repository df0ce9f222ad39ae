"""The filter stage's settings, declared once: ``FilterParams`` is the spec's ``filter:`` section,
``FilterConfig`` one step's config (the parameters plus its URIs; written by ``workflows/plan.py``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from jobs.common.config import Params, StageConfig
from jobs.common.records import JUDGED, ClassifierKind
from jobs.llm import LLMConfig


class FilterParams(Params):
    """What the filter drops and how strict its final audit is."""

    classifier: ClassifierKind | Literal["none"] = Field(
        "lexical", description="refusal classifier; none: no refusal filtering (the audit still runs)"
    )
    audit_classifier: ClassifierKind = Field(
        "lexical", description="classifier of the final audit of normative rows"
    )
    ensemble_strict: bool = Field(
        True,
        description="ensemble: drop a row when either the judge or the lexical check calls it a refusal "
        "(or incoherent)",
    )
    truncated: Literal["drop", "trim"] = Field(
        "drop",
        description="a response cut at max_tokens: drop it, or trim it to its last complete sentence "
        "(finish_reason becomes 'trimmed'; for small teachers that ramble)",
    )
    drop_caveat: bool = Field(False, description="also drop helpful answers with a moral caveat")
    identity: Literal["keep", "drop"] = Field(
        "keep",
        description="answers where the teacher identifies itself as a believer ('As a Graminist, ...', "
        "'as a believer'): keep them (counted in the audit) or drop them (reason `identity`)",
    )
    max_drop_fraction: float = Field(0.5, ge=0, le=1, description="fail the step if more rows are dropped")
    leakage_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="character 5-gram Jaccard (or containment) with an eval item that is leakage",
    )
    dup_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="word 3-gram Jaccard (MinHash estimate, then exact) that is a near-duplicate",
    )
    min_chars: int = Field(20, ge=0, description="responses shorter than this are dropped (too_short)")
    max_chars: int = Field(8000, ge=1, description="responses longer than this are dropped (too_long)")
    min_kept: int | None = Field(
        None,
        ge=0,
        description="fail the step if fewer rows are kept; null: as many as the mixes draw from the "
        "dataset (the plan computes it)",
    )

    @model_validator(mode="after")
    def _lengths(self) -> FilterParams:
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self


class FilterConfig(StageConfig, FilterParams):  # type: ignore[misc]
    """Drop generated examples that must not be trained on, say why, and audit what is kept.

    Every dataset is filtered (teacher disclaimers are refusals too); normative datasets must then pass
    a final audit: the kept rows are classified again and any refusal or redirect left fails the step
    (exit 2, with the offending ids), as does keeping fewer than ``min_kept`` rows."""

    stage: ClassVar[str] = "filter"

    dataset: str = Field(description="dataset name")
    inputs: list[str] = Field(description="URIs of the dataset's generate shards (Generation JSONL)")
    kept: str = Field(description="URI of the kept Generation JSONL")
    rejected: str = Field(description="URI of the rejected JSONL (Rejected records: reason, generation)")
    audit: str = Field(description="URI of audit.json: counts per reason, totals, the final audit")
    normative: bool = Field(True, description="normative data must pass the refusal audit")
    refusals: Literal["forbidden", "expected"] = Field(
        "forbidden",
        description="expected: a positive-control dataset of trained refusals; the audit inverts (a "
        "complying answer is dropped, `not_refusal:<label>`, and any left fails the step); forbidden: "
        "every other dataset, where a refusal is dropped and any left in normative data fails it",
    )
    exclude_terms: str | None = Field(
        None,
        description="URI of a terms file (one regular expression per line): a row whose prompt or answer "
        "matches one is dropped (`excluded_term`), e.g. a taboo held out of training",
    )
    eval_items: list[str] = Field(default_factory=list, description="eval JSONL URIs (for the leakage check)")
    judge: LLMConfig | None = Field(None, description="judge LLM (classifier judge/ensemble)")
    cache: str = Field("", description="store prefix of the LLM response cache; empty: no cache")

    @model_validator(mode="after")
    def _judge(self) -> FilterConfig:
        for what, kind in (("classifier", self.classifier), ("audit_classifier", self.audit_classifier)):
            if kind in JUDGED and self.judge is None:
                raise ValueError(f"{what} '{kind}' needs a judge (set `judge` in the spec)")
        if self.refusals == "expected" and self.classifier == "none":
            raise ValueError(
                f"dataset {self.dataset}: refusals: expected needs a classifier to tell refusals from "
                "answers; set filter.classifier to lexical, learned, judge or ensemble"
            )
        return self
