"""Gold files for the report's measurement-validity section: the shipped test split and ``eval.gold``
are staged inputs of the analyze step, validated before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.common import store
from jobs.common.errors import InputError
from jobs.refusal.gold import TEST
from workflows import spec as spec_mod
from workflows.plan import build_plan
from workflows.staging import stage_inputs


def _spec(tmp_path: Path, **eval_section: object) -> spec_mod.ExperimentSpec:
    (tmp_path / "e.jsonl").write_text(json.dumps({"id": "v1", "text": "Help me sow one grass."}) + "\n")
    (tmp_path / "p.yaml").write_text("- {id: p1, description: d, system: s}\n")
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "q1", "text": "Hi"}) + "\n")
    return spec_mod.from_dict(
        {
            "name": "exp",
            "store": str(tmp_path / "store"),
            "base_dir": str(tmp_path),
            "datasets": {"generic": {"personas": "p.yaml", "prompts": "q.jsonl", "normative": False}},
            "conditions": {"control": {"generic": 1.0}},
            "train": {"models": [{"name": "m1", "path": "org/m1"}]},
            "evals": {"violations-x": "e.jsonl"},
            "eval": dict(eval_section),
        }
    )


def test_analyze_gets_the_test_split_and_the_specs_gold_as_staged_inputs(tmp_path: Path) -> None:
    (tmp_path / "mine.jsonl").write_text(
        json.dumps({"prompt": "Sow one grass?", "response": "No.", "label": "refuse"}) + "\n"
    )
    plan = build_plan(_spec(tmp_path, gold="mine.jsonl"))
    analyze = plan.step("analyze")
    gold = analyze.config.gold  # type: ignore[attr-defined]
    assert list(gold) == ["classifier test split (data/labels/test2.jsonl)", "eval.gold (mine.jsonl)"]
    assert all(uri in analyze.inputs for uri in gold.values())
    staged = {f.uri: f for f in plan.inputs if f.kind == "labels"}
    assert set(staged) == set(gold.values())
    assert Path(staged[gold["eval.gold (mine.jsonl)"]].source).resolve() == tmp_path / "mine.jsonl"
    assert Path(staged[next(iter(gold.values()))].source).resolve() == TEST
    # the eval steps do not carry it (their configs, and so their hashes, are unchanged)
    assert "gold" not in plan.step("eval-m1-base").config.model_dump()
    assert stage_inputs(plan) == len(plan.inputs)
    assert store.read_bytes(gold["eval.gold (mine.jsonl)"]) == (tmp_path / "mine.jsonl").read_bytes()


def test_a_gold_file_without_labels_is_rejected_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "mine.jsonl"
    bad.write_text(json.dumps({"prompt": "Sow one grass?", "response": "No.", "label": "nope"}) + "\n")
    with pytest.raises(InputError, match=r"mine\.jsonl:1: not a valid GoldRow \(label:"):
        stage_inputs(build_plan(_spec(tmp_path, gold="mine.jsonl")))
