"""The Argo backend: the rendered workflow is valid Argo, mirrors the plan, keeps secrets out, retries
only exit 75, and ``creed submit/status/retry`` talk to an Argo server (a fake one on loopback).

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
from workflows import argo_cli, rendered
from workflows import spec as spec_mod
from workflows.argo import (
    RETRY_EXPRESSION,
    check_workflow,
    default_version,
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
        assert t["arguments"]["parameters"] == [{"name": "config", "value": s.config_uri}]
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
        assert c["image"] == f"ghcr.io/creed/creed-{image}:{default_version()}"
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


def test_retry_only_on_exit_75(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    for name, t in _templates(doc).items():
        if name == "main":
            continue
        rs = t["retryStrategy"]
        assert (
            rs["expression"]
            == RETRY_EXPRESSION
            == 'asInt(lastRetry.exitCode) == 75 || lastRetry.status == "Error"'
        )
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
        assert {e["name"] for e in c["env"]} == {"CREED_LOG_FORMAT"}  # nothing else inline
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


@pytest.mark.parametrize(
    ("exit_code", "status", "retried"),
    [
        (75, "Failed", True),  # the job said "transient"
        (None, "Error", True),  # the pod was lost: eviction, preemption, node failure
        (2, "Failed", False),  # bad input: a retry cannot help
        (1, "Failed", False),  # a bug
        (0, "Succeeded", False),
    ],
)
def test_retry_expression_semantics(exit_code: int | None, status: str, retried: bool) -> None:
    # Evaluate Argo's expr-lang expression in Python (the subset it uses: asInt, ==, ||).
    expr = RETRY_EXPRESSION.replace("||", " or ").replace("asInt(lastRetry.exitCode)", "exit_code")
    expr = expr.replace("lastRetry.status", "status")
    assert eval(expr, {}, {"exit_code": exit_code, "status": status}) is retried


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
    assert wf == render_dict(plan, cluster=ClusterSpec(namespace="research"))  # exactly what render shows
    assert _errors(wf) == []
    assert "testing" not in json.dumps(body)  # the moto credentials in the environment


def test_submit_needs_s3_store_and_argo_server(
    argo: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="submit needs an s3:// store"):
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
