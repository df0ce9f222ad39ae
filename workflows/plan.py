"""The plan builder: the *only* place that wires stages together and computes store URIs.

``build_plan(spec)`` is pure and deterministic: the same spec gives the same plan, byte for byte in
``creed plan --json``. Both backends (local and Argo) run exactly these steps with these configs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from jobs.analyze.config import AnalyzeConfig
from jobs.check.config import CheckConfig, CheckParams
from jobs.common import manifest, store
from jobs.common.config import StageConfig
from jobs.common.errors import InputError
from jobs.common.records import ModelRef
from jobs.eval.config import EvalConfig, EvalParams
from jobs.filter.config import FilterConfig
from jobs.generate.config import GenerateConfig, GenerateParams
from jobs.mix import core as mix_core
from jobs.mix.config import MixConfig, MixParams
from jobs.refusal import gold as gold_files
from jobs.train.config import TrainConfig, TrainParams
from workflows.spec import CheckSpec, DatasetSpec, ExperimentSpec, ModelSpec, Resources

STAGES = ("generate", "check", "filter", "mix", "train", "eval", "analyze")
#: Stages that run in another stage's container image (the check asks the teacher, as generate does).
STAGE_IMAGE = {"check": "generate"}
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
    config: SerializeAsAny[StageConfig] = Field(description="the step's stage config, typed")
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    depends: list[str] = Field(default_factory=list)
    log: str = Field("", description="URI the step's log is copied to")
    config_uri: str = Field("", description="URI the step's config file is written to")

    @property
    def manifest(self) -> str:
        return self.config.manifest

    def config_hash(self) -> str:
        """The hash the step's manifest records: of the mapping written to its config file."""
        return manifest.config_hash(self.config.model_dump(mode="json"))

    def config_json(self) -> str:
        """The config file the step runs with (the same bytes in both backends)."""
        return json.dumps(self.config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

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
    if len(name) > 63 or name != raw:
        # Shortened or rewritten ("a_b" and "a.b" both give "a-b"): a digest of the original keeps the
        # names of different parts different.
        digest = hashlib.sha1(raw.encode()).hexdigest()[:6]
        name = f"{name[: 63 - 7].rstrip('-')}-{digest}"
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

    def check_dir(self, value: str) -> str:
        return store.join(self.root, "check", value)

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
# The plan: one small function per stage
# ---------------------------------------------------------------------------------------------
def _model_dump(m: ModelSpec) -> dict[str, Any]:
    return m.model_dump(mode="json", exclude={"params_b"})


def _model_ref(m: ModelSpec) -> ModelRef:
    return ModelRef.model_validate(_model_dump(m))


def design(spec: ExperimentSpec) -> dict[str, Any]:
    """The design actually run, as the analysis report states it."""
    own = {ds: d.teacher.model for ds, d in spec.datasets.items() if d.teacher is not None}
    return {
        "teacher": spec.teacher.model,
        **({"dataset_teachers": own} if own else {}),
        "judge": spec.judge.model if spec.judge else None,
        "classifier": spec.eval.classifier,
        "models": [_model_dump(m) for m in spec.train.models],
        "seeds": list(spec.train.seeds),
        "examples": spec.train.examples,
        "method": spec.train.method,
        "eval_samples": spec.eval.samples,
        "conditions": {c: dict(sorted(mix.items())) for c, mix in spec.conditions.items()},
    }


def mix_need(spec: ExperimentSpec, dataset: str) -> int:
    """The most kept rows of ``dataset`` that any condition's mix draws (train + val)."""
    return max(
        (
            sum(mix_core.budget(spec.train.examples, spec.train.val_fraction, fractions)[dataset])
            for fractions in spec.conditions.values()
            if dataset in fractions
        ),
        default=0,
    )


def _params(section: BaseModel, cls: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``section`` that the stage parameters ``cls`` declare (a spec section may add
    experiment-level fields of its own)."""
    return {k: getattr(section, k) for k in cls.model_fields if k in type(section).model_fields}


@dataclass
class _Builder:
    """The plan being built: the spec, its layout, the input files seen so far and the steps."""

    spec: ExperimentSpec
    layout: Layout
    inputs: dict[str, InputFile] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    manifests: dict[str, str] = field(default_factory=dict)

    def input(self, kind: str, path: str) -> str:
        return _input(self.spec, self.layout, kind, path, self.inputs).uri

    def add(self, step: Step) -> Step:
        # What the step consumes, for the staleness check: its dependencies' manifests and the user
        # input files it reads. A rerun upstream (or an edited input file) makes it run again.
        input_files = {f.uri for f in self.inputs.values()}
        upstream = [self.manifests[d] for d in step.depends] + [u for u in step.inputs if u in input_files]
        self.manifests[step.name] = step.manifest
        done = step.model_copy(
            update={
                "config": step.config.model_copy(update={"upstream": upstream}),
                "log": self.layout.log(step.name),
                "config_uri": self.layout.config(step.name),
            }
        )
        self.steps.append(done)
        return done

    def common(self, name: str, manifest: str) -> dict[str, Any]:
        return {"experiment": self.spec.name, "step": name, "manifest": manifest}


def _generate(b: _Builder, ds: str, d: DatasetSpec) -> list[Step]:
    """One step per shard of a dataset's requests."""
    personas, prompts = b.input("personas", d.personas), b.input("prompts", d.prompts)
    steps = []
    for i in range(d.shards):
        name = k8s_name("generate", ds, i)
        cfg = GenerateConfig.model_validate(
            b.common(name, b.layout.generate_manifest(ds, i))
            | _params(d, GenerateParams)
            | {
                "dataset": ds,
                "personas": personas,
                "prompts": prompts,
                "shard": i,
                "num_shards": d.shards,
                "teacher": d.teacher or b.spec.teacher,
                "cache": b.layout.llm_cache(),
                "output": b.layout.generate_shard(ds, i),
                "errors": b.layout.generate_errors(ds, i),
            }
        )
        steps.append(
            b.add(
                Step(
                    name=name,
                    stage="generate",
                    job="jobs.generate",
                    config=cfg,
                    inputs=[personas, prompts],
                    outputs=[cfg.output, cfg.errors],
                    resources=b.spec.resources["generate"],
                )
            )
        )
    return steps


def _filter(b: _Builder, ds: str, d: DatasetSpec, shards: list[Step], evals: dict[str, str]) -> Step:
    """One step per dataset, after all its shards."""
    spec, fdir = b.spec, b.layout.filter_dir(ds)
    name = k8s_name("filter", ds)
    params = spec.filter.model_dump()
    if params["min_kept"] is None:
        params["min_kept"] = mix_need(spec, ds)
    terms = b.input("terms", d.exclude_terms) if d.exclude_terms else None
    cfg = FilterConfig.model_validate(
        b.common(name, b.layout.manifest_in(fdir))
        | params
        | {
            "dataset": ds,
            "inputs": [s.outputs[0] for s in shards],
            "kept": b.layout.file_in(fdir, "kept.jsonl"),
            "rejected": b.layout.file_in(fdir, "rejected.jsonl"),
            "audit": b.layout.file_in(fdir, "audit.json"),
            "normative": d.normative,
            "refusals": d.refusals,
            "exclude_terms": terms,
            "eval_items": sorted(evals.values()),
            "judge": spec.judge,
            "cache": b.layout.llm_cache(),
        }
    )
    return b.add(
        Step(
            name=name,
            stage="filter",
            job="jobs.filter",
            config=cfg,
            inputs=cfg.inputs + cfg.eval_items + ([terms] if terms else []),
            outputs=[cfg.kept, cfg.rejected, cfg.audit],
            resources=spec.resources["filter"],
            depends=[s.name for s in shards],
        )
    )


def _check(b: _Builder, value: str, c: CheckSpec, evals: dict[str, str]) -> Step:
    """One step per value system: the teacher manipulation check, which needs no other step."""
    spec, cdir = b.spec, b.layout.check_dir(value)
    name = k8s_name("check", value)
    personas = b.input("personas", c.personas)
    sets = {
        v: {"violations": evals[v], "neutral": n, "neutral_uri": evals[n]} for v, n in sorted(c.sets.items())
    }
    cfg = CheckConfig.model_validate(
        b.common(name, b.layout.manifest_in(cdir))
        | _params(c, CheckParams)
        | {
            "value": value,
            "personas": personas,
            "sets": sets,
            "teacher": c.teacher or spec.teacher,
            "classifier": spec.eval.classifier,
            "judge": spec.judge,
            "cache": b.layout.llm_cache(),
            "answers": b.layout.file_in(cdir, "answers.jsonl"),
            "items": b.layout.file_in(cdir, "items.jsonl"),
            "summary": b.layout.file_in(cdir, "summary.json"),
        }
    )
    inputs = [personas, *sorted({u for s in sets.values() for u in (s["violations"], s["neutral_uri"])})]
    return b.add(
        Step(
            name=name,
            stage="check",
            job="jobs.check",
            config=cfg,
            inputs=inputs,
            outputs=[cfg.answers, cfg.items, cfg.summary],
            resources=spec.resources["check"],
        )
    )


def _mix(b: _Builder, cond: str, fractions: dict[str, float], filters: dict[str, Step]) -> Step:
    """One step per condition (arm)."""
    spec, mdir = b.spec, b.layout.mix_dir(cond)
    name = k8s_name("mix", cond)
    kept = {ds: filters[ds].config.kept for ds in sorted(fractions)}  # type: ignore[attr-defined]
    cfg = MixConfig.model_validate(
        b.common(name, b.layout.manifest_in(mdir))
        | _params(spec.train, MixParams)
        | {
            "condition": cond,
            "sources": {ds: {"uri": kept[ds], "fraction": fractions[ds]} for ds in sorted(fractions)},
            "seed": 0,
            "train": b.layout.file_in(mdir, "train.jsonl"),
            "val": b.layout.file_in(mdir, "val.jsonl"),
        }
    )
    return b.add(
        Step(
            name=name,
            stage="mix",
            job="jobs.mix",
            config=cfg,
            inputs=list(kept.values()),
            outputs=[cfg.train, cfg.val],
            resources=spec.resources["mix"],
            depends=[filters[ds].name for ds in sorted(fractions)],
        )
    )


def _train(b: _Builder, m: ModelSpec, cond: str, seed: int, mix: Step) -> Step:
    """One step per model x condition x seed."""
    spec, tdir = b.spec, b.layout.train_dir(m.name, cond, seed)
    name = k8s_name("train", m.name, cond, f"s{seed}")
    mcfg: MixConfig = mix.config  # type: ignore[assignment]
    cfg = TrainConfig.model_validate(
        b.common(name, b.layout.manifest_in(tdir))
        | _params(spec.train, TrainParams)
        | {
            "model": _model_ref(m),
            "condition": cond,
            "seed": seed,
            "train_data": mcfg.train,
            "val_data": mcfg.val,
            "output": tdir,
            "checkpoints": store.join(tdir, "checkpoints"),
        }
    )
    return b.add(
        Step(
            name=name,
            stage="train",
            job="jobs.train",
            config=cfg,
            inputs=[mcfg.train, mcfg.val],
            outputs=[tdir],
            resources=spec.resources["train"],
            depends=[mix.name],
        )
    )


def _eval(b: _Builder, m: ModelSpec, cond: str, seed: int, train: Step | None, evals: dict[str, str]) -> Step:
    """One step per trained model, and one for the untrained base model (condition ``base``)."""
    spec, edir = b.spec, b.layout.eval_dir(m.name, cond, seed)
    name = k8s_name("eval", m.name, cond, *((f"s{seed}",) if cond != "base" else ()))
    weights = train.outputs[0] if train is not None else None
    cfg = EvalConfig.model_validate(
        b.common(name, b.layout.manifest_in(edir))
        | _params(spec.eval, EvalParams)
        | {
            "model": _model_ref(m),
            "condition": cond,
            "seed": seed,
            "weights": weights,
            "evalsets": dict(sorted(evals.items())),
            "outputs": {es: b.layout.file_in(edir, f"{es}.jsonl") for es in sorted(evals)},
            "judge": spec.judge,
            "cache": b.layout.llm_cache(),
        }
    )
    return b.add(
        Step(
            name=name,
            stage="eval",
            job="jobs.eval",
            config=cfg,
            inputs=sorted(evals.values()) + ([weights] if weights else []),
            outputs=list(cfg.outputs.values()),
            resources=spec.resources["eval"],
            depends=[train.name] if train is not None else [],
        )
    )


def _gold(b: _Builder) -> dict[str, str]:
    """The gold files of the report's validity section, as staged inputs: the held-out test split of
    the labelled corpus shipped with creed (in a checkout; an installed wheel has no data/), and the
    spec's own ``eval.gold``."""
    gold: dict[str, str] = {}
    if b.spec.eval.gold:
        gold[f"eval.gold ({b.spec.eval.gold})"] = b.input("labels", b.spec.eval.gold)
    if not gold_files.TEST.is_file():
        return gold
    try:  # relative to the spec's folder, so that the plan does not depend on where creed is checked out
        shipped = os.path.relpath(gold_files.TEST, Path(b.spec.base_dir).resolve())
    except ValueError:  # another drive (Windows)
        shipped = str(gold_files.TEST)
    return {"classifier test split (data/labels/test2.jsonl)": b.input("labels", shipped)} | gold


def _analyze(
    b: _Builder, evals_steps: list[Step], filters: list[Step], evals: dict[str, str], checks: list[Step]
) -> Step:
    spec, adir = b.spec, b.layout.analyze_dir()
    results = [u for s in evals_steps for u in s.outputs]
    gold = _gold(b)
    cfg = AnalyzeConfig.model_validate(
        b.common("analyze", b.layout.manifest_in(adir))
        | spec.analysis.model_dump()
        | {
            "results": results,
            "evalsets": dict(sorted(evals.items())),
            "output": adir,
            "results_csv": b.layout.file_in(adir, "results.csv"),
            "contrasts_csv": b.layout.file_in(adir, "contrasts.csv"),
            "report_md": b.layout.file_in(adir, "report.md"),
            "report_html": b.layout.file_in(adir, "report.html"),
            "figures": store.join(adir, "figures"),
            "audits": [f.config.audit for f in filters],  # type: ignore[attr-defined]
            "checks": [c.config.items for c in checks],  # type: ignore[attr-defined]
            "design": design(spec),
            "gold": gold,
        }
    )
    return b.add(
        Step(
            name="analyze",
            stage="analyze",
            job="jobs.analyze",
            config=cfg,
            inputs=results + cfg.checks + list(gold.values()),
            outputs=[cfg.results_csv, cfg.contrasts_csv, cfg.report_md, cfg.report_html],
            resources=spec.resources["analyze"],
            depends=[s.name for s in evals_steps] + [c.name for c in checks],
        )
    )


def build_plan(spec: ExperimentSpec) -> Plan:
    """Every step of the experiment, with its typed config and its edges."""
    b = _Builder(spec, Layout(spec.store, spec.name))
    evals = {name: b.input("evals", path) for name, path in spec.evals.items()}
    checks = [_check(b, value, c, evals) for value, c in spec.checks.items()]
    filters: dict[str, Step] = {}
    for ds, d in spec.datasets.items():
        filters[ds] = _filter(b, ds, d, _generate(b, ds, d), evals)
    mixes = {cond: _mix(b, cond, fractions, filters) for cond, fractions in spec.conditions.items()}
    eval_steps: list[Step] = []
    for m in spec.train.models:
        trained = [
            (cond, seed, _train(b, m, cond, seed, mix))
            for cond, mix in mixes.items()
            for seed in spec.train.seeds
        ]
        eval_steps.append(_eval(b, m, "base", 0, None, evals))
        eval_steps += [_eval(b, m, cond, seed, t, evals) for cond, seed, t in trained]
    if eval_steps:
        _analyze(b, eval_steps, list(filters.values()), evals, checks)
    plan = Plan(
        experiment=spec.name,
        store=spec.store,
        inputs=sorted(b.inputs.values(), key=lambda f: f.uri),
        steps=b.steps,
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
