"""The Argo backend: render a :class:`~workflows.plan.Plan` to an Argo ``Workflow`` with Hera.

One Container template per stage (its image, resources and retry policy), one DAG task per step
with the plan's edges. Every task runs the same command as the local backend,
``python -m jobs.<stage> --config <config_uri>``; the config file is written to the store at submit
time (``workflows.argo_cli``), so the workflow itself carries only URIs, never data or secrets.

Store credentials reach the pods through ``envFrom`` of a Kubernetes Secret and the endpoint through
a ConfigMap, both created by the Helm chart (``helm/creed``); a secret value never appears in the
rendered YAML. Only exit code 75 (``TransientError``) is retried; 2 (bad input) and bugs are not.

    creed render experiments/demo.yaml --store s3://bucket/experiments -o demo-workflow.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import yaml
from hera.workflows import (
    DAG,
    ConfigMapEnvFrom,
    Container,
    EmptyDirVolume,
    Env,
    Parameter,
    Resources,
    RetryStrategy,
    SecretEnvFrom,
    Task,
    Workflow,
)
from hera.workflows.models import (
    Backoff,
    PodGC,
    PodSecurityContext,
    Quantity,
    SecurityContext,
    Toleration,
    TTLStrategy,
)

from jobs.common import store
from jobs.common.errors import EXIT_TRANSIENT, InputError
from workflows.plan import STAGES, Plan, Step, k8s_name, topological_order

IMAGE_REPO = "ghcr.io/creed"
GPU_RESOURCE = "nvidia.com/gpu"
#: Argo expression: retry a step when the job said "transient" (exit 75), or when the pod itself was
#: lost (status Error: node preemption, eviction; a job's own non-zero exit is status Failed). Both are
#: safe because a rerun skips completed work and training resumes from its newest checkpoint.
RETRY_EXPRESSION = f'asInt(lastRetry.exitCode) == {EXIT_TRANSIENT} || lastRetry.status == "Error"'
LABEL_PREFIX = "creed"


def default_version() -> str:
    try:
        return metadata.version("creed")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


@dataclass(frozen=True)
class ArgoOptions:
    """How the workflow meets the cluster; the defaults match the Helm chart's defaults."""

    namespace: str | None = None
    service_account: str = "creed-workflow"
    store_configmap: str = "creed-store"
    store_secret: str = "creed-store-credentials"
    #: API keys of the teacher/judge (``OPENAI_API_KEY`` ...); optional, so CPU-only mock runs work.
    llm_secret: str = "creed-llm"
    image_repo: str = IMAGE_REPO
    image_tag: str = field(default_factory=default_version)
    image_pull_policy: str = "IfNotPresent"
    retry_limit: int = 3
    retry_backoff: str = "1m"
    retry_max_backoff: str = "30m"
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    #: shared memory for GPU pods (PyTorch dataloaders, NCCL); the container default is 64 MiB.
    shm_size: str = "8Gi"
    parallelism: int | None = None
    ttl_seconds: int = 7 * 24 * 3600
    run_as_user: int = 1000


def image_for(stage: str, images: dict[str, str], opts: ArgoOptions) -> str:
    """The spec's ``images.<stage>`` if set, else ``<repo>/creed-<stage>:<tag>``."""
    return images.get(stage) or f"{opts.image_repo}/creed-{stage}:{opts.image_tag}"


def _retry(opts: ArgoOptions) -> RetryStrategy:
    # Quantities/IntOrString are strings in Argo's JSON schema; Argo accepts both.
    return RetryStrategy(
        limit=str(opts.retry_limit),
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=Backoff(duration=opts.retry_backoff, factor="2", max_duration=opts.retry_max_backoff),
    )


def _resources(step: Step) -> Resources:
    r = step.resources
    # Memory limit = request: an OOM kill names the step instead of starving its neighbours.
    return Resources(
        cpu_request=f"{r.cpu:g}",
        memory_request=r.memory,
        memory_limit=r.memory,
        gpus=r.gpus or None,
        gpu_flag=GPU_RESOURCE,
    )


def _template_key(step: Step) -> tuple[str, float, str, int]:
    r = step.resources
    return (step.stage, r.cpu, r.memory, r.gpus)


def _container(
    name: str, step: Step, images: dict[str, str], opts: ArgoOptions, experiment: str
) -> Container:
    gpu = step.gpu
    return Container(
        name=name,
        image=image_for(step.stage, images, opts),
        image_pull_policy=opts.image_pull_policy,
        command=["python", "-m", step.job],
        args=["--config", "{{inputs.parameters.config}}"],
        inputs=[Parameter(name="config", description="URI of the step's config JSON in the store")],
        resources=_resources(step),
        retry_strategy=_retry(opts),
        # Only non-field CREED_* variables here: StageConfig reads CREED_<FIELD> as overrides.
        env=[Env(name="CREED_LOG_FORMAT", value="json")],
        env_from=[
            ConfigMapEnvFrom(name=opts.store_configmap),
            SecretEnvFrom(name=opts.store_secret),
            SecretEnvFrom(name=opts.llm_secret, optional=True),
        ],
        security_context=SecurityContext(allow_privilege_escalation=False, run_as_non_root=True),
        labels={f"{LABEL_PREFIX}/experiment": experiment, f"{LABEL_PREFIX}/stage": step.stage},
        tolerations=[Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")] if gpu else None,
        node_selector=dict(opts.gpu_node_selector) if gpu and opts.gpu_node_selector else None,
        volumes=[
            EmptyDirVolume(
                name="dshm", medium="Memory", size_limit=Quantity(root=opts.shm_size), mount_path="/dev/shm"
            )
        ]
        if gpu
        else None,
    )


def build_workflow(
    plan: Plan, images: dict[str, str] | None = None, opts: ArgoOptions | None = None
) -> Workflow:
    """The Hera ``Workflow`` of a plan: one template per stage (and resource shape), one task per step."""
    opts = opts or ArgoOptions()
    images = images or {}
    unknown = sorted(set(images) - set(STAGES))
    if unknown:
        raise InputError(f"images: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    experiment = k8s_name(plan.experiment)
    order = topological_order(plan.steps)

    with Workflow(
        generate_name=f"{experiment[:50].rstrip('-')}-",
        namespace=opts.namespace,
        entrypoint="main",
        service_account_name=opts.service_account,
        labels={f"{LABEL_PREFIX}/experiment": experiment, "app.kubernetes.io/part-of": "creed"},
        annotations={
            f"{LABEL_PREFIX}/store": store.join(plan.store, plan.experiment),
            f"{LABEL_PREFIX}/steps": str(len(plan.steps)),
            "workflows.argoproj.io/description": f"creed experiment '{plan.experiment}'",
        },
        parallelism=opts.parallelism,
        pod_gc=PodGC(strategy="OnPodSuccess"),
        ttl_strategy=TTLStrategy(seconds_after_completion=opts.ttl_seconds),
        security_context=PodSecurityContext(
            run_as_non_root=True, run_as_user=opts.run_as_user, fs_group=opts.run_as_user
        ),
    ) as wf:
        templates: dict[tuple[str, float, str, int], Container] = {}
        for s in sorted(order, key=lambda s: STAGES.index(s.stage) if s.stage in STAGES else len(STAGES)):
            key = _template_key(s)
            if key not in templates:
                # Normally one shape per stage; a second shape gets its own template name.
                n = sum(1 for k in templates if k[0] == s.stage)
                name = s.stage if n == 0 else f"{s.stage}-{n + 1}"
                templates[key] = _container(name, s, images, opts, experiment)
        with DAG(name="main"):
            for s in plan.steps:
                Task(
                    name=s.name,
                    template=templates[_template_key(s)],
                    arguments={"config": s.config_uri},
                    depends=" && ".join(s.depends) if s.depends else None,
                )
    return wf


def render_dict(
    plan: Plan, images: dict[str, str] | None = None, opts: ArgoOptions | None = None
) -> dict[str, Any]:
    """The workflow as a plain dict (what ``kubectl``/the Argo API receive)."""
    out: dict[str, Any] = build_workflow(plan, images, opts).to_dict()
    return out


def render_yaml(plan: Plan, images: dict[str, str] | None = None, opts: ArgoOptions | None = None) -> str:
    """Stable YAML of the workflow: the same plan and options give the same bytes."""
    return yaml.safe_dump(render_dict(plan, images, opts), sort_keys=False, width=120)


def step_configs(plan: Plan) -> dict[str, str]:
    """config URI -> the JSON written there before submit (the same bytes as the local backend)."""
    return {s.config_uri: json.dumps(s.config, indent=2, sort_keys=True) + "\n" for s in plan.steps}
