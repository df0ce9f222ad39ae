"""The Argo backend: the rendered workflow is valid Argo, mirrors the plan, keeps secrets out, retries
what is transient (exit 75, a lost pod) and nothing else, and ``creed upload/submit/status/retry/logs``
talk to an Argo server (a fake one on loopback) and the store.

Regenerate the committed example with ``CREED_REGEN=1 pytest tests/workflows/test_argo.py``.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from jobs.common import store
from jobs.common.errors import InputError
from tests.helpers.argo_schema import schema_errors as _errors
from tests.helpers.pod_security import restricted_problems
from workflows import argo_cli, rendered
from workflows import spec as spec_mod
from workflows.argo import (
    RETRY_EXPRESSION,
    check_workflow,
    image_tag,
    render_dict,
    render_yaml,
)
from workflows.cli import main
from workflows.plan import Plan, build_plan
from workflows.spec import ClusterSpec

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo.yaml"
GPU = ["resources.train.gpus=1", "resources.eval.gpus=1"]


def _plan(store_uri: str = "s3://creed-demo/experiments", extra: list[str] | None = None) -> tuple[Plan, Any]:
    spec = spec_mod.load(DEMO, [f"store={store_uri}", *GPU, *(extra or [])])
    return build_plan(spec), spec


def _templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def _tasks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in _templates(doc)["main"]["dag"]["tasks"]}


@pytest.fixture(scope="module")
def demo() -> tuple[Plan, dict[str, Any]]:
    plan, spec = _plan()
    return plan, render_dict(plan, dict(spec.images))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def test_demo_workflow_is_valid_against_argo_schema(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    assert _errors(doc) == []
    assert doc["kind"] == "Workflow" and doc["metadata"]["generateName"] == "demo-"
    assert doc["metadata"]["labels"]["creed/experiment"] == "demo"
    assert doc["spec"]["serviceAccountName"] == "creed-workflow"


def test_schema_check_catches_what_argo_would_reject(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    bad = copy.deepcopy(doc)
    bad["spec"]["templates"][0]["retryStrategy"]["limit"] = 3  # IntOrString is a string in the schema
    bad["spec"]["templates"][0]["container"]["imagePullPolcy"] = "Always"  # misspelt key
    errs = _errors(bad)
    assert any("3 is not of type 'string'" in e for e in errs)
    assert any("imagePullPolcy" in e for e in errs)


def test_dag_has_one_task_per_step_with_the_plan_edges(demo: tuple[Plan, dict[str, Any]]) -> None:
    plan, doc = demo
    tasks = _tasks(doc)
    assert sorted(tasks) == sorted(s.name for s in plan.steps)
    for s in plan.steps:
        t = tasks[s.name]
        edges = set(t["depends"].split(" && ")) if "depends" in t else set()
        assert edges == set(s.depends), s.name
        params = {p["name"]: p["value"] for p in t["arguments"]["parameters"]}
        assert params["config"] == s.config_uri
        assert params["manifest-key"] == s.manifest.removeprefix("s3://creed-demo/")  # key-only artifact
        assert params["memo-key"].startswith(s.name + "-")
        tpl = _templates(doc)[t["template"]]
        assert tpl["container"]["command"] == ["python", "-m", s.job]
    evals = [s.name for s in plan.steps if s.stage == "eval"]
    assert len(evals) == 1 + 6 * len(spec_mod.load(DEMO).train.seeds)  # 1 model x (base + 6 arms x seeds)
    assert set(tasks["analyze"]["depends"].split(" && ")) == {*evals, "check-graminist"}


def test_one_template_per_stage_with_image_and_command(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    tpls = _templates(doc)
    stages = ["generate", "check", "filter", "mix", "train", "eval", "analyze"]
    assert list(tpls) == [*stages, "main"]
    for st in stages:
        c = tpls[st]["container"]
        image = "generate" if st == "check" else st  # the check runs in the generate image
        assert c["image"] == f"ghcr.io/creed/creed-{image}:{image_tag(ClusterSpec())}"
        assert c["command"] == ["python", "-m", f"jobs.{st}"]
        assert c["args"] == ["--config", "{{inputs.parameters.config}}"]


def test_gpu_steps_get_gpu_limits_toleration_and_shm(demo: tuple[Plan, dict[str, Any]]) -> None:
    plan, doc = demo
    tpls = _templates(doc)
    for name, t in tpls.items():
        if name == "main":
            continue
        res = t["container"]["resources"]
        gpu = name in ("train", "eval")
        assert ("nvidia.com/gpu" in res.get("limits", {})) is gpu, name
        assert bool(t.get("tolerations")) is gpu
        if gpu:
            assert res["limits"]["nvidia.com/gpu"] == "1"
            assert t["tolerations"] == [
                {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
            ]
            assert t["container"]["volumeMounts"] == [{"mountPath": "/dev/shm", "name": "dshm"}]
        step = next(s for s in plan.steps if s.stage == name)
        assert res["requests"]["memory"] == res["limits"]["memory"] == step.resources.memory
        assert res["requests"]["cpu"] == f"{step.resources.cpu:g}"


def test_gpu_node_selector_and_cpu_only_demo() -> None:
    plan, _ = _plan()
    doc = render_dict(plan, cluster=ClusterSpec(gpu_node_selector={"nvidia.com/gpu.present": "true"}))
    assert _templates(doc)["train"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nodeSelector" not in _templates(doc)["mix"]
    cpu_plan = build_plan(spec_mod.load(DEMO, ["store=s3://b/p"]))  # the demo as shipped: no GPUs
    cpu_doc = render_dict(cpu_plan)
    assert not any("tolerations" in t for t in cpu_doc["spec"]["templates"])
    assert _errors(cpu_doc) == []


def test_every_template_retries_with_the_expression(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    for name, t in _templates(doc).items():
        if name == "main":
            continue
        rs = t["retryStrategy"]
        assert rs["expression"] == RETRY_EXPRESSION and rs["retryPolicy"] == "Always"
        assert rs["limit"] == "3" and rs["backoff"]["duration"] == "1m"


def test_no_secret_value_is_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = "s3cr3t-VALUE-that-must-not-leak"
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "OPENAI_API_KEY", "ARGO_TOKEN"):
        monkeypatch.setenv(var, sentinel)
    plan, spec = _plan(extra=["teacher.provider=openai", "teacher.api_key_env=OPENAI_API_KEY"])
    text = render_yaml(plan, dict(spec.images))
    assert sentinel not in text
    doc = yaml.safe_load(text)
    for name, t in _templates(doc).items():
        if name == "main":
            continue
        c = t["container"]
        assert {e["name"] for e in c["env"]} == {
            "CREED_LOG_FORMAT",
            "CREED_OUTPUTS_DIR",
        }  # nothing else inline
        assert c["envFrom"] == [
            {"configMapRef": {"name": "creed-store"}},
            {"secretRef": {"name": "creed-store-credentials"}},
            {"secretRef": {"name": "creed-llm", "optional": True}},
        ]


def test_images_from_spec_and_unknown_stage() -> None:
    plan, _ = _plan()
    doc = render_dict(plan, {"train": "registry.local/train:dev"}, ClusterSpec(image_tag="abc123"))
    assert _templates(doc)["train"]["container"]["image"] == "registry.local/train:dev"
    assert _templates(doc)["eval"]["container"]["image"] == "ghcr.io/creed/creed-eval:abc123"
    with pytest.raises(InputError, match="unknown stage"):
        render_dict(plan, {"trian": "x"})


@pytest.mark.parametrize("spec_path", rendered.shipped_specs(), ids=lambda p: p.name)
def test_every_shipped_experiment_has_its_rendered_workflow_committed(spec_path: Path) -> None:
    fresh = rendered.render(spec_path)
    out = rendered.output_for(spec_path)
    if os.environ.get("CREED_REGEN") == "1":
        out.write_text(fresh, encoding="utf-8")
    assert out.exists(), f"{out.name} is missing: run `python -m workflows.rendered`"
    committed = out.read_text(encoding="utf-8")
    assert committed == fresh, f"stale {out.name}: run `python -m workflows.rendered`"
    doc = yaml.safe_load(committed)
    assert _errors(doc) == [] and check_workflow(doc) == []


def test_shipped_specs_are_found() -> None:
    names = {p.name for p in rendered.shipped_specs()}
    assert {"demo.yaml", "normative-refusal.yaml"} <= names


def test_workflow_template_for_reuse(demo: tuple[Plan, dict[str, Any]]) -> None:
    plan, doc = demo
    tpl = render_dict(plan, template=True)
    assert tpl["kind"] == "WorkflowTemplate" and tpl["metadata"]["name"] == "demo"
    assert "generateName" not in tpl["metadata"]
    assert _errors(tpl) == [] and check_workflow(tpl) == []
    assert _tasks(tpl).keys() == _tasks(doc).keys()


def _bad(doc: dict[str, Any], edit: Any) -> list[str]:
    d = copy.deepcopy(doc)
    edit(d)
    return check_workflow(d)


def test_semantic_check_catches_what_the_schema_cannot(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    assert check_workflow(doc) == []
    tpls = lambda d: {t["name"]: t for t in d["spec"]["templates"]}  # noqa: E731
    main_tasks = lambda d: tpls(d)["main"]["dag"]["tasks"]  # noqa: E731

    def bad_depends(d: dict[str, Any]) -> None:
        main_tasks(d)[-1]["depends"] = "no-such-step && mix-control"

    def gpu_on_mix(d: dict[str, Any]) -> None:
        tpls(d)["mix"]["container"]["resources"]["limits"]["nvidia.com/gpu"] = "1"

    def literal_secret(d: dict[str, Any]) -> None:
        tpls(d)["generate"]["container"]["env"].append({"name": "OPENAI_API_KEY", "value": "sk-abcdefghijkl"})

    def no_entrypoint(d: dict[str, Any]) -> None:
        d["spec"]["entrypoint"] = "start"

    def bad_name(d: dict[str, Any]) -> None:
        main_tasks(d)[0]["name"] = "Generate_Generic"

    def unknown_template(d: dict[str, Any]) -> None:
        main_tasks(d)[0]["template"] = "generat"

    assert any("no-such-step" in p for p in _bad(doc, bad_depends))
    assert any("asks for GPUs but is not a train/eval step" in p for p in _bad(doc, gpu_on_mix))
    secret = _bad(doc, literal_secret)
    assert any("literal value" in p for p in secret) and any("looks like a secret" in p for p in secret)
    assert any("entrypoint" in p for p in _bad(doc, no_entrypoint))
    assert any("Generate_Generic" in p for p in _bad(doc, bad_name))
    assert any("'generat' does not exist" in p for p in _bad(doc, unknown_template))


def test_cluster_section_of_the_spec_reaches_the_workflow() -> None:
    plan, spec = _plan(
        extra=[
            "cluster.gpu_node_selector={cloud.google.com/gke-accelerator: nvidia-l4}",
            "cluster.gpu_tolerations=[{key: gpu, operator: Equal, value: 'true', effect: NoSchedule}]",
            "cluster.service_account=runner",
            "cluster.image_repo=registry.example.com/lab",
            "cluster.retry_limit=5",
            "resources.train.deadline_s=7200",
        ]
    )
    doc = render_dict(plan, dict(spec.images), spec.cluster)
    train, mix = _templates(doc)["train"], _templates(doc)["mix"]
    assert train["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert train["tolerations"] == [
        {"effect": "NoSchedule", "key": "gpu", "operator": "Equal", "value": "true"}
    ]
    assert "nodeSelector" not in mix and "tolerations" not in mix
    assert train["activeDeadlineSeconds"] == "7200" and mix["activeDeadlineSeconds"] == "3600"
    assert train["retryStrategy"]["limit"] == "5"
    assert doc["spec"]["serviceAccountName"] == "runner"
    assert mix["container"]["image"].startswith("registry.example.com/lab/creed-mix:")
    assert _errors(doc) == []


def _retried(exit_code: int | None, status: str, message: str = "") -> bool:
    """Evaluate RETRY_EXPRESSION as Argo's expr-lang would, for the operators it uses (``asInt``, ``==``,
    ``||``, ``&&``, ``!``, ``contains``, ``matches``), with Argo's variables (exit code "-1" when a pod
    has none)."""
    import re

    expr = RETRY_EXPRESSION.replace("asInt(lastRetry.exitCode)", "exit_code")
    expr = expr.replace("lastRetry.status", "status").replace("lastRetry.message", "message")
    expr = re.sub(r'(\w+) matches ("[^"]*")', r"_matches(\1, \2)", expr)
    expr = re.sub(r'(\w+) contains ("[^"]*")', r"(\2 in \1)", expr)
    expr = expr.replace("&&", " and ").replace("||", " or ").replace("!(", " not (")
    env = {
        "exit_code": -1 if exit_code is None else exit_code,
        "status": status,
        "message": message,
        "_matches": lambda s, r: re.search(r, s) is not None,
    }
    return bool(eval(expr, {}, env))


@pytest.mark.parametrize(
    ("exit_code", "status", "message", "retried"),
    [
        (75, "Failed", "", True),  # the job said "transient" (a store briefly down, SIGTERM)
        (None, "Error", "pod deleted", True),  # deleted or drained: Argo marks the node Error
        # graceful node shutdown (spot VMs, Karpenter): Failed, often 143/137 from an older image
        (143, "Failed", "Pod was terminated in response to imminent node shutdown.", True),
        (137, "Failed", "Pod was terminated in response to imminent node shutdown.", True),
        (None, "Failed", "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi", True),
        (None, "Failed", "Preempted in order to admit critical pod", True),
        (None, "Failed", "Pod was rejected: Node didn't have enough resource: nvidia.com/gpu", True),
        (75, "Failed", "Pod was active on the node longer than the specified deadline", False),
        (2, "Failed", "", False),  # bad input: a retry cannot help
        (1, "Failed", "", False),  # a bug
        (137, "Failed", "OOMKilled (exit code 137)", False),  # more memory is the fix, not a retry
        (0, "Succeeded", "", False),
    ],
)
def test_retry_expression_semantics(exit_code: int | None, status: str, message: str, retried: bool) -> None:
    assert _retried(exit_code, status, message) is retried


def test_the_sweep_survives_one_failure_and_the_workflow_has_a_deadline(
    demo: tuple[Plan, dict[str, Any]],
) -> None:
    _, doc = demo
    main_tpl = _templates(doc)["main"]
    assert main_tpl["dag"]["failFast"] is False  # one seed out of retries does not stop the grid
    assert doc["spec"]["activeDeadlineSeconds"] == 7 * 24 * 3600
    plan, spec = _plan(extra=["cluster.workflow_deadline_s=3600"])
    assert render_dict(plan, dict(spec.images), spec.cluster)["spec"]["activeDeadlineSeconds"] == 3600


def test_gpu_steps_are_placed_by_request_and_tolerations_only() -> None:
    """A selector on a label only some clusters have (nvidia.com/gpu.present) leaves pods Pending on
    GKE drivers, the device plugin alone, and pools scaled to zero: none unless the user asks."""
    for spec_path in rendered.shipped_specs():
        doc = yaml.safe_load(rendered.output_for(spec_path).read_text())
        for t in doc["spec"]["templates"]:
            assert "nodeSelector" not in t, (spec_path.name, t["name"])
            if t["name"] in ("train", "eval"):
                assert t["tolerations"] and t["container"]["resources"]["limits"]["nvidia.com/gpu"]
    assert ClusterSpec().gpu_node_selector == {}


def test_pods_get_disk_requests_and_a_grace_period(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    for name, t in _templates(doc).items():
        if name == "main":
            continue
        req = t["container"]["resources"]["requests"]
        assert req["ephemeral-storage"] == ("30Gi" if name in ("train", "eval") else "4Gi")
        assert "ephemeral-storage" not in t["container"]["resources"]["limits"]  # a limit evicts for good
        assert json.loads(t["podSpecPatch"]) == {"terminationGracePeriodSeconds": 120}
    plan, spec = _plan(extra=["resources.train.disk=100Gi"])
    train = _templates(render_dict(plan, dict(spec.images), spec.cluster))["train"]
    assert train["container"]["resources"]["requests"]["ephemeral-storage"] == "100Gi"


def test_gpu_semaphore_caps_gpu_steps_across_workflows() -> None:
    plan, spec = _plan(extra=["cluster.gpu_semaphore=creed-semaphores/gpu"])
    doc = render_dict(plan, dict(spec.images), spec.cluster)
    for name, t in _templates(doc).items():
        want = {"semaphores": [{"configMapKeyRef": {"name": "creed-semaphores", "key": "gpu"}}]}
        assert t.get("synchronization") == (want if name in ("train", "eval") else None), name
    assert _errors(doc) == []
    with pytest.raises(InputError, match="gpu_semaphore"):
        _plan(extra=["cluster.gpu_semaphore=no-key"])


def test_memoization_keys_follow_configs_and_inputs(demo: tuple[Plan, dict[str, Any]]) -> None:
    """A step finished in an earlier workflow costs no pod when it is resubmitted: Argo memoizes it on
    the inputs digest, its config and its upstream steps' configs."""
    plan, doc = demo
    for name, t in _templates(doc).items():
        if name == "main":
            continue
        memo = t["memoize"]
        assert memo["key"] == "{{workflow.parameters.inputs-digest}}-{{inputs.parameters.memo-key}}"
        assert memo["cache"] == {"configMap": {"name": "creed-memo"}} and memo["maxAge"] == "720h"
        assert {p["name"] for p in t["outputs"]["parameters"]} == {"digest"}  # memoization needs an output
    assert doc["spec"]["arguments"]["parameters"][0]["name"] == "inputs-digest"
    assert "value" not in doc["spec"]["arguments"]["parameters"][0]  # set at submit; argo submit needs -p
    keys = {
        t["name"]: dict((p["name"], p["value"]) for p in t["arguments"]["parameters"])["memo-key"]
        for t in _tasks(doc).values()
    }
    assert len(set(keys.values())) == len(keys)
    import re as _re

    assert all(_re.fullmatch(r"[a-zA-Z0-9][-a-zA-Z0-9]*", "0123abcd-" + k) for k in keys.values())
    # a changed train setting changes every train, eval and analyze key, and no generate/filter/mix key
    changed, spec = _plan(extra=["train.learning_rate=0.5"])
    doc2 = render_dict(changed, dict(spec.images), spec.cluster)
    keys2 = {
        t["name"]: dict((p["name"], p["value"]) for p in t["arguments"]["parameters"])["memo-key"]
        for t in _tasks(doc2).values()
    }
    differ = {n for n in keys if keys[n] != keys2[n]}
    stages = {n: plan.step(n).stage for n in keys}
    assert differ == {n for n, st in stages.items() if st in ("train", "analyze")} | {
        n for n, st in stages.items() if st == "eval" and "base" not in n
    }


def test_each_step_links_its_manifest_as_a_key_only_artifact(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    for name, t in _templates(doc).items():
        if name == "main":
            continue
        (art,) = t["outputs"]["artifacts"]
        assert art == {
            "name": "manifest",
            "optional": True,
            "path": "/tmp/creed-outputs/manifest.json",
            "archive": {"none": {}},  # the same bytes the step wrote, not a tarball over its manifest
            "s3": {"key": "{{inputs.parameters.manifest-key}}"},  # bucket and secrets: the repository's
        }
    plan, spec = _plan(extra=["cluster.artifacts=false", "cluster.memoize=false"])
    bare = render_dict(plan, dict(spec.images), spec.cluster)
    assert not any("outputs" in t or "memoize" in t for t in bare["spec"]["templates"])
    assert "arguments" not in bare["spec"] and _errors(bare) == []


def test_vllm_eval_steps_use_the_vllm_image() -> None:
    plan, spec = _plan(extra=["eval.engine=vllm"])
    doc = render_dict(plan, dict(spec.images), spec.cluster.model_copy(update={"image_tag": "abc"}))
    assert _templates(doc)["eval"]["container"]["image"] == "ghcr.io/creed/creed-eval:abc-vllm"
    assert _templates(doc)["train"]["container"]["image"] == "ghcr.io/creed/creed-train:abc"
    committed = yaml.safe_load((ROOT / "experiments" / "normative-refusal.workflow.yaml").read_text())
    assert _templates(committed)["eval"]["container"]["image"].endswith(":COMMIT-vllm")  # engine: vllm


def test_image_tag_defaults_to_the_commit() -> None:
    from jobs.common.manifest import code_version

    commit = code_version().commit
    assert commit, "the tests run from a git checkout"
    assert image_tag(ClusterSpec()) == commit[:12]
    assert image_tag(ClusterSpec(image_tag="v1")) == "v1"
    plan, _ = _plan()
    assert render_dict(plan)["metadata"]["annotations"]["creed/image-tag"] == commit[:12]


def pod_of(doc: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """The Pod Argo creates for a container template (its main container; the executor's are Argo's)."""
    spec = doc["spec"]
    c = template["container"]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": spec["serviceAccountName"],
        "securityContext": spec.get("securityContext", {}),
        "containers": [{"name": "main", **c}],
        "volumes": template.get("volumes", []),
        "restartPolicy": "Never",
        "activeDeadlineSeconds": int(template["activeDeadlineSeconds"]),
        **json.loads(template.get("podSpecPatch", "{}")),
    }
    for key in ("tolerations", "nodeSelector"):
        if key in template:
            pod_spec[key] = template[key]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"x-{template['name']}"},
        "spec": pod_spec,
    }


@pytest.mark.parametrize("spec_path", rendered.shipped_specs(), ids=lambda p: p.name)
def test_every_pod_meets_the_restricted_pod_security_profile(spec_path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = yaml.safe_load(rendered.output_for(spec_path).read_text())
    for t in doc["spec"]["templates"]:
        if "container" not in t:
            continue
        pod = pod_of(doc, t)
        kubernetes_validate.validate(pod, "1.33.0", strict=True)
        assert restricted_problems(pod) == [], t["name"]
    # the check itself catches what "restricted" forbids
    t = next(t for t in doc["spec"]["templates"] if "container" in t)
    bad = pod_of(doc, t)
    bad["spec"]["containers"][0]["securityContext"] = {"runAsNonRoot": True}
    bad["spec"]["securityContext"] = {}
    assert set(restricted_problems(bad)) == {
        "main: allowPrivilegeEscalation",
        "main: capabilities",
        "main: seccompProfile",
    }


def test_hera_generate_yaml_on_the_entry_module_gives_what_creed_render_gives(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    hera = shutil.which("hera", path=str(Path(sys.executable).parent))
    assert hera, "the argo extra installs the hera CLI (hera[cli])"
    env = os.environ | {
        "CREED_SPEC": str(DEMO),
        "CREED_SPEC_STORE": "s3://lab/experiments",
        "CREED_SPEC_SET": "train.seeds=[0,1];cluster.retry_limit=5",
        "CREED_SPEC_IMAGE_TAG": "0123456789ab",  # (the commit default is tested on its own)
    }
    out = subprocess.run(
        [hera, "generate", "yaml", str(ROOT / "workflows" / "hera_entry.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    target = tmp_path / "wf.yaml"
    rc = main(
        [
            "render",
            str(DEMO),
            "--store",
            "s3://lab/experiments",
            "--set",
            "train.seeds=[0,1]",
            "--set",
            "cluster.retry_limit=5",
            "--image-tag",
            "0123456789ab",
            "-o",
            str(target),
        ]
    )
    assert rc == 0
    assert out.stdout == target.read_text()  # byte for byte
    doc = yaml.safe_load(out.stdout)
    assert _errors(doc) == [] and len(_tasks(doc)) == len(
        build_plan(spec_mod.load(DEMO, ["train.seeds=[0,1]"])).steps
    )
    template = subprocess.run(
        [hera, "generate", "yaml", str(ROOT / "workflows" / "hera_entry.py")],
        capture_output=True,
        text=True,
        env=env | {"CREED_SPEC_TEMPLATE": "1"},
        cwd=ROOT,
        timeout=120,
    )
    assert yaml.safe_load(template.stdout)["kind"] == "WorkflowTemplate"


def test_render_cli_writes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wf.yaml"
    rc = main(["render", str(DEMO), "--store", "s3://b/x", "-o", str(out), "--image-tag", "t1"])
    assert rc == 0
    doc = yaml.safe_load(out.read_text())
    assert _templates(doc)["mix"]["container"]["image"] == "ghcr.io/creed/creed-mix:t1"
    main(["render", str(DEMO)])
    assert "is not s3://" in capsys.readouterr().err
    assert main(["render", str(DEMO), "--store", "s3://b/x", "--template", "-o", str(out)]) == 0
    tpl = yaml.safe_load(out.read_text())
    assert tpl["kind"] == "WorkflowTemplate" and _errors(tpl) == []


# ---------------------------------------------------------------------------------------------
# submit / status / retry against a fake Argo server
# ---------------------------------------------------------------------------------------------
class _FakeArgo(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, dict[str, str], Any]]] = []
    #: what GET of demo-x7k2p returns instead of the default failed workflow
    workflow: ClassVar[dict[str, Any] | None] = None

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        self.calls.append((self.command, self.path, dict(self.headers), body))
        return body

    def do_POST(self) -> None:
        body = self._record()
        if self.headers.get("Authorization") != "Bearer tok":
            return self._reply(401, {"message": "token not valid"})
        wf = copy.deepcopy(body["workflow"])
        wf["metadata"]["name"] = wf["metadata"]["generateName"] + "x7k2p"
        self._reply(200, wf)

    def do_GET(self) -> None:
        self._record()
        if not self.path.endswith("/demo-x7k2p"):
            return self._reply(404, {"message": "workflows.argoproj.io not found"})
        if self.workflow is not None:
            return self._reply(200, self.workflow)
        node = {"id": "n1", "name": "demo-x7k2p.train-a", "displayName": "train-gemma3-270m-control-s0"}
        status = {
            "phase": "Failed",
            "progress": "12/30",
            "message": "child failed",
            "nodes": {
                "n1": node | {"type": "Retry", "phase": "Failed", "message": "No more retries left"},
                "n2": node
                | {
                    "id": "n2",
                    "type": "Pod",
                    "phase": "Failed",
                    "outputs": {"exitCode": "2"},
                    "displayName": "x(0)",
                },
            },
        }
        self._reply(200, {"metadata": {"name": "demo-x7k2p"}, "spec": {}, "status": status})

    def do_PUT(self) -> None:
        self._record()
        self._reply(200, {"metadata": {"name": "demo-x7k2p"}, "spec": {}, "status": {"phase": "Running"}})


@pytest.fixture
def argo(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, dict[str, str], Any]]]:
    _FakeArgo.calls = []
    _FakeArgo.workflow = None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeArgo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ARGO_SERVER", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("ARGO_TOKEN", "tok")
    monkeypatch.setenv("ARGO_NAMESPACE", "research")
    yield _FakeArgo.calls
    server.shutdown()
    server.server_close()


def test_submit_stages_inputs_and_configs_then_creates(
    argo: list[Any], s3_root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["submit", str(DEMO), "--store", s3_root])
    assert rc == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == "demo-x7k2p"
    assert f"{os.environ['ARGO_SERVER']}/workflows/research/demo-x7k2p" in printed.err  # the UI link
    plan = build_plan(spec_mod.load(DEMO, [f"store={s3_root}"]))
    for s in plan.steps:  # the exact bytes the local backend would write
        assert json.loads(store.read_text(s.config_uri)) == s.config.model_dump(mode="json")
    for f in plan.inputs:
        assert store.read_bytes(f.uri) == Path(f.source).read_bytes()
    ((method, path, headers, body),) = argo
    assert (method, path) == ("POST", "/api/v1/workflows/research")
    assert headers["Authorization"] == "Bearer tok"
    wf = body["workflow"]
    assert wf["metadata"]["namespace"] == "research"
    digest = argo_cli.inputs_digest(plan)
    assert wf == render_dict(plan, cluster=ClusterSpec(namespace="research"), inputs_digest=digest)
    assert wf["spec"]["arguments"]["parameters"][0]["value"] == digest  # memoization keys start with it
    assert _errors(wf) == []
    assert "testing" not in json.dumps(body)  # the moto credentials in the environment


def test_submit_needs_s3_store_and_argo_server(
    argo: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="submit and upload need an s3:// store"):
        argo_cli.stage_for_submit(build_plan(spec_mod.load(DEMO, [f"store={tmp_path}"])))
    assert main(["submit", str(DEMO), "--store", str(tmp_path)]) == 2
    assert argo == [] and not any(tmp_path.iterdir())
    monkeypatch.delenv("ARGO_SERVER")
    assert main(["status", "demo-x7k2p"]) == 2


def test_submit_bad_token_is_input_error(
    argo: list[Any], s3_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGO_TOKEN", "wrong")
    assert main(["submit", str(DEMO), "--store", s3_root]) == 2


def test_unreachable_server_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ARGO_SERVER", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(argo_cli, "ARGO_RETRIES", 0)
    assert main(["status", "demo-x7k2p"]) == 75


def test_status_and_retry(argo: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "demo-x7k2p"]) == 1  # the workflow failed
    out = capsys.readouterr().out
    assert "demo-x7k2p  Failed  progress 12/30" in out
    assert "train-gemma3-270m-control-s0" in out and "No more retries left" in out
    assert "x(0)" not in out  # retry attempts are folded into their Retry node
    assert main(["status", "nope"]) == 2
    assert main(["retry", "demo-x7k2p"]) == 0
    method, path, _, body = argo[-1]
    assert (method, path) == ("PUT", "/api/v1/workflows/research/demo-x7k2p/retry")
    assert body["name"] == "demo-x7k2p" and not body.get("restartSuccessful")


def test_upload_stages_everything_and_prints_the_inputs_digest(
    s3_root: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without submitting: then `argo submit -p inputs-digest=...` of the rendered YAML, or a submit of
    the WorkflowTemplate from the UI, finds every config and input in the store."""
    assert main(["upload", str(DEMO), "--store", s3_root]) == 0
    printed = capsys.readouterr()
    plan = build_plan(spec_mod.load(DEMO, [f"store={s3_root}"]))
    assert printed.out.strip() == argo_cli.inputs_digest(plan)
    assert f"-p inputs-digest={printed.out.strip()}" in printed.err
    for s in plan.steps:
        assert json.loads(store.read_text(s.config_uri)) == s.config.model_dump(mode="json")
    for f in plan.inputs:
        assert store.read_bytes(f.uri) == Path(f.source).read_bytes()
    # an edited input file (same name, so the same store URI) gives another digest: new memo keys
    spec = spec_mod.load(DEMO, [f"store={s3_root}"])
    src = Path(plan.inputs[0].source)
    edited = tmp_path / src.name
    edited.write_bytes(src.read_bytes().replace(b"\n", b"\n\n", 1))
    kind, name = plan.inputs[0].kind, None
    for ds_name, ds in spec.datasets.items():
        for field in ("personas", "prompts"):
            if Path(getattr(ds, field)).name == src.name:
                name = f"datasets.{ds_name}.{field}"
    if name is None:
        name = next(f"evals.{k}" for k, v in spec.evals.items() if Path(v).name == src.name)
    other = build_plan(spec_mod.load(DEMO, [f"store={s3_root}", f"{name}={edited}"]))
    assert [f.uri for f in other.inputs] == [f.uri for f in plan.inputs], kind
    assert argo_cli.inputs_digest(other) != argo_cli.inputs_digest(plan)
    assert main(["upload", str(DEMO), "--store", str(tmp_path / "local")]) == 2  # pods cannot read it


def test_submit_runs_the_render_checks_before_uploading(argo: list[Any], s3_root: str) -> None:
    rc = main(["submit", str(DEMO), "--store", s3_root, "--set", "cluster.image_repo=sk-abcdefghijklmnop"])
    assert rc == 2  # "looks like a secret": refused like `creed render` refuses it
    assert argo == [] and store.list_uris(s3_root) == []


def test_logs_reads_every_attempt_back_from_the_store(
    argo: list[Any], s3_root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, prefix = s3_root[len("s3://") :].split("/", 1)
    key0 = f"{prefix}/_argo/demo-x7k2p/demo-x7k2p-train-1/main.log"
    key1 = f"{prefix}/_argo/demo-x7k2p/demo-x7k2p-train-2/main.log"
    store.write_text(f"s3://{bucket}/{key0}", '{"event": "train.stopping"}\n')
    store.write_text(f"s3://{bucket}/{key1}", '{"event": "train.done"}\n')

    def pod(i: int, name: str, phase: str, key: str | None, code: str) -> dict[str, Any]:
        outputs: dict[str, Any] = {"exitCode": code}
        if key:
            outputs["artifacts"] = [{"name": "main-logs", "s3": {"key": key}}]
        return {
            "id": f"n{i}",
            "name": f"demo-x7k2p.{name}",
            "displayName": name,
            "type": "Pod",
            "phase": phase,
            "startedAt": f"2026-01-01T00:0{i}:00Z",
            "outputs": outputs,
        }

    _FakeArgo.workflow = {
        "metadata": {"name": "demo-x7k2p", "annotations": {"creed/store": f"{s3_root}/demo"}},
        "spec": {},
        "status": {
            "phase": "Succeeded",
            "nodes": {
                "n1": pod(1, "train-gemma3-270m-control-s0(0)", "Failed", key0, "75"),
                "n2": pod(2, "train-gemma3-270m-control-s0(1)", "Succeeded", key1, "0"),
                "n3": pod(3, "mix-control", "Running", None, "0"),
            },
        },
    }
    assert main(["logs", "demo-x7k2p", "train-gemma3-270m-control-s0"]) == 0
    out = capsys.readouterr().out
    assert out.index("train.stopping") < out.index("train.done")  # both attempts, in order
    assert "exit 75" in out and "mix-control" not in out
    assert main(["logs", "demo-x7k2p", "mix-control"]) == 1  # running: nothing archived yet
    assert "no archived log" in capsys.readouterr().out
    assert main(["logs", "demo-x7k2p", "nope"]) == 2
