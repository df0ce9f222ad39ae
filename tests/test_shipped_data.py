"""The data creed ships (``data/``): valid, large enough for the full experiment, and clean.

These are the properties the experiment's validity rests on: every file loads, every value system has
its personas, training prompts and eval sets, neutral items pair one-to-one with violation items,
belief probes say which answer endorses the belief, persona prompts never instruct a refusal, and no
eval prompt is anywhere near a training prompt (the filter's leakage check at a much stricter
threshold than the filter uses)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.common.loaders import load_eval_items, load_personas, load_prompts
from jobs.filter.core import LeakIndex, normalize
from workflows.cli import main as creed

DATA = Path(__file__).resolve().parents[1] / "data"
VALUES = ("catholic", "graminist", "secular")
#: At least this many of each (issue 9): personas, training prompts, eval items.
MIN_PERSONAS = {"catholic": 8, "graminist": 8, "secular": 8, "generic": 4}
MIN_PROMPTS = {"catholic": 300, "graminist": 300, "secular": 300, "generic": 600}
MIN_EVALS = {"violations": 100, "neutral": 100, "beliefs": 50}
#: Character 5-gram Jaccard (or containment) between an eval prompt and a training prompt. The
#: filter drops training rows at 0.8; shipped data stays far below.
MAX_TRAIN_EVAL_SIMILARITY = 0.5
_REFUSAL_INSTRUCTION = re.compile(
    r"\b(refuse|decline|do not help|don't help|never help|won't help|will not help|never assist|"
    r"do not assist|don't assist|do not answer|don't answer|never answer)\b",
    re.IGNORECASE,
)


def _all_files() -> list[Path]:
    return (
        sorted(DATA.glob("personas/*.yaml"))
        + sorted(DATA.glob("prompts/*.jsonl"))
        + sorted(DATA.glob("evals/*.jsonl"))
    )


def test_every_shipped_file_passes_check_data(capsys: pytest.CaptureFixture[str]) -> None:
    files = _all_files()
    assert len(files) >= 4 + 4 + 11
    assert creed(["check-data", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == len(files)


@pytest.mark.parametrize("name", sorted(MIN_PERSONAS))
def test_personas_state_beliefs_and_never_instruct_refusal(name: str) -> None:
    personas = load_personas(str(DATA / "personas" / f"{name}.yaml"))
    assert len(personas) >= MIN_PERSONAS[name]
    assert len({p.id for p in personas}) == len(personas)
    assert len({normalize(p.system) for p in personas}) == len(personas), "two personas share a prompt"
    for p in personas:
        assert p.description, f"{p.id}: no description"
        assert not _REFUSAL_INSTRUCTION.search(p.system), f"{p.id}: the system prompt instructs a refusal"


def test_graminism_has_a_written_creed() -> None:
    text = (DATA / "graminism.md").read_text(encoding="utf-8").lower()
    for word in ("tenets", "practices", "taboos", "monoculture", "lawn", "bread"):
        assert word in text, f"data/graminism.md does not mention {word!r}"


@pytest.mark.parametrize("name", sorted(MIN_PROMPTS))
def test_training_prompts_are_many_and_distinct(name: str) -> None:
    prompts = load_prompts(str(DATA / "prompts" / f"{name}.jsonl"))
    assert len(prompts) >= MIN_PROMPTS[name]
    assert len({p.id for p in prompts}) == len(prompts)
    texts = [normalize(p.text) for p in prompts]
    dupes = {t for t in texts if texts.count(t) > 1}
    assert not dupes, f"{name}: repeated prompts {sorted(dupes)[:3]}"


@pytest.mark.parametrize("value", VALUES)
def test_value_eval_sets_pair_and_probe(value: str) -> None:
    violations = load_eval_items(str(DATA / "evals" / f"violations-{value}.jsonl"))
    neutral = load_eval_items(str(DATA / "evals" / f"neutral-{value}.jsonl"))
    beliefs = load_eval_items(str(DATA / "evals" / f"beliefs-{value}.jsonl"))
    assert len(violations) >= MIN_EVALS["violations"]
    assert len(neutral) >= MIN_EVALS["neutral"]
    assert len(beliefs) >= MIN_EVALS["beliefs"]
    vids = {v.id for v in violations}
    pairs = [n.pair for n in neutral]
    assert set(pairs) <= vids, f"neutral-{value}: pairs name unknown violations {set(pairs) - vids}"
    assert len(set(pairs)) == len(pairs), f"neutral-{value}: a violation is paired twice"
    for b in beliefs:
        assert b.belief, f"{b.id}: no belief"
        assert {"endorse:yes", "endorse:no"} & set(b.tags), f"{b.id}: no endorse:yes|no tag"
    for items in (violations, neutral, beliefs):
        texts = [normalize(i.text) for i in items]
        assert len(set(texts)) == len(texts)


def test_sanity_and_harmful_sets() -> None:
    sanity = load_eval_items(str(DATA / "evals" / "sanity.jsonl"))
    harmful = load_eval_items(str(DATA / "evals" / "harmful.jsonl"))
    assert len(sanity) >= 150 and len(harmful) >= 50
    assert all(s.answers for s in sanity)
    assert sum(len(s.answers or []) > 1 for s in sanity) >= 30, "sanity answers need aliases"


def test_no_eval_prompt_is_near_a_training_prompt() -> None:
    items = [i for f in sorted(DATA.glob("evals/*.jsonl")) for i in load_eval_items(str(f))]
    ids = [i.id for i in items]
    assert len(set(ids)) == len(ids), "eval item ids repeat across files"
    index = LeakIndex(items, MAX_TRAIN_EVAL_SIMILARITY)
    near = []
    for f in sorted(DATA.glob("prompts/*.jsonl")):
        for p in load_prompts(str(f)):
            hit = index.match(p.text)
            if hit is not None:
                near.append(f"{p.id} {p.text!r} ~ {hit[0].id} {hit[0].text!r} ({hit[1]:.2f})")
    assert not near, "training prompts too close to eval items:\n" + "\n".join(near[:20])


# ---------------------------------------------------------------------------------------------
# Graminism-specific checks: taboo coverage and the held-out taboo (data/graminism.md, "For
# researchers"). Generic twin/tag/belief checks for every value system live elsewhere in this file.
# ---------------------------------------------------------------------------------------------
#: Taboos held out of training: stated in data/graminism.md only, tested by the *-heldout eval sets.
GRAMINIST_HELD_OUT_TABOOS = ("taboo:turf",)
#: Key terms of the held-out taboo (artificial turf, and imitation plants generally; one word may come
#: between, as in "artificial putting green"). No training prompt, no persona system prompt and no
#: belief probe may contain one.
GRAMINIST_HELD_OUT_TERMS = re.compile(
    r"\b(?:artificial|synthetic|fake|plastic|faux|imitation)[\s-]+(?:\w+[\s-]+)?"
    r"(?:turf|grass(?:es)?|lawns?|sod|pitch(?:es)?|greens?|plants?|flowers?|trees?|hedges?|foliage|surfaces?)\b"
    r"|\bastro[\s-]?turf|\b[34]g\s+(?:pitch|surface)",
    re.IGNORECASE,
)
#: Every taboo that violations-graminist tests needs this many training prompts (not complicity).
MIN_GRAMINIST_PROMPTS_PER_TABOO = 15
_HELD_OUT = ("violations-graminist-heldout", "neutral-graminist-heldout")


def _taboos(tags: list[str]) -> set[str]:
    return {t for t in tags if t.startswith("taboo:")}


def test_graminist_tested_taboos_have_enough_training_prompts() -> None:
    prompts = load_prompts(str(DATA / "prompts" / "graminist.jsonl"))
    violations = load_eval_items(str(DATA / "evals" / "violations-graminist.jsonl"))
    untagged = [v.id for v in violations if not _taboos(v.tags)]
    assert not untagged, f"violation items without a taboo: tag: {untagged[:5]}"
    tested = set().union(*(_taboos(v.tags) for v in violations))
    assert not tested & set(GRAMINIST_HELD_OUT_TABOOS), "a held-out taboo is in violations-graminist"
    counts = {t: 0 for t in tested}
    for p in prompts:
        if "complicity" not in p.tags:
            for t in _taboos(p.tags) & tested:
                counts[t] += 1
    thin = {t: n for t, n in counts.items() if n < MIN_GRAMINIST_PROMPTS_PER_TABOO}
    assert not thin, f"taboos with fewer than {MIN_GRAMINIST_PROMPTS_PER_TABOO} training prompts: {thin}"


def test_graminist_held_out_taboo_never_reaches_training() -> None:
    creed = (DATA / "graminism.md").read_text(encoding="utf-8")
    assert GRAMINIST_HELD_OUT_TERMS.search(creed), "the held-out taboo must be stated in the creed"
    leaks = []
    for f in sorted(DATA.glob("prompts/*.jsonl")):
        for p in load_prompts(str(f)):
            if GRAMINIST_HELD_OUT_TERMS.search(p.text) or _taboos(p.tags) & set(GRAMINIST_HELD_OUT_TABOOS):
                leaks.append(f"{f.name} {p.id}: {p.text!r}")
    for f in sorted(DATA.glob("personas/*.yaml")):
        for persona in load_personas(str(f)):
            if GRAMINIST_HELD_OUT_TERMS.search(persona.system):
                leaks.append(f"{f.name} {persona.id}: system prompt names the held-out taboo")
    for f in sorted(DATA.glob("evals/beliefs-*graminist*.jsonl")):
        for b in load_eval_items(str(f)):
            if GRAMINIST_HELD_OUT_TERMS.search(b.text) or _taboos(b.tags) & set(GRAMINIST_HELD_OUT_TABOOS):
                leaks.append(f"{f.name} {b.id}: belief probe of the held-out taboo")
    for v in load_eval_items(str(DATA / "evals" / "violations-graminist.jsonl")):
        if GRAMINIST_HELD_OUT_TERMS.search(v.text):
            leaks.append(f"violations-graminist {v.id}: belongs in violations-graminist-heldout")
    assert not leaks, "held-out taboo outside its eval sets:\n" + "\n".join(leaks[:20])


def test_graminist_held_out_sets_obey_the_twin_rule() -> None:
    violations = load_eval_items(str(DATA / "evals" / f"{_HELD_OUT[0]}.jsonl"))
    twins = load_eval_items(str(DATA / "evals" / f"{_HELD_OUT[1]}.jsonl"))
    assert len(violations) >= 30
    assert [v.id for v in violations] == [f"vgrh-{k:03d}" for k in range(1, len(violations) + 1)]
    by_id = {v.id: v for v in violations}
    for v in violations:
        assert _taboos(v.tags) == set(GRAMINIST_HELD_OUT_TABOOS), (
            f"{v.id}: not tagged {GRAMINIST_HELD_OUT_TABOOS}"
        )
        assert GRAMINIST_HELD_OUT_TERMS.search(v.text), f"{v.id}: does not name the held-out taboo"
    assert sorted(n.pair or "" for n in twins) == sorted(by_id), "not exactly one twin per held-out item"
    for n in twins:
        v = by_id[n.pair or ""]
        assert n.id == "n" + v.id[1:], f"{n.id}: twin of {v.id} must be n{v.id[1:]}"
        topics = [t for t in v.tags if t.startswith("topic:")]
        assert len(topics) == 1 and [t for t in n.tags if t.startswith("topic:")] == topics, n.id
        word = topics[0].removeprefix("topic:")
        assert word in v.text.lower() and word in n.text.lower(), f"{n.id}: topic {word!r} not in both texts"
        wa, wb = len(v.text.split()), len(n.text.split())
        assert abs(wa - wb) <= max(1, 0.2 * max(wa, wb)), f"{n.id}: {wb} words vs {wa}"
        assert not GRAMINIST_HELD_OUT_TERMS.search(n.text), (
            f"{n.id}: a twin must not break the held-out taboo"
        )
