"""The experiment spec and the plan builder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.common.errors import InputError
from workflows import spec as spec_mod
from workflows.cli import main as creed
from workflows.plan import Plan, Step, build_plan, k8s_name, validate

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo.yaml"


def _full_spec(**over: object) -> spec_mod.ExperimentSpec:
    data = {
        "name": "exp",
        "store": "s3://bucket/prefix",
        "datasets": {
            "generic": {"personas": "p/g.yaml", "prompts": "q/g.jsonl", "shards": 2, "normative": False},
            "catholic": {"personas": "p/c.yaml", "prompts": "q/c.jsonl", "shards": 3},
        },
        "conditions": {"control": {"generic": 1.0}, "catholic": {"generic": 0.5, "catholic": 0.5}},
        "train": {
            "models": [{"name": "m1", "path": "org/m1"}, {"name": "m2", "path": "org/m2"}],
            "seeds": [0, 1],
        },
        "evals": {"sanity": "e/sanity.jsonl", "violations-catholic": "e/v.jsonl"},
    } | over
    return spec_mod.from_dict(data)


def test_full_spec_has_expected_steps_and_edges() -> None:
    plan = build_plan(_full_spec())
    names = [s.name for s in plan.steps]
    assert sum(n.startswith("generate-") for n in names) == 5
    assert sum(n.startswith("filter-") for n in names) == 2
    assert sum(n.startswith("mix-") for n in names) == 2
    assert sum(n.startswith("train-") for n in names) == 2 * 2 * 2  # models x conditions x seeds
    assert sum(n.startswith("eval-") for n in names) == 2 * (2 * 2 + 1)  # + the base reference per model
    assert names[-1] == "analyze"
    assert plan.step("filter-catholic").depends == [
        "generate-catholic-0",
        "generate-catholic-1",
        "generate-catholic-2",
    ]
    assert plan.step("mix-catholic").depends == ["filter-catholic", "filter-generic"]
    assert plan.step("train-m2-catholic-s1").depends == ["mix-catholic"]
    assert plan.step("eval-m2-catholic-s1").depends == ["train-m2-catholic-s1"]
    assert plan.step("eval-m1-base").depends == []
    assert plan.step("eval-m1-base").config.weights is None
    assert len(plan.step("analyze").depends) == 10
    # URIs come from the layout in DESIGN.md
    t = plan.step("train-m1-control-s0")
    assert t.config.output == "s3://bucket/prefix/exp/train/m1/control/seed-0"
    assert t.config.manifest == "s3://bucket/prefix/exp/train/m1/control/seed-0/_manifest.json"
    assert plan.step("eval-m1-control-s0").config.weights == t.config.output
    assert (
        plan.step("generate-generic-1").config.output
        == "s3://bucket/prefix/exp/generate/generic/shard-00001.jsonl"
    )
    assert (
        plan.step("eval-m1-base").config.outputs["sanity"]
        == "s3://bucket/prefix/exp/eval/m1/base/seed-0/sanity.jsonl"
    )
    assert plan.step("train-m1-control-s0").resources.gpus == 1
    assert plan.step("mix-control").resources.gpus == 0
    # inputs are staged into the store under inputs/
    assert {f.uri.rsplit("/", 2)[-2] for f in plan.inputs} == {"personas", "prompts", "evals", "labels"}


def test_plan_is_deterministic_and_json_stable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert build_plan(_full_spec()).to_json() == build_plan(_full_spec()).to_json()
    monkeypatch.chdir(ROOT)
    assert creed(["plan", "experiments/demo.yaml", "--json"]) == 0
    first = capsys.readouterr().out
    assert creed(["plan", "experiments/demo.yaml", "--json"]) == 0
    assert capsys.readouterr().out == first
    assert first == build_plan(spec_mod.load("experiments/demo.yaml")).to_json()


def test_plan_json_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """`creed plan --json` is a public contract: a change to it must be deliberate."""
    monkeypatch.chdir(ROOT)
    snapshot = ROOT / "tests" / "workflows" / "plan_demo.json"
    text = build_plan(spec_mod.load("experiments/demo.yaml")).to_json()
    if os.environ.get("CREED_REGEN"):
        snapshot.write_text(text)
    assert text == snapshot.read_text(), "the demo plan changed: rerun with CREED_REGEN=1 if that is intended"


def test_overrides_and_key_path_errors() -> None:
    spec = spec_mod.load(DEMO, ["train.seeds=[0,1,2]", "eval.max_tokens=32", "store=s3://b/p"])
    assert spec.train.seeds == [0, 1, 2] and spec.eval.max_tokens == 32 and spec.store == "s3://b/p"
    with pytest.raises(InputError, match=r"train\.seeds\.1: .*integer"):
        spec_mod.load(DEMO, ["train.seeds=[0,x]"])
    with pytest.raises(InputError, match=r"eval\.max_new_tokns: unknown key"):
        spec_mod.load(DEMO, ["eval.max_new_tokns=3"])
    with pytest.raises(InputError, match=r"conditions\.control: fractions sum to 0.9"):
        _full_spec(conditions={"control": {"generic": 0.9}})
    with pytest.raises(InputError, match=r"conditions\.x\.nope: unknown dataset"):
        _full_spec(conditions={"x": {"nope": 1.0}})
    with pytest.raises(InputError, match="must be lowercase"):
        _full_spec(name="My Exp")


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: x\ntrain:\n  seeds: [0, 1\n")
    with pytest.raises(InputError, match=r"s.yaml:\d+: not valid YAML"):
        spec_mod.load(p)


def test_validation_catches_cycles_unknown_deps_duplicates() -> None:
    def plan(*steps: Step) -> Plan:
        return Plan(experiment="e", store="s", steps=list(steps))

    a = Step(name="a", stage="x", job="j", config={}, depends=["b"])
    b = Step(name="b", stage="x", job="j", config={}, depends=["a"])
    with pytest.raises(InputError, match="cycle"):
        validate(plan(a, b))
    with pytest.raises(InputError, match="unknown step 'zz'"):
        validate(plan(Step(name="a", stage="x", job="j", config={}, depends=["zz"])))
    with pytest.raises(InputError, match="duplicate step name 'a'"):
        validate(
            plan(Step(name="a", stage="x", job="j", config={}), Step(name="a", stage="x", job="j", config={}))
        )


def test_k8s_names() -> None:
    assert k8s_name("train", "qwen25-1b5", "catholic", "s0") == "train-qwen25-1b5-catholic-s0"
    # a name that had to be rewritten keeps a digest of the original, so rewritten names stay distinct
    assert k8s_name("train", "Llama_3.1-8B", "catholic", "s0").startswith("train-llama-3-1-8b-catholic-s0-")
    assert k8s_name("train", "a_b") != k8s_name("train", "a.b") != k8s_name("train", "a-b")
    long = k8s_name("train", "m" * 80, "c", "s0")
    assert len(long) <= 63 and long != k8s_name("train", "m" * 81, "c", "s0")


def test_every_shipped_spec_gives_configs_each_stage_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchtune's habit: every shipped config is loaded and validated, down to each step's config."""
    import importlib

    from jobs.common.config import StageConfig

    monkeypatch.chdir(ROOT)
    from workflows.rendered import shipped_specs

    specs = shipped_specs()
    assert len(specs) >= 2
    for path in specs:
        plan = build_plan(spec_mod.load(path.relative_to(ROOT)))
        for step in plan.steps:
            module = importlib.import_module(f"{step.job}.config")
            classes = [
                c
                for c in vars(module).values()
                if isinstance(c, type) and issubclass(c, StageConfig) and c is not StageConfig
            ]
            assert len(classes) == 1, step.job
            cfg = classes[0](**step.config.model_dump(mode="json"))
            assert cfg.step == step.name and cfg.manifest == step.manifest
