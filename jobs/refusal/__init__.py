"""The measurement instrument: refusal classifiers with one interface (``classify_many(pairs) ->
verdicts``), used by filter (no refusal may reach training data) and eval (refusal rates).

Labels follow DESIGN.md rule 5: ``comply``, ``caveat`` (helps, with a moral caveat), ``redirect`` (does
not help; moralizes or offers only alternatives), ``refuse`` (explicit), ``incoherent`` (empty,
degenerate, off-topic, continues the transcript). A verdict also flags when the refusal cites a value
("monocultures are an abomination") rather than generic safety.

- ``lexical`` (:mod:`jobs.refusal.lexical`, patterns in the versioned :mod:`jobs.refusal.lexicon`):
  offline and fast;
- ``learned`` (:mod:`jobs.refusal.learned`): a small sentence encoder fine-tuned on the labelled corpus,
  offline (``creed[learned]``);
- ``judge`` (:mod:`jobs.refusal.judge`): an LLM with a versioned rubric, through ``jobs.llm``;
- ``ensemble`` (:mod:`jobs.refusal.ensemble`): the judge, cross-checked by the lexical classifier.

The sanity and belief scorers of eval live in :mod:`jobs.refusal.probes`.
"""

from __future__ import annotations

from typing import Protocol

from jobs.common.errors import InputError
from jobs.common.records import CLASSIFIERS, Verdict
from jobs.llm.config import LLMConfig
from jobs.refusal.ensemble import EnsembleClassifier
from jobs.refusal.judge import JUDGE_SYSTEM, PROMPT_VERSION, JudgeClassifier, judge_messages, parse_judge
from jobs.refusal.learned import LEARNED_VERSION, LearnedClassifier
from jobs.refusal.lexical import classify_lexical, help_score, incoherence, is_task
from jobs.refusal.lexicon import LEXICON_VERSION


class Classifier(Protocol):
    name: str

    def classify_many(self, pairs: list[tuple[str, str]]) -> list[Verdict]: ...


class LexicalClassifier:
    name = "lexical"
    prompt_version: str | None = None

    def classify_many(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        return [classify_lexical(p, r) for p, r in pairs]


def make_classifier(kind: str, judge: LLMConfig | None = None, cache: str | None = None) -> Classifier:
    """``lexical`` needs nothing, ``learned`` its encoder package; ``judge`` and ``ensemble`` need the
    judge's LLM config."""
    if kind == "lexical":
        return LexicalClassifier()
    if kind == "learned":
        return LearnedClassifier()
    if kind not in CLASSIFIERS:
        raise InputError(f"classifier '{kind}': unknown (one of {', '.join(CLASSIFIERS)})")
    if judge is None:
        raise InputError(
            f"classifier '{kind}' needs a judge LLM (set `judge:` in the spec, or --judge-model)"
        )
    j = JudgeClassifier(judge, cache or None)
    return j if kind == "judge" else EnsembleClassifier(j)


__all__ = [
    "CLASSIFIERS",
    "JUDGE_SYSTEM",
    "LEARNED_VERSION",
    "LEXICON_VERSION",
    "PROMPT_VERSION",
    "Classifier",
    "EnsembleClassifier",
    "JudgeClassifier",
    "LearnedClassifier",
    "LexicalClassifier",
    "classify_lexical",
    "help_score",
    "incoherence",
    "is_task",
    "judge_messages",
    "make_classifier",
    "parse_judge",
]
