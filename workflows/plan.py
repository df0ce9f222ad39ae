"""The plan builder: the *only* place that wires stages together and computes store URIs.

``build_plan(spec)`` is pure and deterministic: the same spec gives the same plan, byte for byte in
``creed plan --json``. Both backends (local and Argo) run exactly these steps with these configs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.common import store
from jobs.common.errors import InputError
from workflows.spec import ExperimentSpec, ModelSpec, Resources

STAGES = ("generate", "filter", "mix", "train", "eval", "analyze")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class InputFile(BaseModel):
    """A user file that is copied into the store before the first step runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    source: str
    uri: str


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    stage: str
    job: str = Field(description="python module run as `python -m <job> --config FILE`")
    config: dict[str, Any]
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    depends: list[str] = Field(default_factory=list)
    log: str = Field("", description="URI the step's log is copied to")
    config_uri: str = Field("", description="URI the step's config file is written to")

    @property
    def manifest(self) -> str:
        return str(self.config.get("manifest", ""))

    @property
    def gpu(self) -> bool:
        return self.resources.gpus > 0


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    experiment: str
    store: str
    inputs: list[InputFile] = Field(default_factory=list)
    steps: list[Step]

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------
# Names and URIs
# ---------------------------------------------------------------------------------------------
def k8s_name(*parts: str | int) -> str:
    """A valid Kubernetes/Argo name (RFC 1123 label, ≤ 63 chars) from parts, stable and unique."""
    raw = "-".join(str(p) for p in parts)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) > 63 or name != raw.lower():
        digest = hashlib.sha1(raw.encode()).hexdigest()[:6]
        name = f"{name[: 63 - 7].rstrip('-')}-{digest}" if len(name) > 63 else name
    return name


class Layout:
    """Every store URI of an experiment (DESIGN.md "Store layout")."""

    def __init__(self, store_uri: str, experiment: str) -> None:
        self.root = store.join(store_uri, experiment)

    def input(self, kind: str, filename: str) -> str:
        return store.join(self.root, "inputs", kind, filename)

    def generate_shard(self, dataset: str, shard: int) -> str:
        return store.join(self.root, "generate", dataset, f"shard-{shard:05d}.jsonl")

    def generate_manifest(self, dataset: str, shard: int) -> str:
        return store.join(self.root, "generate", dataset, f"_manifest-shard-{shard:05d}.json")

    def generate_errors(self, dataset: str, shard: int) -> str:
        return store.join(self.root, "generate", dataset, f"errors-shard-{shard:05d}.jsonl")

    def filter_dir(self, dataset: str) -> str:
        return store.join(self.root, "filter", dataset)

    def mix_dir(self, condition: str) -> str:
        return store.join(self.root, "mix", condition)

    def train_dir(self, model: str, condition: str, seed: int) -> str:
        return store.join(self.root, "train", model, condition, f"seed-{seed}")

    def eval_dir(self, model: str, condition: str, seed: int) -> str:
        return store.join(self.root, "eval", model, condition, f"seed-{seed}")

    def analyze_dir(self) -> str:
        return store.join(self.root, "analyze")

    def llm_cache(self) -> str:
        return store.join(self.root, "cache", "llm")

    def log(self, step: str) -> str:
        return store.join(self.root, "logs", f"{step}.log")

    def config(self, step: str) -> str:
        return store.join(self.root, "configs", f"{step}.json")

    @staticmethod
    def manifest_in(folder: str) -> str:
        return store.join(folder, "_manifest.json")

    @staticmethod
    def file_in(folder: str, name: str) -> str:
        return store.join(folder, name)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def source_of(spec: ExperimentSpec, path: str) -> str:
    """Where an input file named in the spec is read from: a URI as is, a relative path against the
    spec's folder."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(PurePosixPath(Path(spec.base_dir).as_posix()) / path)


def _input(
    spec: ExperimentSpec, layout: Layout, kind: str, path: str, seen: dict[str, InputFile]
) -> InputFile:
    if "://" in path:
        return InputFile(kind=kind, source=path, uri=path)
    source = source_of(spec, path)
    name = PurePosixPath(path).name
    f = InputFile(kind=kind, source=source, uri=layout.input(kind, name))
    prev = seen.get(f.uri)
    if prev is not None and prev.source != f.source:
        raise InputError(
            f"{prev.source} and {f.source}: two {kind} files share the name '{name}'; rename one"
        )
    seen[f.uri] = f
    return f


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
def _common(spec: ExperimentSpec, name: str, manifest: str, layout: Layout) -> dict[str, Any]:
    return {"experiment": spec.name, "step": name, "manifest": manifest}


def _model_dump(m: ModelSpec) -> dict[str, Any]:
    return m.model_dump(mode="json", exclude={"params_b"})


def _design(spec: ExperimentSpec) -> dict[str, Any]:
    """The design actually run, as the analysis report states it."""
    return {
        "teacher": spec.teacher.model,
        "judge": spec.judge.model if spec.judge else None,
        "classifier": spec.eval.classifier,
        "models": [_model_dump(m) for m in spec.train.models],
        "seeds": list(spec.train.seeds),
        "examples_per_arm": spec.train.examples,
        "method": spec.train.method,
        "eval_samples": spec.eval.samples,
        "conditions": {c: dict(sorted(mix.items())) for c, mix in spec.conditions.items()},
    }


def _mix_need(spec: ExperimentSpec, dataset: str) -> int:
    """The most kept rows of ``dataset`` that any condition's mix draws (train + val)."""
    from jobs.mix.core import apportion

    n_val = round(spec.train.examples * spec.train.val_fraction)
    need = 0
    for fractions in spec.conditions.values():
        if dataset in fractions:
            need = max(
                need,
                apportion(spec.train.examples, fractions)[dataset] + apportion(n_val, fractions)[dataset],
            )
    return need


def build_plan(spec: ExperimentSpec) -> Plan:
    layout = Layout(spec.store, spec.name)
    seen: dict[str, InputFile] = {}
    steps: list[Step] = []
    res = spec.resources
    judge = spec.judge.model_dump(mode="json") if spec.judge else None
    eval_inputs = {name: _input(spec, layout, "evals", path, seen).uri for name, path in spec.evals.items()}

    manifests: dict[str, str] = {}

    def add(step: Step) -> None:
        # What the step consumes, for the staleness check: its dependencies' manifests and the user
        # input files it reads. A rerun upstream (or an edited input file) makes it run again.
        input_files = {f.uri for f in seen.values()}
        upstream = [manifests[d] for d in step.depends] + [u for u in step.inputs if u in input_files]
        manifests[step.name] = step.manifest
        steps.append(
            step.model_copy(
                update={
                    "config": step.config | {"upstream": upstream},
                    "log": layout.log(step.name),
                    "config_uri": layout.config(step.name),
                }
            )
        )

    # generate: one step per dataset shard
    filter_steps: dict[str, str] = {}
    audits: list[str] = []
    kept: dict[str, str] = {}
    for ds, d in spec.datasets.items():
        personas = _input(spec, layout, "personas", d.personas, seen).uri
        prompts = _input(spec, layout, "prompts", d.prompts, seen).uri
        shard_names = []
        shard_uris = []
        for i in range(d.shards):
            name = k8s_name("generate", ds, i)
            out = layout.generate_shard(ds, i)
            cfg = _common(spec, name, layout.generate_manifest(ds, i), layout) | {
                "dataset": ds,
                "personas": personas,
                "prompts": prompts,
                "shard": i,
                "num_shards": d.shards,
                "samples": d.samples,
                "max_prompt_uses": d.max_prompt_uses,
                "max_prompts": d.max_prompts,
                "seed": d.seed,
                "teacher": spec.teacher.model_dump(mode="json"),
                "cache": layout.llm_cache(),
                "output": out,
                "errors": layout.generate_errors(ds, i),
                "max_failed_fraction": d.max_failed_fraction,
            }
            add(
                Step(
                    name=name,
                    stage="generate",
                    job="jobs.generate",
                    config=cfg,
                    inputs=[personas, prompts],
                    outputs=[out, cfg["errors"]],
                    resources=res["generate"],
                )
            )
            shard_names.append(name)
            shard_uris.append(out)
        # filter: one step per dataset, after all its shards
        fdir = layout.filter_dir(ds)
        name = k8s_name("filter", ds)
        outs = {k: layout.file_in(fdir, f"{k}.jsonl") for k in ("kept", "rejected")}
        cfg = _common(spec, name, layout.manifest_in(fdir), layout) | {
            "dataset": ds,
            "inputs": shard_uris,
            "kept": outs["kept"],
            "rejected": outs["rejected"],
            "audit": layout.file_in(fdir, "audit.json"),
            "normative": d.normative,
            "eval_items": sorted(eval_inputs.values()),
            "classifier": spec.filter.classifier,
            "judge": judge,
            "cache": layout.llm_cache(),
            "max_drop_fraction": spec.filter.max_drop_fraction,
            "leakage_threshold": spec.filter.leakage_threshold,
            "min_chars": spec.filter.min_chars,
            "max_chars": spec.filter.max_chars,
            "dup_threshold": spec.filter.dup_threshold,
            "drop_caveat": spec.filter.drop_caveat,
            "truncated": spec.filter.truncated,
            "min_kept": spec.filter.min_kept if spec.filter.min_kept is not None else _mix_need(spec, ds),
        }
        add(
            Step(
                name=name,
                stage="filter",
                job="jobs.filter",
                config=cfg,
                inputs=shard_uris + sorted(eval_inputs.values()),
                outputs=[outs["kept"], outs["rejected"], cfg["audit"]],
                resources=res["filter"],
                depends=shard_names,
            )
        )
        filter_steps[ds] = name
        audits.append(cfg["audit"])
        kept[ds] = outs["kept"]

    # mix: one step per condition (arm)
    mix_out: dict[str, tuple[str, str, str]] = {}
    for cond, fractions in spec.conditions.items():
        mdir = layout.mix_dir(cond)
        name = k8s_name("mix", cond)
        train_uri, val_uri = layout.file_in(mdir, "train.jsonl"), layout.file_in(mdir, "val.jsonl")
        cfg = _common(spec, name, layout.manifest_in(mdir), layout) | {
            "condition": cond,
            "sources": {ds: {"uri": kept[ds], "fraction": frac} for ds, frac in sorted(fractions.items())},
            "examples": spec.train.examples,
            "val_fraction": spec.train.val_fraction,
            "seed": 0,
            "train": train_uri,
            "val": val_uri,
        }
        add(
            Step(
                name=name,
                stage="mix",
                job="jobs.mix",
                config=cfg,
                inputs=[kept[ds] for ds in sorted(fractions)],
                outputs=[train_uri, val_uri],
                resources=res["mix"],
                depends=[filter_steps[ds] for ds in sorted(fractions)],
            )
        )
        mix_out[cond] = (name, train_uri, val_uri)

    # train: model x condition x seed; eval: every trained model, plus the untrained base per model
    eval_results: list[str] = []
    eval_steps: list[str] = []
    train_hp = spec.train.model_dump(mode="json", exclude={"models", "seeds", "examples", "val_fraction"})
    eval_params = spec.eval.model_dump(mode="json")
    for m in spec.train.models:
        targets: list[tuple[str, int, str | None, str | None]] = [("base", 0, None, None)]
        for cond, (mix_name, train_uri, val_uri) in mix_out.items():
            for seed in spec.train.seeds:
                tdir = layout.train_dir(m.name, cond, seed)
                name = k8s_name("train", m.name, cond, f"s{seed}")
                cfg = (
                    _common(spec, name, layout.manifest_in(tdir), layout)
                    | {
                        "model": _model_dump(m),
                        "condition": cond,
                        "seed": seed,
                        "train_data": train_uri,
                        "val_data": val_uri,
                        "output": tdir,
                        "checkpoints": store.join(tdir, "checkpoints"),
                    }
                    | train_hp
                )
                add(
                    Step(
                        name=name,
                        stage="train",
                        job="jobs.train",
                        config=cfg,
                        inputs=[train_uri, val_uri],
                        outputs=[tdir],
                        resources=res["train"],
                        depends=[mix_name],
                    )
                )
                targets.append((cond, seed, tdir, name))
        for cond, seed, weights, train_step in targets:
            edir = layout.eval_dir(m.name, cond, seed)
            name = k8s_name("eval", m.name, cond, *((f"s{seed}",) if cond != "base" else ()))
            outputs = {es: layout.file_in(edir, f"{es}.jsonl") for es in sorted(eval_inputs)}
            cfg = (
                _common(spec, name, layout.manifest_in(edir), layout)
                | {
                    "model": _model_dump(m),
                    "condition": cond,
                    "seed": seed,
                    "weights": weights,
                    "evalsets": dict(sorted(eval_inputs.items())),
                    "outputs": outputs,
                    "judge": judge,
                    "cache": layout.llm_cache(),
                }
                | eval_params
            )
            add(
                Step(
                    name=name,
                    stage="eval",
                    job="jobs.eval",
                    config=cfg,
                    inputs=sorted(eval_inputs.values()) + ([weights] if weights else []),
                    outputs=list(outputs.values()),
                    resources=res["eval"],
                    depends=[train_step] if train_step else [],
                )
            )
            eval_results.extend(outputs.values())
            eval_steps.append(name)

    if eval_steps:
        adir = layout.analyze_dir()
        cfg = (
            _common(spec, "analyze", layout.manifest_in(adir), layout)
            | {
                "results": eval_results,
                "evalsets": dict(sorted(eval_inputs.items())),
                "output": adir,
                "results_csv": layout.file_in(adir, "results.csv"),
                "contrasts_csv": layout.file_in(adir, "contrasts.csv"),
                "report_md": layout.file_in(adir, "report.md"),
                "report_html": layout.file_in(adir, "report.html"),
                "figures": store.join(adir, "figures"),
                "audits": audits,
                "design": _design(spec),
            }
            | spec.analysis.model_dump(mode="json")
        )
        add(
            Step(
                name="analyze",
                stage="analyze",
                job="jobs.analyze",
                config=cfg,
                inputs=eval_results,
                outputs=[cfg["results_csv"], cfg["contrasts_csv"], cfg["report_md"], cfg["report_html"]],
                resources=res["analyze"],
                depends=eval_steps,
            )
        )

    plan = Plan(
        experiment=spec.name, store=spec.store, inputs=sorted(seen.values(), key=lambda f: f.uri), steps=steps
    )
    validate(plan)
    return plan


def validate(plan: Plan) -> None:
    """Duplicate names, invalid names, unknown dependencies and cycles are errors."""
    names: set[str] = set()
    for s in plan.steps:
        if s.name in names:
            raise InputError(f"plan: duplicate step name '{s.name}'")
        if not K8S_NAME.match(s.name) or len(s.name) > 63:
            raise InputError(f"plan: step name '{s.name}' is not a valid Kubernetes name")
        names.add(s.name)
    for s in plan.steps:
        for d in s.depends:
            if d not in names:
                raise InputError(f"plan: step '{s.name}' depends on unknown step '{d}'")
    topological_order(plan.steps)


def topological_order(steps: Iterable[Step]) -> list[Step]:
    """Kahn's algorithm, stable in plan order; a cycle is an error that names its steps."""
    steps = list(steps)
    by_name = {s.name: s for s in steps}
    indeg = {s.name: len(set(s.depends) & by_name.keys()) for s in steps}
    children: dict[str, list[str]] = {s.name: [] for s in steps}
    for s in steps:
        for d in set(s.depends) & by_name.keys():
            children[d].append(s.name)
    ready = [s.name for s in steps if indeg[s.name] == 0]
    order: list[Step] = []
    while ready:
        n = ready.pop(0)
        order.append(by_name[n])
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    if len(order) != len(steps):
        stuck = sorted(n for n, k in indeg.items() if k > 0)
        raise InputError(f"plan: dependency cycle among steps {stuck}")
    return order
