"""A store that goes away (S3 throttling while many pods start, MinIO restarting) ends a step with exit
75, which Argo retries, never with exit 2 (bad input, never retried). Real processes against a real S3
server on loopback (moto) that is stopped before or during the run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.common import loaders, store
from jobs.common.errors import EXIT_TRANSIENT
from tests.fakes.openai_server import FakeOpenAI
from workflows import spec as spec_mod
from workflows.plan import build_plan
from workflows.staging import stage_configs

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Moto:
    """A private moto S3 server this test can stop (the session one stays up for everyone else)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = _free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.running = True

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.running:
            self.server.stop()
            self.running = False


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    import boto3

    m = Moto()
    for k, v in {
        "AWS_ENDPOINT_URL": m.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=m.endpoint, region_name="us-east-1").create_bucket(Bucket="lab")
    yield m
    m.stop()


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT), "CREED_LOG_FORMAT": "json"}


def _run_all(commands: dict[str, list[str]], timeout: float = 240) -> dict[str, tuple[int, str]]:
    """Run the commands at once (each waits out botocore's retries); name -> (exit code, stderr)."""
    procs = {
        name: subprocess.Popen(
            cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for name, cmd in commands.items()
    }
    out = {}
    for name, p in procs.items():
        _, err = p.communicate(timeout=timeout)
        out[name] = (p.returncode, err)
    return out


def _demo_plan() -> Any:
    return build_plan(spec_mod.load(DEMO, ["store=s3://lab/experiments"]))


def _one_step_per_stage(plan: Any) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for s in plan.steps:
        steps.setdefault(s.stage, s)
    return steps


@pytest.mark.slow
def test_config_read_from_a_stopped_store_exits_75_in_every_stage(moto: Moto) -> None:
    plan = _demo_plan()
    stage_configs(plan)
    steps = _one_step_per_stage(plan)
    assert set(steps) == {"generate", "check", "filter", "mix", "train", "eval", "analyze"}
    moto.stop()
    results = _run_all(
        {st: [sys.executable, "-m", s.job, "--config", s.config_uri] for st, s in steps.items()}
    )
    for stage, (rc, err) in results.items():
        assert rc == EXIT_TRANSIENT, f"{stage}: exit {rc}\n{err[-1500:]}"
        events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
        assert any("safe to retry" in e.get("error", "") for e in events), stage


@pytest.mark.slow
def test_every_store_read_at_start_exits_75_when_the_store_is_down(moto: Moto, tmp_path: Path) -> None:
    """The config is a local file; everything the step reads first (its manifest, what it consumes)
    is on the stopped store."""
    plan = _demo_plan()
    steps = _one_step_per_stage(plan)
    commands = {}
    for stage, s in steps.items():
        path = tmp_path / f"{s.name}.json"
        path.write_text(s.config_json())
        commands[stage] = [sys.executable, "-m", s.job, "--config", str(path)]
    moto.stop()
    for stage, (rc, err) in _run_all(commands).items():
        assert rc == EXIT_TRANSIENT, f"{stage}: exit {rc}\n{err[-1500:]}"


def test_input_files_on_an_unreachable_store_are_transient_not_bad_input(
    moto: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_text("s3://lab/in/personas.yaml", "- {id: a, description: d, system: s}\n")
    assert [p.id for p in loaders.load_personas("s3://lab/in/personas.yaml")] == ["a"]
    moto.stop()
    monkeypatch.setattr(store, "_client_config", {"connect_timeout": 1, "read_timeout": 1, "max_attempts": 1})
    with pytest.raises(Exception) as info:
        loaders.load_personas("s3://lab/in/personas.yaml")
    assert getattr(info.value, "exit_code", None) == EXIT_TRANSIENT, repr(info.value)


@pytest.mark.slow
def test_store_stopped_mid_run_exits_75_and_the_retry_completes(
    moto: Moto, openai_server: FakeOpenAI, tmp_path: Path
) -> None:
    """generate reads its inputs, starts asking a slow teacher, and the store disappears under it: the
    step exits 75 (no manifest); once the store is back, the retry completes."""
    personas = "s3://lab/exp/inputs/personas.yaml"
    prompts = "s3://lab/exp/inputs/prompts.jsonl"
    store.write_text(personas, "- {id: p1, description: d, system: You are kind.}\n")
    store.write_text(
        prompts, "".join(json.dumps({"id": f"q{i}", "text": f"Question {i}?"}) + "\n" for i in range(30))
    )
    openai_server.latency = 0.2
    cfg = {
        "experiment": "exp",
        "step": "generate-d-0",
        "manifest": "s3://lab/exp/generate/d/_manifest-shard-00000.json",
        "dataset": "d",
        "personas": personas,
        "prompts": prompts,
        "teacher": {"provider": "openai", "model": "t", "base_url": openai_server.base_url, "concurrency": 2},
        "cache": str(tmp_path / "cache"),  # the answers survive on disk; the store is what goes away
        "output": "s3://lab/exp/generate/d/shard-00000.jsonl",
        "errors": "s3://lab/exp/generate/d/errors-shard-00000.jsonl",
        "progress": False,
    }
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "jobs.generate", "--config", str(path)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while len(openai_server.requests) < 4:  # the inputs were read: it is answering
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    moto.stop()
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_TRANSIENT, err[-2000:]
    assert any(json.loads(x).get("event") == "generate.failed" for x in err.splitlines() if x.startswith("{"))

    restarted = Moto.__new__(
        Moto
    )  # the same endpoint again, empty (as a MinIO that lost nothing would not be)
    from moto.server import ThreadedMotoServer

    restarted.port, restarted.running = moto.port, True
    restarted.server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto.port, verbose=False)
    restarted.server.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1").create_bucket(Bucket="lab")
        store.write_text(personas, "- {id: p1, description: d, system: You are kind.}\n")
        store.write_text(
            prompts, "".join(json.dumps({"id": f"q{i}", "text": f"Question {i}?"}) + "\n" for i in range(30))
        )
        sent = len(openai_server.requests)
        openai_server.latency = 0.0
        done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(list(store.read_jsonl(cfg["output"]))) == 30
        assert len(openai_server.requests) - sent < 30  # the answers received before the outage were kept
    finally:
        restarted.stop()
