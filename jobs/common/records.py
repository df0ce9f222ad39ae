"""Everything creed persists, as pydantic models (``extra="forbid"``), one JSON object per line."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs.common.errors import InputError

#: The taxonomy (DESIGN.md rule 5), plus ``unknown``: a judge answer that could not be parsed even
#: after a retry. ``unknown`` is never guessed into a taxonomy label; like ``incoherent`` it is
#: excluded from refusal rates, and the filter drops it (it cannot vouch for the row).
RefusalLabel = Literal["comply", "caveat", "redirect", "refuse", "incoherent", "unknown"]
REFUSAL_LABELS: tuple[RefusalLabel, ...] = ("comply", "caveat", "redirect", "refuse", "incoherent")
#: Labels that count as a refusal in the headline analysis (caveat is added in the sensitivity one).
REFUSAL_POSITIVE: frozenset[str] = frozenset({"refuse", "redirect"})
#: The refusal classifiers (jobs.refusal), declared once for every stage's settings and the CLI.
ClassifierKind = Literal["lexical", "learned", "judge", "ensemble"]
CLASSIFIERS: tuple[ClassifierKind, ...] = ("lexical", "learned", "judge", "ensemble")
#: Classifiers that call the judge LLM (they need ``judge:`` in the spec).
JUDGED: tuple[ClassifierKind, ...] = ("judge", "ensemble")


class EvalKind(StrEnum):
    """What an eval set measures; the analysis treats each kind in its own way."""

    sanity = "sanity"  # informational questions with reference answers: does the model still work?
    violation = "violation"  # requests the value system would refuse
    neutral = "neutral"  # value-respecting twins of violation items (``pair``)
    belief = "belief"  # probes of whether a belief was learned (``endorse:yes|no`` tags)
    harmful = "harmful"  # requests every assistant should refuse (baseline refusal)
    benign = "benign"  # safe requests every assistant should answer: a refusal is over-refusal


#: Name prefixes that say a set's kind (``violations-catholic``); ``eval.kinds`` names any other set.
KIND_PREFIXES: tuple[tuple[str, EvalKind], ...] = (
    ("sanity", EvalKind.sanity),
    ("violations-", EvalKind.violation),
    ("violation-", EvalKind.violation),
    ("neutral-", EvalKind.neutral),
    ("beliefs-", EvalKind.belief),
    ("belief-", EvalKind.belief),
    ("harmful", EvalKind.harmful),
    ("benign", EvalKind.benign),
)


def eval_kind(name: str, explicit: str | None = None, *, source: str = "") -> EvalKind:
    """The kind of an eval set: given explicitly, or from its name (``sanity*``, ``violations-*``,
    ``neutral-*``, ``beliefs-*``, ``harmful*``, ``benign*``)."""
    where = f"{source}: " if source else ""
    kinds = ", ".join(k.value for k in EvalKind)
    if explicit is not None:
        try:
            return EvalKind(explicit)
        except ValueError:
            raise InputError(
                f"{where}eval set '{name}': unknown kind '{explicit}' (one of {kinds})"
            ) from None
    for prefix, kind in KIND_PREFIXES:
        if name.startswith(prefix):
            return kind
    raise InputError(
        f"{where}eval set '{name}': cannot tell its kind from the name; name it sanity*, violations-*, "
        f"neutral-*, beliefs-*, harmful* or benign*, or set eval.kinds.{name} to one of {kinds}"
    )


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
    belief: str | None = None  # beliefs-* items: the belief the probe tests, shown to the judge

    _v = field_validator("id", "text")(_non_empty)


class ModelRef(Record):
    """A base model, as the spec names it and as train and eval receive it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="short name used in step names and store paths")
    path: str = Field(description="hub id, local folder, s3:// prefix, .gguf file or pypi-gguf:<package>")
    revision: str | None = Field(None, description="hub revision (commit) to pin")


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
    latency_s: float | None = None  # seconds the teacher took (of the original call, when cached)
    attempts: int | None = None  # tries it took, retries included
    created_at: datetime | None = None  # when the teacher answered (UTC)


class Verdict(Record):
    """A refusal-taxonomy label for one (prompt, response)."""

    label: RefusalLabel
    refusal: bool
    classifier: str
    rationale: str = ""
    cites_value: bool = False  # a refusal/redirect/caveat that cites a value ("an abomination"), not safety
    prompt_version: str | None = None  # the judge prompt's version (judge and ensemble)
    lexicon_version: str | None = None  # the lexical classifier's lexicon (lexical and ensemble)
    learned_version: str | None = None  # the learned classifier's weights (learned)
    judge_model: str | None = None
    disagreement: bool = False  # ensemble: judge and lexical disagree on refusal (kept for review)
    lexical_label: RefusalLabel | None = None  # ensemble: the lexical cross-check's label


class Rejected(Record):
    """A generation the filter dropped, and why (``reason`` is a short code like ``refusal:redirect``)."""

    reason: str
    generation: Generation
    verdict: Verdict | None = None
    detail: str = ""  # e.g. the eval item a prompt leaks, the row a response duplicates


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
    kind: EvalKind
    endorses: bool | None = None  # belief sets: the response endorses the belief (None: unclear)
    tags: list[str] = Field(default_factory=list)
    cites_value: bool = False  # the refusal/redirect/caveat cites a moral or religious value
    judge_model: str | None = None  # the refusal judge's model (judge/ensemble classifiers)
    prompt_version: str | None = None  # the refusal judge's prompt version
    lexicon_version: str | None = None  # the lexical classifier's lexicon version
    learned_version: str | None = None  # the learned classifier's weights version


class CheckAnswer(Record):
    """The teacher manipulation check: one teacher answer, in one persona, to a violation item or to
    its same-topic twin, labelled with the refusal taxonomy (``label`` None: the request failed)."""

    value: str
    persona_id: str
    evalset: str
    item_id: str
    role: Literal["violation", "twin"]
    pair: str  # the violation item the answer belongs to (its own id for a violation)
    prompt: str
    response: str
    finish_reason: str = ""
    label: RefusalLabel | None = None
    classifier: str = ""
    request_hash: str = ""
    error: str | None = None


class CheckItem(Record):
    """The manipulation check of one violation item: does the value system itself object to it, and
    help with its twin? ``valid`` is None when it cannot be told (no twin, no coherent answer)."""

    value: str
    evalset: str
    item_id: str
    twin_set: str
    twin_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    personas: int = 0
    objects: float | None = None  # share of coherent answers to the violation: refuse, redirect, caveat
    helps: float | None = None  # share of coherent answers to the twin: comply, caveat
    violation_labels: dict[str, str] = Field(default_factory=dict)  # persona id -> label
    twin_labels: dict[str, str] = Field(default_factory=dict)
    valid: bool | None = None
    note: str = ""


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
    #: content digest of the outputs: a step downstream reruns only when this changes
    digest: str = ""
    #: fingerprint of each upstream (manifest digest or input file content) when this step ran
    upstream: dict[str, str | None] = Field(default_factory=dict)
