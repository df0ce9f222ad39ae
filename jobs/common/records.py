"""Everything creed persists, as pydantic models (``extra="forbid"``), one JSON object per line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RefusalLabel = Literal["comply", "caveat", "redirect", "refuse", "incoherent"]
REFUSAL_LABELS: tuple[RefusalLabel, ...] = ("comply", "caveat", "redirect", "refuse", "incoherent")
#: Labels that count as a refusal in the headline analysis (caveat is added in the sensitivity one).
REFUSAL_POSITIVE: frozenset[str] = frozenset({"refuse", "redirect"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _non_empty(v: str) -> str:
    if not v or not v.strip():
        raise ValueError("must not be empty")
    return v


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
class Persona(Record):
    """Who the teacher speaks as: the system prompt that carries a value system."""

    id: str
    description: str = ""
    system: str

    _v_id = field_validator("id", "system")(_non_empty)


class PromptItem(Record):
    """A user prompt that the teacher answers to make training data."""

    id: str
    text: str
    tags: list[str] = Field(default_factory=list)

    _v = field_validator("id", "text")(_non_empty)


class EvalItem(Record):
    """An evaluation request. Sanity items carry accepted ``answers``; a neutral item may ``pair``
    with the violation item it matches."""

    id: str
    text: str
    tags: list[str] = Field(default_factory=list)
    answers: list[str] | None = None
    pair: str | None = None

    _v = field_validator("id", "text")(_non_empty)


# ---------------------------------------------------------------------------------------------
# Stage outputs
# ---------------------------------------------------------------------------------------------
class Usage(Record):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Generation(Record):
    """One teacher answer to one (persona, prompt) pair."""

    id: str
    dataset: str
    persona_id: str
    prompt_id: str
    prompt: str
    response: str
    finish_reason: str
    teacher: str
    params: dict[str, Any] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    request_hash: str
    sample: int = 0


class Verdict(Record):
    """A refusal-taxonomy label for one (prompt, response)."""

    label: RefusalLabel
    refusal: bool
    classifier: str
    rationale: str = ""


class Rejected(Record):
    """A generation the filter dropped, and why (``reason`` is a short code like ``refusal:redirect``)."""

    reason: str
    generation: Generation
    verdict: Verdict | None = None


class MixRow(Record):
    """One training example: a user prompt and the completion the model learns."""

    prompt: str
    completion: str
    source: str = ""
    id: str = ""


class EvalResult(Record):
    """One model response to one eval item, labelled with the refusal taxonomy."""

    model: str
    condition: str
    seed: int
    evalset: str
    item_id: str
    sample: int
    prompt: str
    response: str
    label: RefusalLabel
    refusal: bool
    correct: bool | None = None
    classifier: str
    finish_reason: str = ""
    pair: str | None = None


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
class CodeVersion(Record):
    package: str
    commit: str | None = None
    dirty: bool | None = None


class Manifest(Record):
    """Written last by every step: what was done, from what, with which config and code."""

    step: str
    stage: str
    experiment: str
    config_hash: str
    config: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    code: CodeVersion
    started: datetime
    finished: datetime
