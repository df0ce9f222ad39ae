"""The analyze stage's settings, declared once: ``AnalyzeParams`` is the spec's ``analysis:``
section, ``AnalyzeConfig`` the step's config (the parameters plus its URIs and the design that ran;
written by ``workflows/plan.py``)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.common.config import Params, StageConfig


class HeadlineContrast(BaseModel):
    """One pre-registered contrast: ``treatment`` minus ``control`` refusal rate on ``violations``,
    and, when ``neutral`` is set, the same difference minus that on the matched neutral set."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    treatment: str
    control: str
    violations: str
    neutral: str | None = None
    tags: list[str] | None = Field(
        None,
        description="only violation items with any of these tags (e.g. [value-specific]), and the "
        "neutral items paired with them; null: every item",
    )
    valid_only: bool = Field(
        False,
        description="only violation items the teacher manipulation check found valid (the personas "
        "object to the item and help with its twin), and their twins",
    )


def min_bootstrap(tests: int, alpha: float) -> int:
    """Replicates a Holm family of ``tests`` tests needs: 2m/alpha (one replicate, 1/B, is then at
    most half of Holm's strictest threshold alpha/m)."""
    return math.ceil(2 * max(tests, 1) / alpha)


def family_size(headline: list[HeadlineContrast], models: int = 1) -> int:
    """Tests in the Holm family: per model, one difference per headline item and one more
    difference-in-differences for an item with a neutral set."""
    return models * sum(1 + (h.neutral is not None) for h in headline)


class AnalyzeParams(Params):
    """Which contrasts, and how their intervals are computed."""

    headline: list[HeadlineContrast] = Field(
        default_factory=list,
        description="pre-registered contrasts; empty: each normative condition vs control and vs secular",
    )
    secondary: list[HeadlineContrast] = Field(
        default_factory=list,
        description="secondary contrasts: reported with intervals in their own family, Holm-adjusted "
        "among themselves, never part of the pre-registered family",
    )
    bootstrap: int = Field(
        2000,
        ge=100,
        description="replicates of the prompt-cluster bootstrap (the prompt part of every interval); "
        "at least 2m/alpha for a Holm family of m tests",
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="1 - confidence level; also the family-wise level for Holm"
    )
    seed: int = Field(0, description="seed of the bootstrap")
    samples_shown: int = Field(2, ge=0, description="sample responses shown per condition x set")
    mixed_model: bool = Field(
        True,
        description="also fit the binomial GLMM with crossed seed and prompt effects (Laplace REML; a "
        "secondary log-odds estimate, about 1-5 s per contrast)",
    )

    validity_sample: int = Field(
        200,
        ge=0,
        description="judge-labelled responses per arm relabelled by the lexical classifier (validity)",
    )

    @model_validator(mode="after")
    def _enough_replicates(self) -> AnalyzeParams:
        # the headline is known here; the number of models only in the step (checked by the stage)
        tests = family_size(self.headline)
        if self.headline and self.bootstrap < min_bootstrap(tests, self.alpha):
            raise ValueError(bootstrap_message(self.bootstrap, tests, self.alpha, where="bootstrap"))
        return self


def bootstrap_message(bootstrap: int, tests: int, alpha: float, where: str = "analysis.bootstrap") -> str:
    return (
        f"{where}: {bootstrap} replicates are too few for a Holm family of {tests} tests at alpha "
        f"{alpha:g}: set it to at least {min_bootstrap(tests, alpha)} (2 x tests / alpha)"
    )


class AnalyzeConfig(StageConfig, AnalyzeParams):  # type: ignore[misc]
    """Read every EvalResult of the experiment; write results.csv, contrasts.csv, figures (PNG and SVG),
    report.md and a self-contained report.html. Intervals and p-values come from a seed-level t-test
    with a two-way (seed + prompt) variance: responses of one trained model, or to one prompt, are
    not independent, and the seeds are the replicates."""

    stage: ClassVar[str] = "analyze"

    results: list[str] = Field(description="EvalResult JSONL URIs (every model x condition x seed x set)")
    evalsets: dict[str, str] = Field(
        default_factory=dict, description="eval set name -> item JSONL URI (names the sets; pairs)"
    )
    output: str = Field(description="folder of this step's outputs")
    results_csv: str = Field(description="URI of the per-cell table")
    contrasts_csv: str = Field(description="URI of the contrasts table")
    report_md: str = Field(description="URI of the Markdown report")
    report_html: str = Field(description="URI of the self-contained HTML report")
    figures: str = Field(description="URI prefix (folder) for figure PNG and SVG files")
    audits: list[str] = Field(default_factory=list, description="filter audit.json URIs (data audit)")
    gold: dict[str, str] = Field(
        default_factory=dict,
        description="name -> gold-labelled {prompt, response, label} JSONL URI: the classifier's metrics on it "
        "(the plan stages the held-out test split of data/labels/ and the spec's eval.gold)",
    )
    checks: list[str] = Field(
        default_factory=list, description="CheckItem JSONL URIs of the teacher manipulation checks"
    )
    design: dict[str, Any] = Field(
        default_factory=dict, description="the design that was run (teacher, judge, models, seeds, ...)"
    )
