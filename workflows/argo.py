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
import re
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
    WorkflowTemplate,
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
from workflows.plan import STAGE_IMAGE, STAGES, Plan, Step, k8s_name, topological_order
from workflows.spec import ClusterSpec

IMAGE_REPO = "ghcr.io/creed"
GPU_RESOURCE = "nvidia.com/gpu"
#: Argo expression: retry a step when the job said "transient" (exit 75), or when the pod itself was
#: lost (status Error: node preemption, eviction; a job's own non-zero exit is status Failed). Both are
#: safe because a rerun skips completed work and training resumes from its newest checkpoint.
RETRY_EXPRESSION = f'asInt(lastRetry.exitCode) == {EXIT_TRANSIENT} || lastRetry.status == "Error"'
LABEL_PREFIX = "creed"
#: activeDeadlineSeconds of one attempt of a step, unless the spec sets resources.<stage>.deadline_s.
DEFAULT_DEADLINES = {
    "generate": 12 * 3600,
    "check": 4 * 3600,
    "filter": 4 * 3600,
    "mix": 3600,
    "train": 48 * 3600,
    "eval": 24 * 3600,
    "analyze": 4 * 3600,
}


def default_version() -> str:
    try:
        return metadata.version("creed")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


def image_tag(cluster: ClusterSpec) -> str:
    """The tag of the stage images: the spec's ``cluster.image_tag``, else the creed version."""
    return cluster.image_tag or default_version()


def image_for(stage: str, images: dict[str, str], cluster: ClusterSpec) -> str:
    """The spec's ``images.<stage>`` if set, else ``<repo>/creed-<stage>:<tag>``; a stage without an
    image of its own (``STAGE_IMAGE``: check) runs in its host stage's image."""
    host = STAGE_IMAGE.get(stage, stage)
    return images.get(stage) or images.get(host) or f"{cluster.image_repo}/creed-{host}:{image_tag(cluster)}"


def _retry(cluster: ClusterSpec) -> RetryStrategy:
    # Quantities/IntOrString are strings in Argo's JSON schema; Argo accepts both.
    return RetryStrategy(
        limit=str(cluster.retry_limit),
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=Backoff(duration=cluster.retry_backoff, factor="2", max_duration=cluster.retry_max_backoff),
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


def _template_key(step: Step) -> tuple[str, float, str, int, int | None]:
    r = step.resources
    return (step.stage, r.cpu, r.memory, r.gpus, r.deadline_s)


def _container(
    name: str, step: Step, images: dict[str, str], cluster: ClusterSpec, experiment: str
) -> Container:
    gpu = step.gpu
    return Container(
        name=name,
        image=image_for(step.stage, images, cluster),
        image_pull_policy=cluster.image_pull_policy,
        command=["python", "-m", step.job],
        args=["--config", "{{inputs.parameters.config}}"],
        inputs=[Parameter(name="config", description="URI of the step's config JSON in the store")],
        resources=_resources(step),
        retry_strategy=_retry(cluster),
        # Only non-field CREED_* variables here: StageConfig reads CREED_<FIELD> as overrides.
        env=[Env(name="CREED_LOG_FORMAT", value="json")],
        env_from=[
            ConfigMapEnvFrom(name=cluster.store_configmap),
            SecretEnvFrom(name=cluster.store_secret),
            SecretEnvFrom(name=cluster.llm_secret, optional=True),
        ],
        security_context=SecurityContext(allow_privilege_escalation=False, run_as_non_root=True),
        labels={f"{LABEL_PREFIX}/experiment": experiment, f"{LABEL_PREFIX}/stage": step.stage},
        tolerations=[
            Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
            for t in cluster.gpu_tolerations
        ]
        if gpu and cluster.gpu_tolerations
        else None,
        # IntOrString: a string, which both Argo 3.7 and 4 accept (and their JSON schemas require).
        active_deadline_seconds=str(
            step.resources.deadline_s or DEFAULT_DEADLINES.get(step.stage, 24 * 3600)
        ),
        node_selector=dict(cluster.gpu_node_selector) if gpu and cluster.gpu_node_selector else None,
        volumes=[
            EmptyDirVolume(
                name="dshm",
                medium="Memory",
                size_limit=Quantity(root=cluster.shm_size),
                mount_path="/dev/shm",
            )
        ]
        if gpu
        else None,
    )


def build_workflow(
    plan: Plan,
    images: dict[str, str] | None = None,
    cluster: ClusterSpec | None = None,
    *,
    template: bool = False,
) -> Workflow:
    """The Hera ``Workflow`` of a plan: one template per stage (and resource shape), one task per step.
    ``template=True`` gives a ``WorkflowTemplate`` named after the experiment instead, to install once
    and submit many times (``argo submit --from workflowtemplate/<name>``)."""
    cluster = cluster or ClusterSpec()
    images = images or {}
    unknown = sorted(set(images) - set(STAGES))
    if unknown:
        raise InputError(f"images: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    experiment = k8s_name(plan.experiment)
    order = topological_order(plan.steps)

    kind: type[Workflow] = WorkflowTemplate if template else Workflow
    naming: dict[str, Any] = (
        {"name": experiment} if template else {"generate_name": f"{experiment[:50].rstrip('-')}-"}
    )
    with kind(
        **naming,
        namespace=cluster.namespace,
        entrypoint="main",
        service_account_name=cluster.service_account,
        labels={f"{LABEL_PREFIX}/experiment": experiment, "app.kubernetes.io/part-of": "creed"},
        annotations={
            f"{LABEL_PREFIX}/store": store.join(plan.store, plan.experiment),
            f"{LABEL_PREFIX}/steps": str(len(plan.steps)),
            "workflows.argoproj.io/description": f"creed experiment '{plan.experiment}'",
        },
        parallelism=cluster.parallelism,
        pod_gc=PodGC(strategy="OnPodSuccess"),
        ttl_strategy=TTLStrategy(seconds_after_completion=cluster.ttl_seconds),
        security_context=PodSecurityContext(
            run_as_non_root=True, run_as_user=cluster.run_as_user, fs_group=cluster.run_as_user
        ),
    ) as wf:
        templates: dict[tuple[str, float, str, int, int | None], Container] = {}
        for s in sorted(order, key=lambda s: STAGES.index(s.stage) if s.stage in STAGES else len(STAGES)):
            key = _template_key(s)
            if key not in templates:
                # Normally one shape per stage; a second shape gets its own template name.
                n = sum(1 for k in templates if k[0] == s.stage)
                name = s.stage if n == 0 else f"{s.stage}-{n + 1}"
                templates[key] = _container(name, s, images, cluster, experiment)
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
    plan: Plan,
    images: dict[str, str] | None = None,
    cluster: ClusterSpec | None = None,
    *,
    template: bool = False,
) -> dict[str, Any]:
    """The workflow as a plain dict (what ``kubectl``/the Argo API receive), checked by
    :func:`check_workflow`: a renderer bug fails here, not on the cluster."""
    out: dict[str, Any] = build_workflow(plan, images, cluster, template=template).to_dict()
    problems = check_workflow(out)
    if problems:
        raise InputError("the rendered workflow is not valid:\n  " + "\n  ".join(problems))
    return out


def render_yaml(
    plan: Plan,
    images: dict[str, str] | None = None,
    cluster: ClusterSpec | None = None,
    *,
    template: bool = False,
) -> str:
    """Stable YAML of the workflow: the same plan and options give the same bytes."""
    return yaml.safe_dump(render_dict(plan, images, cluster, template=template), sort_keys=False, width=120)


# ---------------------------------------------------------------------------------------------
# Semantic checks (what Argo's JSON schema cannot say)
# ---------------------------------------------------------------------------------------------
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Stages whose pods may ask for GPUs.
GPU_STAGES = ("train", "eval")
#: Environment variables a template may set with a literal value; everything else comes from
#: Secrets/ConfigMaps by reference (so no credential can be rendered into the YAML).
LITERAL_ENV = {"CREED_LOG_FORMAT"}
_SECRETISH = re.compile(
    r"(?i)(sk-[a-z0-9]{8,}|aws_secret|secret_access_key|api[_-]?key\s*[:=]|password\s*[:=])"
)


def check_workflow(doc: dict[str, Any]) -> list[str]:
    """Problems Argo or Kubernetes would reject (or that break creed's rules), as readable lines:
    names that are not DNS labels (at most 63 characters), a missing entrypoint, a ``depends`` that
    names no task, a task whose template does not exist, GPUs outside train/eval, literal
    environment values other than :data:`LITERAL_ENV`, and anything that looks like a secret."""
    problems: list[str] = []
    spec = doc.get("spec", {})
    meta = doc.get("metadata", {})
    name = meta.get("name") or str(meta.get("generateName", "")).rstrip("-")
    if not name or not _DNS_LABEL.match(name) or len(name) > 63 - (0 if meta.get("name") else 5):
        problems.append(f"metadata: workflow name {name!r} is not a DNS label short enough for Argo")
    templates = {t.get("name"): t for t in spec.get("templates", [])}
    entry = spec.get("entrypoint")
    if entry not in templates:
        problems.append(f"spec.entrypoint {entry!r} names no template")
    for tname, t in templates.items():
        if not tname or not _DNS_LABEL.match(tname) or len(tname) > 63:
            problems.append(f"template {tname!r}: not a DNS label of at most 63 characters")
        tasks = (t.get("dag") or {}).get("tasks", [])
        task_names = {k.get("name") for k in tasks}
        for task in tasks:
            tn = task.get("name", "")
            if not _DNS_LABEL.match(tn) or len(tn) > 63:
                problems.append(f"task {tn!r}: not a DNS label of at most 63 characters")
            if task.get("template") not in templates:
                problems.append(f"task {tn!r}: template {task.get('template')!r} does not exist")
            for dep in re.findall(r"[a-z0-9][-a-z0-9.]*", task.get("depends") or ""):
                if dep.split(".")[0] not in task_names:
                    problems.append(f"task {tn!r}: depends on {dep!r}, which is not a task of the DAG")
        container = t.get("container")
        if container:
            limits = (container.get("resources") or {}).get("limits") or {}
            if (
                GPU_RESOURCE in limits
                and str(t.get("metadata", {}).get("labels", {}).get(f"{LABEL_PREFIX}/stage"))
                not in GPU_STAGES
            ):
                problems.append(f"template {tname!r}: asks for GPUs but is not a train/eval step")
            for env in container.get("env", []) or []:
                if "value" in env and env.get("name") not in LITERAL_ENV:
                    problems.append(
                        f"template {tname!r}: env {env.get('name')} has a literal value; "
                        "pass it through a Secret or ConfigMap"
                    )
    text = json.dumps(doc)
    if _SECRETISH.search(text):
        problems.append("the workflow contains something that looks like a secret value")
    return problems


def step_configs(plan: Plan) -> dict[str, str]:
    """config URI -> the JSON written there before submit (the same bytes as the local backend)."""
    return {s.config_uri: s.config_json() for s in plan.steps}
