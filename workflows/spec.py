"""The experiment spec: YAML → a validated pydantic model, with ``--set a.b=value`` overrides.

Errors name the key path (``train.seeds.1: Input should be a valid integer``). Relative input paths
are resolved against the folder of the spec file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jobs.analyze.config import AnalyzeParams
from jobs.check.config import CheckParams
from jobs.common.errors import InputError
from jobs.common.records import JUDGED, EvalKind, ModelRef, eval_kind
from jobs.eval.config import EvalParams
from jobs.filter.config import FilterParams
from jobs.generate.config import GenerateParams
from jobs.llm import LLMConfig
from jobs.mix.config import MixParams
from jobs.train.config import TrainParams

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(v: str, what: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(
            f"{what} '{v}' must be lowercase letters, digits and '-' (it names steps and folders)"
        )
    return v


class DatasetSpec(GenerateParams):
    """Training data: every persona (or ``max_prompt_uses`` of them) answers every prompt, ``samples``
    times (the generate stage's parameters), from these files, in this many steps."""

    personas: str = Field(description="persona YAML file (relative to the spec file) or URI")
    prompts: str = Field(description="prompt JSONL file (relative to the spec file) or URI")
    shards: int = Field(1, ge=1, description="generate steps for this dataset (fan-out)")
    normative: bool = Field(True, description="normative data must pass the refusal audit")
    teacher: LLMConfig | None = Field(
        None, description="this dataset's teacher; null: the experiment's `teacher`"
    )
    refusals: Literal["forbidden", "expected"] = Field(
        "forbidden",
        description="expected: a positive-control dataset of trained refusals (the filter keeps refusals "
        "and drops answers that comply); forbidden: no refusal may reach training",
    )
    exclude_terms: str | None = Field(
        None,
        description="terms file (one regular expression per line, relative to the spec file): the filter "
        "drops rows whose prompt or answer matches, e.g. a taboo held out of training",
    )


class CheckSpec(CheckParams):
    """The teacher manipulation check of one value system (the check stage's parameters): every
    persona of this file answers every violation item of ``sets`` and its same-topic twin."""

    personas: str = Field(description="persona YAML file (relative to the spec file) or URI")
    sets: dict[str, str] = Field(
        description="violation eval set -> its same-topic twin set (both names from `evals`)"
    )
    teacher: LLMConfig | None = Field(None, description="null: the experiment's `teacher`")


class ModelSpec(ModelRef):
    params_b: float | None = Field(
        None,
        gt=0,
        description="parameters in billions, for `creed plan`'s estimates (default: from the name)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "model name")


class TrainSpec(TrainParams, MixParams):
    """The train stage's hyper-parameters and the arm size (mix), plus what is experiment-level: the
    base models and the seeds (the unit of replication)."""

    models: list[ModelSpec] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0])


class EvalSpec(EvalParams):
    """The eval stage's parameters, plus a gold file for the report's measurement-validity section."""

    gold: str | None = Field(
        None,
        description="your own gold-labelled {prompt, response, label} JSONL (relative to the spec file): "
        "the report shows the refusal classifier's metrics on it",
    )


class Resources(Section):
    cpu: float = 1
    memory: str = "2Gi"
    gpus: int = 0
    deadline_s: int | None = Field(
        None, ge=60, description="Argo activeDeadlineSeconds of one attempt; null: the stage's default"
    )
    disk: str | None = Field(
        None,
        description="ephemeral-storage request (model downloads, temporary files); null: 30Gi with GPUs, else 4Gi",
    )


class TolerationSpec(Section):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class ClusterSpec(Section):
    """How the Argo workflow meets the cluster. The defaults match the Helm chart's defaults; the
    Secrets are referenced by name only (their values never enter the workflow)."""

    namespace: str | None = Field(None, description="namespace of the workflow (default: ARGO_NAMESPACE)")
    service_account: str = Field("creed-workflow", description="the chart's workflow ServiceAccount")
    store_configmap: str = Field("creed-store", description="ConfigMap with the S3 endpoint and region")
    store_secret: str = Field("creed-store-credentials", description="Secret with the S3 credentials")
    llm_secret: str = Field("creed-llm", description="Secret with OPENAI_API_KEY etc. (optional)")
    image_repo: str = Field("ghcr.io/creed", description="registry/prefix of the creed-<stage> images")
    image_tag: str | None = Field(
        None,
        description="image tag; null: the commit of this checkout (12 hex digits), as images/build.sh tags",
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="node labels GPU steps (train, eval) must run on"
    )
    gpu_tolerations: list[TolerationSpec] = Field(
        default_factory=lambda: [TolerationSpec(key="nvidia.com/gpu")],
        description="taints of GPU nodes that GPU steps tolerate",
    )
    shm_size: str = Field("8Gi", description="/dev/shm (memory) of GPU pods; the container default is 64Mi")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of every step"
    )
    retry_limit: int = Field(3, ge=0, description="retries of a step after exit 75 or a lost pod")
    retry_backoff: str = Field("1m", description="first retry delay (doubles each retry)")
    retry_max_backoff: str = Field("30m", description="longest retry delay")
    parallelism: int | None = Field(None, ge=1, description="most pods of the workflow at once")
    ttl_seconds: int = Field(7 * 24 * 3600, ge=0, description="a finished workflow is deleted after this")
    run_as_user: int = Field(1000, ge=1, description="uid (and fsGroup) every pod runs as (the images' user)")
    workflow_deadline_s: int = Field(
        7 * 24 * 3600, ge=60, description="activeDeadlineSeconds of the whole workflow (then it is stopped)"
    )
    termination_grace_s: int = Field(
        120, ge=1, description="seconds a pod has after SIGTERM (train: to save a checkpoint) before SIGKILL"
    )
    memoize: bool = Field(
        True, description="skip steps finished in an earlier workflow of the same experiment (no pod at all)"
    )
    memo_configmap: str = Field("creed-memo", description="the memoization cache (the chart creates it)")
    memo_max_age: str = Field(
        "720h", description="memoized steps older than this run again (their pod skips)"
    )
    artifacts: bool = Field(
        True,
        description="each step's manifest as a key-only output artifact (needs Argo's artifact repository on "
        "the store's bucket: the chart's artifactRepository)",
    )
    gpu_semaphore: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$",
        description="<configmap>/<key> of a semaphore that caps concurrent GPU steps across all workflows "
        "of the namespace (the chart's gpuSemaphore creates creed-semaphores/gpu)",
    )


def _default_resources() -> dict[str, Resources]:
    return {
        "generate": Resources(cpu=1, memory="2Gi"),
        "filter": Resources(cpu=1, memory="2Gi"),
        "mix": Resources(cpu=1, memory="1Gi"),
        "train": Resources(cpu=4, memory="32Gi", gpus=1),
        "eval": Resources(cpu=4, memory="32Gi", gpus=1),
        "analyze": Resources(cpu=1, memory="4Gi"),
        "check": Resources(cpu=1, memory="2Gi"),
    }


class EstimateSpec(Section):
    """Assumptions behind the cost and GPU-hour estimates that `creed plan` prints (not used to run)."""

    gpu_tflops: float = Field(989.0, gt=0, description="peak dense bf16 TFLOP/s of one GPU (H100 SXM: 989)")
    mfu: float = Field(0.3, gt=0, le=1, description="fraction of peak that training reaches")
    gpu_hour_usd: float = Field(3.0, ge=0, description="price of one GPU-hour")
    output_fill: float = Field(0.6, gt=0, le=1, description="mean teacher answer length / max_tokens")
    eval_tokens_per_second: float = Field(
        2000.0, gt=0, description="generated tokens/s of one GPU during eval (hf batched; vLLM is faster)"
    )
    overhead_minutes: float = Field(3.0, ge=0, description="per GPU step: pod start, model load, upload")
    judge_prompt_tokens: int = Field(450, ge=0, description="tokens of one judge request (rubric + text)")
    # the minimum detectable effect of the design (a logistic model with random seed and prompt effects)
    seed_sd: float = Field(
        0.8, ge=0, description="SD between trained models (seeds) of one arm, log-odds of refusal"
    )
    prompt_sd: float = Field(1.0, ge=0, description="SD between prompts of a violation set, log-odds")
    baseline_refusal: float = Field(
        0.32, gt=0, lt=1, description="refusal rate of the control arm on a violation set"
    )


class ExperimentSpec(Section):
    name: str
    store: str = Field("store", description="local folder or s3://bucket/prefix")
    teacher: LLMConfig = Field(default_factory=lambda: LLMConfig(provider="mock"))
    judge: LLMConfig | None = None
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    checks: dict[str, CheckSpec] = Field(
        default_factory=dict,
        description="value system -> its teacher manipulation check (one step each, before training)",
    )
    conditions: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="arm -> {dataset: fraction}; fractions sum to 1"
    )
    train: TrainSpec = Field(default_factory=TrainSpec)
    evals: dict[str, str] = Field(default_factory=dict, description="eval set name -> JSONL file or URI")
    eval: EvalSpec = Field(default_factory=EvalSpec)
    filter: FilterParams = Field(default_factory=FilterParams)
    analysis: AnalyzeParams = Field(default_factory=AnalyzeParams)
    resources: dict[str, Resources] = Field(default_factory=_default_resources)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    estimate: EstimateSpec = Field(default_factory=EstimateSpec)
    images: dict[str, str] = Field(
        default_factory=dict,
        description="stage -> container image (Argo backend); default ghcr.io/creed/<stage>",
    )
    base_dir: str = Field(
        ".", description="folder that relative input paths are resolved against (set by load)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "experiment name")

    @field_validator("datasets", "evals", "checks")
    @classmethod
    def _keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            _check_name(k, "name")
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, Resources]) -> dict[str, Resources]:
        return {**_default_resources(), **v}

    @model_validator(mode="after")
    def _conditions(self) -> ExperimentSpec:
        for cond, mix in self.conditions.items():
            _check_name(cond, "condition")
            if cond == "base":
                raise ValueError(
                    "conditions.base: 'base' is the untrained reference and is added automatically"
                )
            for ds, frac in mix.items():
                if ds not in self.datasets:
                    raise ValueError(
                        f"conditions.{cond}.{ds}: unknown dataset (known: {sorted(self.datasets)})"
                    )
                if frac <= 0:
                    raise ValueError(f"conditions.{cond}.{ds}: fraction must be > 0")
            if mix and abs(sum(mix.values()) - 1.0) > 1e-6:
                raise ValueError(f"conditions.{cond}: fractions sum to {sum(mix.values()):g}, must sum to 1")
        needs_judge = [
            f"{where}: '{kind}'"
            for where, kind in (
                ("eval.classifier", self.eval.classifier),
                ("filter.classifier", self.filter.classifier),
                ("filter.audit_classifier", self.filter.audit_classifier),
            )
            if kind in JUDGED
        ]
        if needs_judge and self.judge is None:
            raise ValueError(f"{', '.join(needs_judge)} needs a judge: set `judge:` (or use lexical)")
        self._check_checks()
        return self

    def _check_checks(self) -> None:
        """Check sets name eval sets of the right kinds; a valid_only contrast needs a check."""
        checked = set()
        for value, c in self.checks.items():
            for v, n in c.sets.items():
                for name, want in ((v, EvalKind.violation), (n, EvalKind.neutral)):
                    if name not in self.evals:
                        raise ValueError(
                            f"checks.{value}.sets: unknown eval set '{name}' (known: {sorted(self.evals)})"
                        )
                    try:
                        kind = eval_kind(name, self.eval.kinds.get(name))
                    except InputError as exc:
                        raise ValueError(str(exc)) from None
                    if kind != want:
                        raise ValueError(f"checks.{value}.sets: '{name}' is not a {want.value} set")
                checked.add(v)
        for field in ("headline", "secondary"):
            for i, h in enumerate(getattr(self.analysis, field)):
                if h.valid_only and h.violations not in checked:
                    raise ValueError(
                        f"analysis.{field}.{i}: valid_only needs a manipulation check of '{h.violations}' "
                        "(add it to a `checks.<value>.sets`), or drop valid_only"
                    )


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to nested dicts, creating levels as needed."""
    if "=" not in assignment:
        raise InputError(f"--set {assignment}: expected KEY.PATH=VALUE")
    path, _, raw = assignment.partition("=")
    keys = path.strip().split(".")
    cur: Any = data
    for i, k in enumerate(keys[:-1]):
        if isinstance(cur, list):
            try:
                cur = cur[int(k)]
                continue
            except (ValueError, IndexError) as exc:
                raise InputError(f"--set {path}: no index {k} at {'.'.join(keys[:i]) or '(root)'}") from exc
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict | list):
            where = ".".join(keys[: i + 1])
            raise InputError(f"--set {path}: '{where}' is a value, not a section")
        cur = nxt
    last = keys[-1]
    value = _parse_scalar(raw)
    if isinstance(cur, list):
        try:
            cur[int(last)] = value
        except (ValueError, IndexError) as exc:
            raise InputError(f"--set {path}: no index {last}") from exc
    else:
        cur[last] = value


def format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid experiment spec"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against DESIGN.md / experiments/demo.yaml)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def from_dict(
    data: dict[str, Any], source: str = "spec", overrides: list[str] | None = None
) -> ExperimentSpec:
    data = dict(data)
    for o in overrides or []:
        apply_override(data, o)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_errors(source, exc)) from exc


def load(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read experiment spec ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{p}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{p}: an experiment spec is a YAML mapping (name, store, datasets, ...)")
    data.setdefault("base_dir", str(p.parent))
    return from_dict(data, str(p), overrides)
