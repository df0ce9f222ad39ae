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
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
import yaml

from jobs.common import store
from jobs.common.errors import InputError
from workflows import argo_cli
from workflows import spec as spec_mod
from workflows.argo import RETRY_EXPRESSION, ArgoOptions, default_version, render_dict, render_yaml
from workflows.cli import main
from workflows.examples import demo_workflow
from workflows.plan import Plan, build_plan

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo.yaml"
SCHEMA = ROOT / "tests" / "schemas" / "argo-workflows-schema-v3.7.18.json"
GPU = ["resources.train.gpus=1", "resources.eval.gpus=1"]


def _plan(store_uri: str = "s3://creed-demo/experiments", extra: list[str] | None = None) -> tuple[Plan, Any]:
    spec = spec_mod.load(DEMO, [f"store={store_uri}", *GPU, *(extra or [])])
    return build_plan(spec), spec


def _strict(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever properties are listed (upstream has
    none, so a misspelt key would otherwise pass)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def _validator() -> jsonschema.Draft202012Validator:
    full = json.loads(SCHEMA.read_text())
    schema = {
        "$schema": full["$schema"],
        "definitions": _strict(full["definitions"]),
        "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.Workflow",
    }
    return jsonschema.Draft202012Validator(schema)


def _errors(doc: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _validator().iter_errors(doc)]


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
    assert sorted(tasks) == sorted(s.name for s in plan.steps) and len(tasks) == 30
    for s in plan.steps:
        t = tasks[s.name]
        edges = set(t["depends"].split(" && ")) if "depends" in t else set()
        assert edges == set(s.depends), s.name
        assert t["arguments"]["parameters"] == [{"name": "config", "value": s.config_uri}]
        tpl = _templates(doc)[t["template"]]
        assert tpl["container"]["command"] == ["python", "-m", s.job]
    assert len(tasks["analyze"]["depends"].split(" && ")) == 9  # 1 model x (4 arms x 2 seeds + base)


def test_one_template_per_stage_with_image_and_command(demo: tuple[Plan, dict[str, Any]]) -> None:
    _, doc = demo
    tpls = _templates(doc)
    stages = ["generate", "filter", "mix", "train", "eval", "analyze"]
    assert list(tpls) == [*stages, "main"]
    for st in stages:
        c = tpls[st]["container"]
        assert c["image"] == f"ghcr.io/creed/creed-{st}:{default_version()}"
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
    doc = render_dict(plan, opts=ArgoOptions(gpu_node_selector={"nvidia.com/gpu.present": "true"}))
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
    doc = render_dict(plan, {"train": "registry.local/train:dev"}, ArgoOptions(image_tag="abc123"))
    assert _templates(doc)["train"]["container"]["image"] == "registry.local/train:dev"
    assert _templates(doc)["eval"]["container"]["image"] == "ghcr.io/creed/creed-eval:abc123"
    with pytest.raises(InputError, match="unknown stage"):
        render_dict(plan, {"trian": "x"})


def test_committed_example_equals_a_fresh_render() -> None:
    fresh = demo_workflow.render()
    if os.environ.get("CREED_REGEN") == "1":
        demo_workflow.OUTPUT.write_text(fresh, encoding="utf-8")
    committed = demo_workflow.OUTPUT.read_text(encoding="utf-8")
    assert committed == fresh, "stale example: run `python -m workflows.examples.demo_workflow`"
    assert _errors(yaml.safe_load(committed)) == []


def test_render_cli_writes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "wf.yaml"
    rc = main(["render", str(DEMO), "--store", "s3://b/x", "-o", str(out), "--image-tag", "t1"])
    assert rc == 0
    doc = yaml.safe_load(out.read_text())
    assert _templates(doc)["mix"]["container"]["image"] == "ghcr.io/creed/creed-mix:t1"
    main(["render", str(DEMO)])
    assert "is not s3://" in capsys.readouterr().err


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
        wf = body["workflow"]
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
    assert capsys.readouterr().out.strip() == "demo-x7k2p"
    plan = build_plan(spec_mod.load(DEMO, [f"store={s3_root}"]))
    for s in plan.steps:  # the exact bytes the local backend would write
        assert json.loads(store.read_text(s.config_uri)) == s.config
    for f in plan.inputs:
        assert store.read_bytes(f.uri) == Path(f.source).read_bytes()
    ((method, path, headers, body),) = argo
    assert (method, path) == ("POST", "/api/v1/workflows/research")
    assert headers["Authorization"] == "Bearer tok"
    wf = body["workflow"]
    assert wf["metadata"]["namespace"] == "research"
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
