"""The Argo backend: render a :class:`~workflows.plan.Plan` to an Argo ``Workflow`` with Hera.

One Container template per stage (its image, resources and retry policy), one DAG task per step
with the plan's edges. Every task runs the same command as the local backend,
``python -m jobs.<stage> --config <config_uri>``; the config file is written to the store at submit
time (``workflows.argo_cli``), so the workflow itself carries only URIs, never data or secrets.

Store credentials reach the pods through ``envFrom`` of a Kubernetes Secret and the endpoint through
a ConfigMap, both created by the Helm chart (``helm/creed``); a secret value never appears in the
rendered YAML. Exit 75 (``TransientError``, SIGTERM) and a lost pod are retried (:data:`RETRY_EXPRESSION`);
2 (bad input), bugs and a step past its deadline are not. Steps finished in an earlier workflow are
memoized (no pod); each step's manifest is an output artifact the UI links.

    creed render experiments/demo.yaml --store s3://bucket/experiments -o demo-workflow.yaml
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from typing import Any

from hera.workflows import (
    DAG,
    ConfigMapEnvFrom,
    Container,
    EmptyDirVolume,
    Env,
    NoneArchiveStrategy,
    Parameter,
    Resources,
    RetryStrategy,
    S3Artifact,
    SecretEnvFrom,
    Task,
    Workflow,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Backoff,
    Cache,
    Capabilities,
    ConfigMapKeySelector,
    LocalObjectReference,
    Memoize,
    PodGC,
    PodSecurityContext,
    Quantity,
    SeccompProfile,
    SecurityContext,
    SemaphoreRef,
    Synchronization,
    Toleration,
    TTLStrategy,
    ValueFrom,
)

from jobs.common import manifest, store
from jobs.common.errors import EXIT_TRANSIENT, InputError
from jobs.common.stage import OUTPUTS_DIR_ENV
from workflows.plan import STAGE_IMAGE, STAGES, Plan, Step, k8s_name, topological_order
from workflows.spec import ClusterSpec

IMAGE_REPO = "ghcr.io/creed"
GPU_RESOURCE = "nvidia.com/gpu"
#: Messages of an attempt lost with its pod (Argo's ``lastRetry.message``): graceful node shutdown
#: (spot VMs, Karpenter: status Failed), a pod deleted or drained (status Error, message "pod
#: deleted"), kubelet eviction under node pressure ("The node was low on resource: ..."), preemption,
#: and a pod rejected at admission after a node restart. Matched case-insensitively.
LOST_POD_MESSAGES = (
    "imminent node shutdown",
    "node is shutting down",
    "node was low on resource",
    "pod deleted",
    "evict",
    "preempt",
    "pod was rejected",
)
#: Argo expression (expr-lang): retry a step when the job said "transient" (exit 75: a store or
#: endpoint that is briefly down, or SIGTERM), when the pod was lost (status Error, or one of
#: :data:`LOST_POD_MESSAGES`), never after its deadline ("Pod was active on the node longer than the
#: specified deadline"). All are safe because a rerun skips completed work and training resumes from
#: its newest checkpoint. Exit 2 (bad input), 1 (a bug) and 137 (OOM) are not retried.
RETRY_EXPRESSION = (
    '!(lastRetry.message contains "deadline") && ('
    f"asInt(lastRetry.exitCode) == {EXIT_TRANSIENT}"
    ' || lastRetry.status == "Error"'
    f' || lastRetry.message matches "(?i)({"|".join(LOST_POD_MESSAGES)})")'
)
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
#: Where a pod leaves its outputs for Argo to collect (``$CREED_OUTPUTS_DIR``, see jobs.common.stage).
OUTPUTS_DIR = "/tmp/creed-outputs"
#: The workflow parameter the memoization keys start with: a digest of the staged input files, which
#: ``creed submit`` sets and ``creed upload`` prints. A new workflow after an input file changed gets
#: new keys (its steps run); a resubmitted one keeps them (its finished steps cost no pod).
INPUTS_PARAM = "inputs-digest"
#: Tag suffix of the eval image built with vLLM (``WITH_VLLM=1 images/build.sh``).
VLLM_SUFFIX = "-vllm"


def default_version() -> str:
    try:
        return metadata.version("creed")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


def commit_tag() -> tuple[str, bool]:
    """The default image tag: the commit of this checkout (12 hex digits), and whether the tree has
    uncommitted changes (then the images of that tag do not contain them). Without git: the version."""
    code = manifest.code_version()
    if code.commit:
        return code.commit[:12], bool(code.dirty)
    return default_version(), False


def image_tag(cluster: ClusterSpec) -> str:
    """The tag of the stage images: the spec's ``cluster.image_tag``, else :func:`commit_tag`."""
    return cluster.image_tag or commit_tag()[0]


def _vllm(step: Step) -> bool:
    return step.stage == "eval" and getattr(step.config, "engine", "") == "vllm"


def image_for(stage: str, images: dict[str, str], cluster: ClusterSpec, *, vllm: bool = False) -> str:
    """The spec's ``images.<stage>`` if set, else ``<repo>/creed-<stage>:<tag>`` (``<tag>-vllm`` for an
    eval step with ``engine: vllm``); a stage without an image of its own (``STAGE_IMAGE``: check)
    runs in its host stage's image."""
    host = STAGE_IMAGE.get(stage, stage)
    return (
        images.get(stage)
        or images.get(host)
        or (f"{cluster.image_repo}/creed-{host}:{image_tag(cluster)}{VLLM_SUFFIX if vllm else ''}")
    )


def _retry(cluster: ClusterSpec) -> RetryStrategy:
    # Quantities/IntOrString are strings in Argo's JSON schema; Argo accepts both.
    return RetryStrategy(
        limit=str(cluster.retry_limit),
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=Backoff(duration=cluster.retry_backoff, factor="2", max_duration=cluster.retry_max_backoff),
    )


def disk(step: Step) -> str:
    """The ephemeral-storage request: what the spec says, else 30Gi for GPU steps (models are
    downloaded into the container), 4Gi otherwise. A request, not a limit: exceeding a limit is an
    eviction that no retry can fix."""
    return step.resources.disk or ("30Gi" if step.gpu else "4Gi")


def _resources(step: Step) -> Resources:
    r = step.resources
    # Memory limit = request: an OOM kill names the step instead of starving its neighbours.
    return Resources(
        cpu_request=f"{r.cpu:g}",
        memory_request=r.memory,
        memory_limit=r.memory,
        ephemeral_request=disk(step),
        gpus=r.gpus or None,
        gpu_flag=GPU_RESOURCE,
    )


def _template_key(step: Step) -> tuple[Any, ...]:
    r = step.resources
    return (step.stage, r.cpu, r.memory, r.gpus, r.deadline_s, disk(step), _vllm(step))


def container_security() -> SecurityContext:
    """The container fields of the Pod Security "restricted" profile (with the pod's below)."""
    return SecurityContext(
        allow_privilege_escalation=False,
        run_as_non_root=True,
        capabilities=Capabilities(drop=["ALL"]),
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def pod_security(cluster: ClusterSpec) -> PodSecurityContext:
    return PodSecurityContext(
        run_as_non_root=True,
        run_as_user=cluster.run_as_user,
        run_as_group=cluster.run_as_user,
        fs_group=cluster.run_as_user,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def _container(
    name: str, step: Step, images: dict[str, str], cluster: ClusterSpec, experiment: str
) -> Container:
    gpu = step.gpu
    inputs = [Parameter(name="config", description="URI of the step's config JSON in the store")]
    outputs: list[Any] = []
    memoize = None
    if cluster.memoize:
        inputs.append(Parameter(name="memo-key", description="the step and its config, for memoization"))
        # An output is what makes Argo memoize a step: the digest of what it wrote.
        outputs.append(
            Parameter(name="digest", value_from=ValueFrom(path=f"{OUTPUTS_DIR}/digest", default=""))
        )
        memoize = Memoize(
            key=f"{{{{workflow.parameters.{INPUTS_PARAM}}}}}-{{{{inputs.parameters.memo-key}}}}",
            max_age=cluster.memo_max_age,
            cache=Cache(config_map=LocalObjectReference(name=cluster.memo_configmap)),
        )
    if cluster.artifacts:
        inputs.append(
            Parameter(name="manifest-key", description="the step's manifest, as a key in the bucket")
        )
        # Key-only: the bucket and credentials are Argo's artifact repository (the chart's, on the
        # store's bucket); the same bytes the step wrote, so the UI links the step's manifest.
        outputs.append(
            S3Artifact(
                name="manifest",
                path=f"{OUTPUTS_DIR}/manifest.json",
                key="{{inputs.parameters.manifest-key}}",
                archive=NoneArchiveStrategy(),
                optional=True,
            )
        )
    return Container(
        name=name,
        image=image_for(step.stage, images, cluster, vllm=_vllm(step)),
        image_pull_policy=cluster.image_pull_policy,
        command=["python", "-m", step.job],
        args=["--config", "{{inputs.parameters.config}}"],
        inputs=inputs,
        outputs=outputs or None,
        memoize=memoize,
        resources=_resources(step),
        retry_strategy=_retry(cluster),
        # Only non-field CREED_* variables here: StageConfig reads CREED_<FIELD> as overrides.
        env=[Env(name="CREED_LOG_FORMAT", value="json"), Env(name=OUTPUTS_DIR_ENV, value=OUTPUTS_DIR)],
        env_from=[
            ConfigMapEnvFrom(name=cluster.store_configmap),
            SecretEnvFrom(name=cluster.store_secret),
            SecretEnvFrom(name=cluster.llm_secret, optional=True),
        ],
        security_context=container_security(),
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
        # Time to stop cleanly after SIGTERM (train saves a checkpoint) before the kubelet's SIGKILL.
        pod_spec_patch=json.dumps({"terminationGracePeriodSeconds": cluster.termination_grace_s}),
        # GPU steps land on GPU nodes by their GPU request and tolerations; a selector only if asked.
        node_selector=dict(cluster.gpu_node_selector) if gpu and cluster.gpu_node_selector else None,
        synchronization=_gpu_semaphore(cluster) if gpu else None,
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


def _gpu_semaphore(cluster: ClusterSpec) -> Synchronization | None:
    """One permit per GPU step, shared by every workflow of the namespace that names the same key."""
    if not cluster.gpu_semaphore:
        return None
    name, _, key = cluster.gpu_semaphore.partition("/")
    return Synchronization(
        semaphores=[SemaphoreRef(config_map_key_ref=ConfigMapKeySelector(name=name, key=key))]
    )


def memo_keys(plan: Plan) -> dict[str, str]:
    """step -> its memoization key (after the inputs digest): the step's name and a digest of its
    config hash and of its upstream steps' keys, so a changed config reruns it and all below it."""
    keys: dict[str, str] = {}
    for s in topological_order(plan.steps):
        blob = json.dumps([s.config_hash(), sorted(keys[d] for d in s.depends)])
        keys[s.name] = f"{s.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    return keys


def artifact_key(uri: str) -> str:
    """An ``s3://bucket/key`` URI as a key-only artifact key (the bucket is the repository's)."""
    return uri.split("/", 3)[3] if store.is_s3(uri) and uri.count("/") >= 3 else uri.lstrip("/")


def build_workflow(
    plan: Plan,
    images: dict[str, str] | None = None,
    cluster: ClusterSpec | None = None,
    *,
    template: bool = False,
    inputs_digest: str | None = None,
) -> Workflow:
    """The Hera ``Workflow`` of a plan: one template per stage (and resource shape), one task per step.
    ``template=True`` gives a ``WorkflowTemplate`` named after the experiment instead, to install once
    and submit many times (``argo submit --from workflowtemplate/<name>``). With memoization on, the
    workflow takes the parameter ``inputs-digest`` (``creed upload`` prints it; ``creed submit`` sets it)."""
    cluster = cluster or ClusterSpec()
    images = images or {}
    unknown = sorted(set(images) - set(STAGES))
    if unknown:
        raise InputError(f"images: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    experiment = k8s_name(plan.experiment)
    order = topological_order(plan.steps)
    keys = memo_keys(plan)

    kind: type[Workflow] = WorkflowTemplate if template else Workflow
    naming: dict[str, Any] = (
        {"name": experiment} if template else {"generate_name": f"{experiment[:50].rstrip('-')}-"}
    )
    arguments = None
    if cluster.memoize:
        what = "digest of the staged input files: the output of `creed upload SPEC`"
        # No value in a rendered file: `argo submit` without -p is refused, not run unstaged.
        digest = (
            Parameter(name=INPUTS_PARAM, description=what, value=inputs_digest)
            if inputs_digest
            else Parameter(name=INPUTS_PARAM, description=what)
        )
        arguments = [digest]
    with kind(
        **naming,
        namespace=cluster.namespace,
        entrypoint="main",
        service_account_name=cluster.service_account,
        labels={f"{LABEL_PREFIX}/experiment": experiment, "app.kubernetes.io/part-of": "creed"},
        annotations={
            f"{LABEL_PREFIX}/store": store.join(plan.store, plan.experiment),
            f"{LABEL_PREFIX}/steps": str(len(plan.steps)),
            f"{LABEL_PREFIX}/image-tag": image_tag(cluster),
            "workflows.argoproj.io/description": f"creed experiment '{plan.experiment}'",
        },
        arguments=arguments,
        parallelism=cluster.parallelism,
        active_deadline_seconds=cluster.workflow_deadline_s,
        pod_gc=PodGC(strategy="OnPodSuccess"),
        ttl_strategy=TTLStrategy(seconds_after_completion=cluster.ttl_seconds),
        security_context=pod_security(cluster),
    ) as wf:
        templates: dict[tuple[Any, ...], Container] = {}
        for s in sorted(order, key=lambda s: STAGES.index(s.stage) if s.stage in STAGES else len(STAGES)):
            key = _template_key(s)
            if key not in templates:
                # Normally one shape per stage; a second shape gets its own template name.
                n = sum(1 for k in templates if k[0] == s.stage)
                name = s.stage if n == 0 else f"{s.stage}-{n + 1}"
                templates[key] = _container(name, s, images, cluster, experiment)
        # failFast off: one step that runs out of retries does not stop the independent rest of the grid.
        with DAG(name="main", fail_fast=False):
            for s in plan.steps:
                args = {"config": s.config_uri}
                if cluster.memoize:
                    args["memo-key"] = keys[s.name]
                if cluster.artifacts:
                    args["manifest-key"] = artifact_key(s.manifest)
                Task(
                    name=s.name,
                    template=templates[_template_key(s)],
                    arguments=args,
                    depends=" && ".join(s.depends) if s.depends else None,
                )
    return wf


def checked(
    plan: Plan,
    images: dict[str, str] | None = None,
    cluster: ClusterSpec | None = None,
    *,
    template: bool = False,
    inputs_digest: str | None = None,
) -> Workflow:
    """:func:`build_workflow`, then :func:`check_workflow` on the result: a renderer bug (or a secret)
    fails here, before anything reaches a cluster. ``creed render``, ``creed submit`` and the hera
    entry module all go through it."""
    wf = build_workflow(plan, images, cluster, template=template, inputs_digest=inputs_digest)
    problems = check_workflow(wf.to_dict())
    if problems:
        raise InputError("the rendered workflow is not valid:\n  " + "\n  ".join(problems))
    return wf


def render_dict(
    plan: Plan,
    images: dict[str, str] | None = None,
    cluster: ClusterSpec | None = None,
    *,
    template: bool = False,
    inputs_digest: str | None = None,
) -> dict[str, Any]:
    """The workflow as a plain dict (what ``kubectl``/the Argo API receive), checked."""
    out: dict[str, Any] = checked(
        plan, images, cluster, template=template, inputs_digest=inputs_digest
    ).to_dict()
    return out


def render_yaml(
    plan: Plan,
    images: dict[str, str] | None = None,
    cluster: ClusterSpec | None = None,
    *,
    template: bool = False,
    inputs_digest: str | None = None,
) -> str:
    """Stable YAML of the workflow, exactly as ``hera generate yaml`` writes it (Hera's ``to_yaml``):
    the same plan and options give the same bytes."""
    text: str = checked(plan, images, cluster, template=template, inputs_digest=inputs_digest).to_yaml()
    return text


# ---------------------------------------------------------------------------------------------
# Semantic checks (what Argo's JSON schema cannot say)
# ---------------------------------------------------------------------------------------------
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Stages whose pods may ask for GPUs.
GPU_STAGES = ("train", "eval")
#: Environment variables a template may set with a literal value; everything else comes from
#: Secrets/ConfigMaps by reference (so no credential can be rendered into the YAML).
LITERAL_ENV = {"CREED_LOG_FORMAT", OUTPUTS_DIR_ENV}
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
