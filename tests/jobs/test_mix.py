"""The mix stage: exact totals and proportions, deterministic, spread over prompts, shared rows for a
shared dataset, disjoint validation rows, the shared prompt format, and a clear error on too little data."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.prompt_format import format_completion, format_prompt
from jobs.common.records import Generation, MixRow
from jobs.common.stage import main
from jobs.mix import core
from jobs.mix.config import MixConfig
from jobs.mix.run import run


def _kept(root: str, dataset: str, prompts: int, per_prompt: int) -> str:
    rows = [
        Generation(
            id=f"{dataset}-{p:03d}-{k}",
            dataset=dataset,
            persona_id=f"persona-{k}",
            prompt_id=f"{dataset}-p{p:03d}",
            prompt=f"{dataset} question number {p}?",
            response=f"A {dataset} answer {k} to question {p}.",
            finish_reason="stop",
            teacher="fake",
            request_hash=f"{dataset}{p}{k}",
        )
        for p in range(prompts)
        for k in range(per_prompt)
    ]
    uri = store.join(root, "filter", dataset, "kept.jsonl")
    store.write_jsonl(uri, rows)
    return uri


def _cfg(
    root: str, condition: str, fractions: dict[str, float], uris: dict[str, str], **over: Any
) -> dict[str, Any]:
    mdir = store.join(root, "mix", condition)
    return {
        "experiment": "exp",
        "step": f"mix-{condition}",
        "manifest": store.join(mdir, "_manifest.json"),
        "condition": condition,
        "sources": {ds: {"uri": uris[ds], "fraction": f} for ds, f in fractions.items()},
        "examples": 40,
        "val_fraction": 0.1,
        "seed": 0,
        "train": store.join(mdir, "train.jsonl"),
        "val": store.join(mdir, "val.jsonl"),
    } | over


def _rows(uri: str) -> list[MixRow]:
    return [MixRow.model_validate(r) for r in store.read_jsonl(uri)]


@pytest.mark.parametrize(
    ("total", "fractions", "expected"),
    [
        (24, {"generic": 0.5, "catholic": 0.5}, {"generic": 12, "catholic": 12}),
        (25, {"generic": 0.5, "catholic": 0.5}, {"generic": 12, "catholic": 13}),
        (10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, {"a": 4, "b": 3, "c": 3}),
        (7, {"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 5, "b": 1, "c": 1}),
        (1, {"generic": 1.0}, {"generic": 1}),
    ],
)
def test_apportion_is_exact(total: int, fractions: dict[str, float], expected: dict[str, int]) -> None:
    got = core.apportion(total, fractions)
    assert got == expected and sum(got.values()) == total


def test_conditions_have_equal_totals_exact_proportions_and_share_generic_rows(store_root: str) -> None:
    uris = {"generic": _kept(store_root, "generic", 20, 3), "catholic": _kept(store_root, "catholic", 10, 4)}
    control = MixConfig(**_cfg(store_root, "control", {"generic": 1.0}, uris))
    catholic = MixConfig(**_cfg(store_root, "catholic", {"generic": 0.5, "catholic": 0.5}, uris))
    r_control, r_catholic = run(control), run(catholic)
    train_c, val_c = _rows(control.train), _rows(control.val)
    train_k, val_k = _rows(catholic.train), _rows(catholic.val)
    assert len(train_c) == len(train_k) == 40 and len(val_c) == len(val_k) == 4
    assert Counter(r.source for r in train_k) == {"generic": 20, "catholic": 20}
    assert Counter(r.source for r in val_k) == {"generic": 2, "catholic": 2}
    for train, val in ((train_c, val_c), (train_k, val_k)):
        assert not {r.id for r in train} & {r.id for r in val}  # disjoint
        assert len({r.id for r in train}) == len(train)  # without replacement
    # the arms share the generic rows they have in common (they differ only in the normative half)
    assert {r.id for r in train_k if r.source == "generic"} <= {r.id for r in train_c}
    # spread over prompts: 20 catholic rows from 10 prompts -> exactly 2 per prompt
    per_prompt = Counter(r.id.rsplit("-", 1)[0] for r in train_k if r.source == "catholic")
    assert set(per_prompt.values()) == {2} and len(per_prompt) == 10
    assert max(Counter(r.id.rsplit("-", 1)[0] for r in train_c).values()) == math.ceil(40 / 20)
    # every row in the one shared prompt format, from its generation
    gens = {g["id"]: g for uri in uris.values() for g in store.read_jsonl(uri)}
    for r in train_k + val_k:
        g = gens[r.id]
        assert (r.prompt, r.completion) == (format_prompt(g["prompt"]), format_completion(g["response"]))
    assert train_k[0].prompt.startswith("User: ") and train_k[0].prompt.endswith("\n\nAssistant:")
    comp = r_catholic.extra["composition"]
    assert comp["catholic"]["train"] == 20 and comp["catholic"]["max_per_prompt"] == 2
    assert comp["generic"]["fraction"] == 0.5 and r_control.counts == {
        "train": 40,
        "val": 4,
        "train.generic": 40,
    }


def test_mix_is_deterministic_and_the_seed_matters(tmp_path: Path) -> None:
    root = str(tmp_path)
    uris = {"generic": _kept(root, "generic", 20, 3)}
    cfg = MixConfig(**_cfg(root, "control", {"generic": 1.0}, uris))
    run(cfg)
    first = Path(cfg.train).read_bytes()
    run(cfg)
    assert Path(cfg.train).read_bytes() == first
    other = MixConfig(**_cfg(root, "control", {"generic": 1.0}, uris, seed=1))
    run(other)
    assert Path(other.train).read_bytes() != first


def test_too_little_data_is_a_clear_error(tmp_path: Path) -> None:
    root = str(tmp_path)
    uris = {"generic": _kept(root, "generic", 20, 3), "catholic": _kept(root, "catholic", 3, 2)}
    cfg = _cfg(root, "catholic", {"generic": 0.5, "catholic": 0.5}, uris)
    with pytest.raises(
        InputError, match=r"dataset 'catholic' has 6 kept rows; the mix needs 22 \(20 train \+ 2 val\)"
    ):
        run(MixConfig(**cfg))
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(cfg))
    assert main(MixConfig, run, ["--config", str(path)]) == 2
    assert not store.exists(cfg["manifest"]) and not store.exists(cfg["train"])


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"fractions sum to 0\.9"):
        MixConfig(**_cfg("/x", "c", {"a": 0.5, "b": 0.4}, {"a": "/a", "b": "/b"}))


def test_plan_mix_configs_are_accepted() -> None:
    from workflows import spec as spec_mod
    from workflows.plan import build_plan

    root = Path(__file__).resolve().parents[2]
    spec = spec_mod.load(str(root / "experiments" / "demo.yaml"))
    plan = build_plan(spec)
    cfgs = {s.name: MixConfig(**s.config.model_dump()) for s in plan.steps if s.stage == "mix"}
    assert set(cfgs) == {f"mix-{c}" for c in spec.conditions} and len(cfgs) == 6
    assert {c.examples for c in cfgs.values()} == {spec.train.examples}  # the same budget in every arm
