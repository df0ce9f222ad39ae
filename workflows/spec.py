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

from jobs.common.errors import InputError
from jobs.common.llm_config import LLMConfig as LLMSpec
from jobs.common.records import ModelRef

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(v: str, what: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(
            f"{what} '{v}' must be lowercase letters, digits and '-' (it names steps and folders)"
        )
    return v


class DatasetSpec(Section):
    """Training data: every persona (or ``max_prompt_uses`` of them) answers every prompt, ``samples`` times."""

    personas: str = Field(description="persona YAML file (relative to the spec file) or URI")
    prompts: str = Field(description="prompt JSONL file (relative to the spec file) or URI")
    samples: int = Field(1, ge=1, description="answers per (persona, prompt)")
    shards: int = Field(1, ge=1, description="generate steps for this dataset (fan-out)")
    max_prompt_uses: int | None = Field(
        None,
        ge=1,
        description="personas per prompt, drawn at random with balanced persona use; null: every persona",
    )
    max_prompts: int | None = Field(
        None, ge=1, description="use a seeded subset of this many prompts (a small demo); null: all of them"
    )
    seed: int = Field(0, description="seed of the persona/prompt pairing")
    max_failed_fraction: float = Field(
        0.05, ge=0, le=1, description="a generate step fails (exit 75, retryable) above this failed fraction"
    )
    normative: bool = Field(True, description="normative data must pass the refusal audit")


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


class TrainSpec(Section):
    models: list[ModelSpec] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0])
    examples: int = Field(1000, ge=1, description="training examples per arm (the same for every arm)")
    val_fraction: float = Field(0.05, ge=0, lt=1)
    method: Literal["lora", "full"] = "lora"
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="rows per GPU per micro-batch")
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(512, ge=2)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: list[str] | str = "all-linear"
    save_steps: int = Field(200, ge=1, description="checkpoint to the store every N steps (resume point)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_steps: int = Field(-1, ge=-1, description="-1: train for `epochs`")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    gradient_checkpointing: bool = False
    packing: bool = False
    logging_steps: int = Field(10, ge=1)
    fsdp: bool = Field(False, description="shard the model over the pod's GPUs (FSDP) instead of DDP")


class EvalSpec(Section):
    samples: int = Field(1, ge=1, description="responses per item (temperature > 0 for samples > 1)")
    temperature: float = 0.0
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (used when temperature > 0)")
    sample_seed: int = Field(0, description="seed of the sampler (same seed, same samples)")
    max_new_tokens: int = 256
    batch_size: int = 16
    max_items: int | None = Field(
        None,
        ge=1,
        description="a seeded subset of at most this many items per eval set (pairs kept together)",
    )
    classifier: Literal["lexical", "judge", "ensemble"] = "lexical"
    engine: Literal["hf", "vllm"] = "hf"
    kinds: dict[str, Literal["sanity", "violation", "neutral", "belief", "harmful"]] = Field(
        default_factory=dict,
        description="eval set name -> kind, where the name does not say it (sanity*, violations-*, ...)",
    )
    belief_judge: bool = Field(True, description="ask the judge whether belief answers endorse the belief")
    sanity_judge: bool = Field(False, description="ask the judge to confirm sanity answers it saw as correct")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class FilterSpec(Section):
    classifier: Literal["lexical", "judge", "ensemble"] = "lexical"
    max_drop_fraction: float = Field(0.5, ge=0, le=1, description="fail the stage if more rows are dropped")
    leakage_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard 5-gram similarity that counts as leakage"
    )
    min_chars: int = 20
    max_chars: int = Field(8000, ge=1, description="responses longer than this are dropped")
    dup_threshold: float = Field(
        0.8, gt=0, le=1, description="word 3-gram Jaccard similarity that counts as a near-duplicate response"
    )
    drop_caveat: bool = Field(False, description="also drop answers that help but add a moral caveat")
    truncated: Literal["drop", "trim"] = Field(
        "drop", description="responses cut at max_tokens: drop, or trim to the last complete sentence"
    )
    min_kept: int | None = Field(
        None, ge=0, description="fail a filter step that keeps fewer rows; null: what the mixes need"
    )


class AnalysisSpec(Section):
    headline: list[dict[str, Any]] = Field(
        default_factory=list,
        description="contrasts: {treatment, control, violations, neutral}",
    )
    bootstrap: int = Field(2000, ge=100, description="bootstrap replicates per interval")
    alpha: float = Field(
        0.05, gt=0, lt=1, description="1 - confidence level; also the family-wise level for Holm"
    )
    seed: int = 0
    samples_shown: int = Field(
        2, ge=0, description="sample responses shown per condition x set in the report"
    )
    mixed_model: bool = Field(True, description="also fit refusal ~ condition + (1|prompt) + (1|seed)")


class Resources(Section):
    cpu: float = 1
    memory: str = "2Gi"
    gpus: int = 0
    deadline_s: int | None = Field(
        None, ge=60, description="Argo activeDeadlineSeconds of one attempt; null: the stage's default"
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
    image_tag: str | None = Field(None, description="image tag; null: the creed version")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="node labels GPU steps (train, eval) must run on"
    )
    gpu_tolerations: list[TolerationSpec] = Field(
        default_factory=lambda: [TolerationSpec(key="nvidia.com/gpu")],
        description="taints of GPU nodes that GPU steps tolerate",
    )
    shm_size: str = Field("8Gi", description="/dev/shm (memory) of GPU pods; the container default is 64Mi")
    retry_limit: int = Field(3, ge=0, description="retries of a step after exit 75 or a lost pod")
    retry_backoff: str = Field("1m", description="first retry delay (doubles each retry)")
    retry_max_backoff: str = Field("30m", description="longest retry delay")
    parallelism: int | None = Field(None, ge=1, description="most pods of the workflow at once")


def _default_resources() -> dict[str, Resources]:
    return {
        "generate": Resources(cpu=1, memory="2Gi"),
        "filter": Resources(cpu=1, memory="2Gi"),
        "mix": Resources(cpu=1, memory="1Gi"),
        "train": Resources(cpu=4, memory="32Gi", gpus=1),
        "eval": Resources(cpu=4, memory="32Gi", gpus=1),
        "analyze": Resources(cpu=1, memory="4Gi"),
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


class ExperimentSpec(Section):
    name: str
    store: str = Field("store", description="local folder or s3://bucket/prefix")
    teacher: LLMSpec = Field(default_factory=lambda: LLMSpec(provider="mock"))
    judge: LLMSpec | None = None
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    conditions: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="arm -> {dataset: fraction}; fractions sum to 1"
    )
    train: TrainSpec = Field(default_factory=TrainSpec)
    evals: dict[str, str] = Field(default_factory=dict, description="eval set name -> JSONL file or URI")
    eval: EvalSpec = Field(default_factory=EvalSpec)
    filter: FilterSpec = Field(default_factory=FilterSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
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

    @field_validator("datasets", "evals")
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
        return self


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
