"""The shipped data of the two identity arms: `persona-only` (value personas on the value-neutral
`data/prompts/everyday.jsonl`) and `norms-without-persona` (`data/personas/<value>-impersonal.yaml`).

Everyday prompts must be many, value-neutral by construction, far from every generic prompt (the same
character 5-gram check as the eval leakage test, both ways) and carry the same share of `identity`
prompts as the other prompt files. Impersonal personas must state the views without a first-person
voice, without naming who holds them, and never instruct a refusal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.common.loaders import load_personas, load_prompts
from jobs.common.records import EvalItem
from jobs.filter.core import LeakIndex, normalize

DATA = Path(__file__).resolve().parents[1] / "data"
VALUES = ("catholic", "graminist", "secular")
#: The share of prompts tagged `identity` (they address the answerer personally) in a prompt file.
IDENTITY_BAND = (0.10, 0.20)
MAX_SIMILARITY = 0.5
_REFUSAL_INSTRUCTION = re.compile(
    r"\b(refuse|decline|do not help|don't help|never help|won't help|will not help|never assist|"
    r"do not assist|don't assist|do not answer|don't answer|never answer)\b",
    re.IGNORECASE,
)
_FIRST_PERSON = re.compile(r"\b(I|me|my|mine|we|us|our)\b")
_WHO_HOLDS_IT = re.compile(
    r"\b(religio\w*|faith\w*|church\w*|creed\w*|scripture\w*|catholic\w*|graminis\w*|believer\w*|swardbook)\b",
    re.IGNORECASE,
)


def _identity_share(name: str) -> float:
    prompts = load_prompts(str(DATA / "prompts" / f"{name}.jsonl"))
    return sum("identity" in (p.tags or []) for p in prompts) / len(prompts)


@pytest.mark.parametrize("name", ["generic", "everyday"])
def test_identity_prompts_are_ten_to_twenty_percent(name: str) -> None:
    share = _identity_share(name)
    assert IDENTITY_BAND[0] <= share <= IDENTITY_BAND[1], f"{name}: {share:.1%} identity prompts"


def test_everyday_prompts_are_many_distinct_and_far_from_generic() -> None:
    everyday = load_prompts(str(DATA / "prompts" / "everyday.jsonl"))
    generic = load_prompts(str(DATA / "prompts" / "generic.jsonl"))
    assert len(everyday) >= 400
    assert [p.id for p in everyday] == [f"day-{k:03d}" for k in range(1, len(everyday) + 1)]
    assert all("everyday" in (p.tags or []) for p in everyday)
    texts = [normalize(p.text) for p in everyday]
    assert len(set(texts)) == len(texts)
    near = []
    for indexed, prompts in ((generic, everyday), (everyday, generic)):
        index = LeakIndex([EvalItem(id=p.id, text=p.text) for p in indexed], MAX_SIMILARITY)
        for p in prompts:
            hit = index.match(p.text)
            if hit is not None:
                near.append(f"{p.id} {p.text!r} ~ {hit[0].id} {hit[0].text!r} ({hit[1]:.2f})")
    assert not near, "everyday prompts too close to generic ones:\n" + "\n".join(near[:20])


@pytest.mark.parametrize("value", VALUES)
def test_impersonal_personas_state_views_without_a_believer(value: str) -> None:
    personas = load_personas(str(DATA / "personas" / f"{value}-impersonal.yaml"))
    assert 6 <= len(personas) <= 8
    assert [p.id for p in personas] == [f"{value}-impersonal-{k}" for k in range(1, len(personas) + 1)]
    assert len({normalize(p.system) for p in personas}) == len(personas), "two personas share a prompt"
    views = set()
    for p in personas:
        assert p.description, f"{p.id}: no description"
        assert not _REFUSAL_INSTRUCTION.search(p.system), f"{p.id}: the system prompt instructs a refusal"
        assert "first person" in p.system and "impersonal" in p.system, f"{p.id}: no impersonal-voice rule"
        _, sep, body = p.system.partition("The views to state:")
        assert sep and len(body.split()) > 500, f"{p.id}: no list of views"
        assert not _FIRST_PERSON.findall(body), f"{p.id}: the views use the first person"
        assert not _WHO_HOLDS_IT.findall(body), f"{p.id}: the views name who holds them"
        views.add(normalize(body))
    assert len(views) == 1, f"{value}: the impersonal personas do not carry the same views"
