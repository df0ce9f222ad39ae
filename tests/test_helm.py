"""The Helm chart (helm/creed), rendered and linted by the official Helm engine (helm-python-sdk binds
Helm's Go SDK), every rendered object checked against the Kubernetes schemas (kubernetes-validate),
and its names checked against what the rendered workflow expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from tests.helpers.argo_schema import schema_errors  # noqa: E402
from tests.helpers.pod_security import restricted_problems  # noqa: E402
from workflows import spec as spec_mod  # noqa: E402
from workflows.argo import RETRY_EXPRESSION, check_workflow, render_dict  # noqa: E402
from workflows.plan import build_plan  # noqa: E402
from workflows.spec import ClusterSpec  # noqa: E402

CHART = Path(__file__).resolve().parents[1] / "helm" / "creed"
KUBE = "1.33.0"
NS = "research"


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values or {}, name="creed", namespace=NS, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values or {}, name="creed", namespace=NS)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def validate_all(docs: list[dict[str, Any]]) -> None:
    """Core objects against the Kubernetes schemas; Argo objects against Argo's (every claimed version)."""
    for d in docs:
        if d["apiVersion"].startswith("argoproj.io/"):
            assert schema_errors(d) == [] and check_workflow(d) == [], d["metadata"]["name"]
        else:
            kubernetes_validate.validate(d, KUBE, strict=True)
            for pod in _pod_specs(d):
                # every pod the chart creates may run in a namespace enforcing "restricted"
                where = f"{d['kind']}/{d['metadata']['name']}"
                assert restricted_problems({"spec": pod}) == [], where


def _pod_specs(d: dict[str, Any]) -> list[dict[str, Any]]:
    spec = d.get("spec", {})
    if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [spec["template"]["spec"]]
    return [spec] if d["kind"] == "Pod" else []


MINIO = {"minio": {"enabled": True, "rootPassword": "correct-horse-42"}}


@pytest.mark.parametrize(
    "values",
    [
        {},
        MINIO,
        {
            "store": {"credentials": {"accessKeyId": "AKIA", "secretAccessKey": "shh"}},
            "llm": {"apiKeys": {"OPENAI_API_KEY": "sk"}},
        },
    ],
    ids=["default", "minio", "credentials"],
)
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NS, kube_version="v1.33.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_a_broken_chart(tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "creed"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "configmap.yaml").write_text("data: {{ .Values.nope.deeper }}\n")
    report = helm.lint(broken, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


def test_default_render_prepares_namespace_without_secrets() -> None:
    docs = render()
    validate_all(docs)
    objs = by_kind(docs)
    assert set(objs) == {
        ("ServiceAccount", "creed-workflow"),
        ("Role", "creed-workflow"),
        ("RoleBinding", "creed-workflow"),
        ("ConfigMap", "creed-store"),
        ("ServiceAccount", "creed-submitter"),
        ("Role", "creed-submitter"),
        ("RoleBinding", "creed-submitter"),
        ("Secret", "creed-submitter.service-account-token"),
        ("ConfigMap", "artifact-repositories"),
        ("ConfigMap", "creed-memo"),
        ("Role", "creed-memo-controller"),
        ("RoleBinding", "creed-memo-controller"),
    }  # no WorkflowTemplate: this cluster (helm's default capabilities) serves no Argo CRDs
    token = objs[("Secret", "creed-submitter.service-account-token")]
    assert token["type"] == "kubernetes.io/service-account-token" and "data" not in token
    cm = objs[("ConfigMap", "creed-store")]["data"]
    assert cm == {"AWS_DEFAULT_REGION": "us-east-1"}  # nothing that no pod reads
    rules = objs[("Role", "creed-workflow")]["rules"]
    assert rules == [  # what the 3.7/4.x executor needs; no pods patch
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
    ]
    binding = objs[("RoleBinding", "creed-workflow")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "creed-workflow", "namespace": NS}]
    assert "was NOT created" in notes()


def test_chart_names_match_the_workflow() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    opts = ClusterSpec()
    assert values["serviceAccount"]["name"] == opts.service_account
    assert values["store"]["configMapName"] == opts.store_configmap
    assert values["store"]["credentials"]["secretName"] == opts.store_secret
    assert values["llm"]["secretName"] == opts.llm_secret


def test_credentials_and_llm_keys_create_secrets_only_when_given() -> None:
    docs = render(
        {
            "store": {
                "endpoint": "https://s3.example.com",
                "credentials": {"accessKeyId": "AKIA1", "secretAccessKey": "shh"},
            },
            "llm": {"apiKeys": {"OPENAI_API_KEY": "sk-1"}},
        }
    )
    validate_all(docs)
    objs = by_kind(docs)
    assert objs[("Secret", "creed-store-credentials")]["stringData"] == {
        "AWS_ACCESS_KEY_ID": "AKIA1",
        "AWS_SECRET_ACCESS_KEY": "shh",
    }
    assert objs[("Secret", "creed-llm")]["stringData"] == {"OPENAI_API_KEY": "sk-1"}
    assert objs[("ConfigMap", "creed-store")]["data"]["AWS_ENDPOINT_URL"] == "https://s3.example.com"
    # one key alone is not enough to create a half-filled Secret
    half = by_kind(render({"store": {"credentials": {"accessKeyId": "AKIA1"}}}))
    assert ("Secret", "creed-store-credentials") not in half


def test_minio_for_kind() -> None:
    docs = render(MINIO)
    validate_all(docs)
    objs = by_kind(docs)
    for kind in ("Deployment", "Service", "PersistentVolumeClaim", "Secret"):
        assert (kind, "creed-minio") in objs
    job = objs[("Job", "creed-minio-bucket")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert "store/creed" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    endpoint = objs[("ConfigMap", "creed-store")]["data"]["AWS_ENDPOINT_URL"]
    assert endpoint == f"http://creed-minio.{NS}.svc:9000"
    creds = objs[("Secret", "creed-store-credentials")]["stringData"]
    assert creds == {"AWS_ACCESS_KEY_ID": "creed", "AWS_SECRET_ACCESS_KEY": "correct-horse-42"}
    pod = objs[("Deployment", "creed-minio")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert ":latest" not in pod["containers"][0]["image"]
    no_pvc = by_kind(render({"minio": {**MINIO["minio"], "persistence": {"size": ""}}}))
    assert ("PersistentVolumeClaim", "creed-minio") not in no_pvc


@pytest.mark.parametrize(
    ("password", "message"), [("", "minio.rootPassword is required"), ("short", "at least 8 characters")]
)
def test_minio_needs_a_real_password(password: str, message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render({"minio": {"enabled": True, "rootPassword": password}})


def test_kubernetes_validate_catches_a_bad_object() -> None:
    cm = by_kind(render())[("ConfigMap", "creed-store")]
    bad = {**cm, "data": {"AWS_DEFAULT_REGION": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE, strict=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"store": {"bucket": "Bad_Bucket"}}, "/store/bucket"),
        ({"store": {"endpint": "https://s3"}}, "'endpint' not allowed"),
        ({"llm": {"apiKeys": {"bad-key": "x"}}}, "bad-key"),
        ({"gpu": {"shmSize": "lots"}}, "/gpu/shmSize"),
        (
            {
                "workflowTemplate": {
                    "resources": {"train": {"cpu": "4", "memory": "1Gi", "gpus": -1, "deadlineSeconds": 60}}
                }
            },
            "gpus",
        ),
    ],
)
def test_values_schema_rejects_mistakes(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        render(values)
    assert any(message in e for e in helm.lint(CHART, values, strict=True)["errors"])


#: The kind profile that infra/kind/up.sh installs (MinIO in the cluster, images loaded locally).
KIND = {**MINIO, "store": {"bucket": "creed"}, "images": {"pullPolicy": "Never"}}


def test_kind_profile_renders_and_lints() -> None:
    report = helm.lint(CHART, KIND, strict=True, namespace=NS, kube_version="v1.33.0")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    docs = render({**KIND, "workflowTemplate": {"force": True}})  # up.sh installs Argo's CRDs first
    validate_all(docs)
    wt = by_kind(docs)[("WorkflowTemplate", "creed-step")]
    tpls = {t["name"]: t for t in wt["spec"]["templates"]}
    assert all(t["container"]["imagePullPolicy"] == "Never" for t in tpls.values())
    up = (CHART.parents[1] / "infra" / "kind" / "up.sh").read_text()
    assert "--set minio.enabled=true" in up and "--set images.pullPolicy=Never" in up  # the same profile


def test_step_template_runs_each_stage_as_the_rendered_workflow_does() -> None:
    wt = by_kind(
        render(
            {"gpu": {"nodeSelector": {"nvidia.com/gpu.present": "true"}}, "workflowTemplate": {"force": True}}
        )
    )[("WorkflowTemplate", "creed-step")]
    gpus = ["resources.train.gpus=1", "resources.eval.gpus=1"]  # as on a cluster
    plan = build_plan(
        spec_mod.load(CHART.parents[1] / "experiments" / "demo.yaml", ["store=s3://b/p", *gpus])
    )
    ours = {t["name"]: t for t in wt["spec"]["templates"]}
    theirs = {
        t["name"]: t for t in render_dict(plan, cluster=ClusterSpec(image_tag="0.1.0"))["spec"]["templates"]
    }
    for stage in ("generate", "filter", "mix", "train", "eval", "analyze"):
        a, b = ours[stage]["container"], theirs[stage]["container"]
        for key in ("image", "command", "args", "env", "envFrom", "securityContext"):
            assert a[key] == b[key], (stage, key)
        assert (
            a["resources"]["requests"]["ephemeral-storage"] == b["resources"]["requests"]["ephemeral-storage"]
        )
        assert ours[stage]["podSpecPatch"] == theirs[stage]["podSpecPatch"]
        assert ours[stage]["retryStrategy"]["expression"] == RETRY_EXPRESSION
        gpu = stage in ("train", "eval")
        assert ("nvidia.com/gpu" in a["resources"]["limits"]) is gpu
        assert (ours[stage].get("nodeSelector") == {"nvidia.com/gpu.present": "true"}) is gpu
        assert bool(ours[stage].get("volumes")) is gpu
    assert ours["train"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert wt["spec"]["securityContext"] == theirs_doc_security()
    off = by_kind(render({"workflowTemplate": {"enabled": False, "force": True}}))
    assert ("WorkflowTemplate", "creed-step") not in off


def theirs_doc_security() -> dict[str, Any]:
    plan = build_plan(spec_mod.load(CHART.parents[1] / "experiments" / "demo.yaml", ["store=s3://b/p"]))
    return dict(render_dict(plan)["spec"]["securityContext"])


def test_step_template_is_guarded_on_argo_crds() -> None:
    """`helm install` on a cluster without Argo Workflows' CRDs must not fail on the WorkflowTemplate."""
    text = (CHART / "templates" / "workflowtemplate.yaml").read_text()
    assert '.Capabilities.APIVersions.Has "argoproj.io/v1alpha1/WorkflowTemplate"' in text
    assert ("WorkflowTemplate", "creed-step") not in by_kind(render())
    forced = by_kind(render({"workflowTemplate": {"force": True}}))
    assert ("WorkflowTemplate", "creed-step") in forced
    validate_all(list(forced.values()))


def test_step_template_pods_meet_the_restricted_profile() -> None:
    from tests.workflows.test_argo import pod_of

    wt = by_kind(render({"workflowTemplate": {"force": True}}))[("WorkflowTemplate", "creed-step")]
    for t in wt["spec"]["templates"]:
        pod = pod_of(wt, t)
        kubernetes_validate.validate(pod, KUBE, strict=True)
        assert restricted_problems(pod) == [], t["name"]


def test_vllm_variant_of_the_eval_image() -> None:
    wt = by_kind(render({"workflowTemplate": {"force": True}, "images": {"vllm": True, "tag": "abc"}}))[
        ("WorkflowTemplate", "creed-step")
    ]
    images = {t["name"]: t["container"]["image"] for t in wt["spec"]["templates"]}
    assert (
        images["eval"] == "ghcr.io/creed/creed-eval:abc-vllm"
        and images["train"] == "ghcr.io/creed/creed-train:abc"
    )


def test_submitter_can_retry_and_the_ui_identity_can_be_bound() -> None:
    """Retry deletes the failed pods with the caller's identity: without pods delete, `creed retry` and
    Retry in the UI are refused."""
    extra = {"kind": "ServiceAccount", "name": "argo-server", "namespace": "argo"}
    objs = by_kind(render({"submitter": {"extraSubjects": [extra, {"kind": "Group", "name": "lab"}]}}))
    rules = objs[("Role", "creed-submitter")]["rules"]
    pods = next(r for r in rules if r["resources"] == ["pods"])
    assert {"delete", "patch", "get", "list"} <= set(pods["verbs"])
    wf = next(r for r in rules if r["resources"] == ["workflows"])
    assert {"create", "get", "update", "patch"} <= set(wf["verbs"])
    subjects = objs[("RoleBinding", "creed-submitter")]["subjects"]
    assert subjects == [
        {"kind": "ServiceAccount", "name": "creed-submitter", "namespace": NS},
        extra,
        {"kind": "Group", "name": "lab", "apiGroup": "rbac.authorization.k8s.io"},
    ]
    validate_all(list(objs.values()))


def test_artifact_repository_archives_logs_on_the_store_bucket() -> None:
    def repo(values: dict[str, Any]) -> dict[str, Any]:
        cm = by_kind(render(values))[("ConfigMap", "artifact-repositories")]
        assert cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"] == "creed"
        return dict(yaml.safe_load(cm["data"]["creed"]))

    minio = repo(MINIO)
    assert minio["archiveLogs"] is True
    assert (
        minio["s3"]["bucket"] == "creed"
        and minio["s3"]["keyFormat"] == "experiments/_argo/{{workflow.name}}/{{pod.name}}"
    )
    assert (minio["s3"]["endpoint"], minio["s3"]["insecure"]) == (f"creed-minio.{NS}.svc:9000", True)
    assert minio["s3"]["accessKeySecret"] == {"name": "creed-store-credentials", "key": "AWS_ACCESS_KEY_ID"}
    gcs = repo({"store": {"endpoint": "https://storage.googleapis.com", "bucket": "lab", "prefix": ""}})
    assert (gcs["s3"]["endpoint"], gcs["s3"]["insecure"], gcs["s3"]["keyFormat"]) == (
        "storage.googleapis.com",
        False,
        "_argo/{{workflow.name}}/{{pod.name}}",
    )
    aws = repo({"artifactRepository": {"useSDKCreds": True}})
    assert aws["s3"]["endpoint"] == "s3.amazonaws.com" and aws["s3"]["useSDKCreds"] is True
    assert "accessKeySecret" not in aws["s3"]
    assert ("ConfigMap", "artifact-repositories") not in by_kind(
        render({"artifactRepository": {"enabled": False}})
    )


def test_memo_cache_and_gpu_semaphore_match_the_spec_defaults() -> None:
    objs = by_kind(render({"gpuSemaphore": {"limit": 8}}))
    opts = ClusterSpec()
    memo = objs[("ConfigMap", opts.memo_configmap)]
    assert (
        memo["metadata"]["labels"]["workflows.argoproj.io/configmap-type"] == "Cache"
    )  # else Argo refuses it
    role = objs[("Role", "creed-memo-controller")]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["creed-memo"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    assert objs[("RoleBinding", "creed-memo-controller")]["subjects"] == [
        {"kind": "ServiceAccount", "name": "argo", "namespace": "argo"}
    ]
    sem = objs[("ConfigMap", "creed-semaphores")]
    assert sem["data"] == {"gpu": "8"}
    assert ClusterSpec(gpu_semaphore="creed-semaphores/gpu").gpu_semaphore == "creed-semaphores/gpu"
    assert ("ConfigMap", "creed-semaphores") not in by_kind(render())
    validate_all(list(objs.values()))
