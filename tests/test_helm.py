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

from workflows.argo import ArgoOptions  # noqa: E402

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
    for d in docs:
        kubernetes_validate.validate(d, KUBE, strict=True)


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
    }
    token = objs[("Secret", "creed-submitter.service-account-token")]
    assert token["type"] == "kubernetes.io/service-account-token" and "data" not in token
    cm = objs[("ConfigMap", "creed-store")]["data"]
    assert cm == {"AWS_DEFAULT_REGION": "us-east-1", "CREED_STORE_URI": "s3://creed/experiments"}
    rules = objs[("Role", "creed-workflow")]["rules"]
    assert {
        "apiGroups": ["argoproj.io"],
        "resources": ["workflowtaskresults"],
        "verbs": ["create", "patch"],
    } in rules
    binding = objs[("RoleBinding", "creed-workflow")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "creed-workflow", "namespace": NS}]
    assert "was NOT created" in notes()


def test_chart_names_match_the_workflow() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    opts = ArgoOptions()
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
    ],
)
def test_values_schema_rejects_mistakes(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        render(values)
    assert any(message in e for e in helm.lint(CHART, values, strict=True)["errors"])
