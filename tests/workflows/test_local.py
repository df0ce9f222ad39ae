"""The local backend runs a plan: order, skip completed, --force, --only, failure reporting, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jobs.common import store
from jobs.common.errors import InputError
from tests.helpers.fake_job import FakeConfig
from workflows.local import run_plan
from workflows.plan import Layout, Plan, Step

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def _plan(
    root: str,
    *,
    fail: str | None = None,
    sleep: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
) -> Plan:
    layout = Layout(root, "exp")
    deps = {"a": [], "b": [], "c": ["a", "b"], "d": ["c"]}
    steps = []
    for name, dd in deps.items():
        folder = store.join(layout.root, name)
        cfg = {
            "experiment": "exp",
            "step": name,
            "manifest": layout.manifest_in(folder),
            "inputs": [store.join(layout.root, d, "out.txt") for d in dd],
            "output": store.join(folder, "out.txt"),
            "exit_code": 3 if name == fail else 0,
            "sleep_s": (sleep or {}).get(name, 0.0),
            "tag": (tags or {}).get(name, ""),
            "upstream": [layout.manifest_in(store.join(layout.root, d)) for d in dd],
        }
        steps.append(
            Step(
                name=name,
                stage="fake",
                job="tests.helpers.fake_job",
                config=FakeConfig.model_validate(cfg),
                depends=dd,
                log=layout.log(name),
                config_uri=layout.config(name),
            )
        )
    return Plan(experiment="exp", store=root, steps=steps)


def test_runs_in_order_then_skips_then_forces(store_root: str) -> None:
    plan = _plan(store_root)
    report = run_plan(plan, workers=2, echo=False)
    assert report.ok, report
    assert report.ran.index("c") > max(report.ran.index("a"), report.ran.index("b"))
    assert report.ran[-1] == "d"
    # d saw c's output, which saw a's and b's (1 line each): the data really flowed through the store
    assert store.read_text(store.join(store_root, "exp/d/out.txt")).startswith("d saw 3")
    assert store.read_text(plan.step("a").log)  # the step log was copied to the store

    again = run_plan(plan, workers=2, echo=False)
    assert again.ran == [] and sorted(again.skipped) == ["a", "b", "c", "d"]

    forced = run_plan(plan, force=["c"], echo=False)
    assert forced.ran == ["c"] and sorted(forced.skipped) == ["a", "b", "d"]


def test_parallel_steps_share_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.common import manifest

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    plan = _plan(str(tmp_path / "store"))
    run_plan(plan, workers=4, echo=False)
    m = manifest.read(plan.step("a").manifest)
    assert m is not None and m.extra["omp_threads"] == "2"


def test_a_changed_upstream_output_makes_downstream_stale(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    run_plan(_plan(root), echo=False)
    # a reruns (config changed) and writes different bytes: c consumed them and reruns; b did not.
    # c's new output has the same bytes as before (it counts lines), so d stays complete.
    assert run_plan(_plan(root, tags={"a": " v2"}), echo=False).ran == ["a", "c"]
    # a reruns (forced) and writes the same bytes: nothing downstream reruns (early cutoff)
    assert run_plan(_plan(root, tags={"a": " v2"}), force=["a"], echo=False).ran == ["a"]


def test_changed_config_reruns_the_step(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    run_plan(_plan(root), echo=False)
    changed = _plan(root, sleep={"b": 0.01})
    report = run_plan(changed, echo=False)
    assert report.ran == ["b"]


def test_only_selects_steps_and_checks_dependencies(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    with pytest.raises(InputError, match=r"step 'c' needs \['a', 'b'\]"):
        run_plan(_plan(root), only=["c"], echo=False)
    assert run_plan(_plan(root), only=["a", "b"], echo=False).ran == ["a", "b"]
    assert run_plan(_plan(root), only=["c"], echo=False).ran == ["c"]
    with pytest.raises(InputError, match="matches no step"):
        run_plan(_plan(root), only=["zz*"], echo=False)


def test_failure_names_step_exit_code_and_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "store")
    report = run_plan(_plan(root, fail="c"), echo=True)
    assert report.failed is not None
    assert (report.failed.step, report.failed.exit_code) == ("c", 3)
    assert report.failed.log == _plan(root).step("c").log and store.exists(report.failed.log)
    assert report.not_started == ["d"]
    err = capsys.readouterr().err
    assert "[FAIL] c exit 3" in err and report.failed.log in err


RUNNER = """
import sys
from tests.workflows.test_local import _plan
from workflows.local import run_plan
r = run_plan(_plan(sys.argv[1], sleep={"a": 30, "b": 30}), workers=2, echo=True)
sys.exit(130 if r.interrupted else 0)
"""


def test_ctrl_c_stops_children_cleanly(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, root], stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ)
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 60
    while seen.count(b"[run ]") < 2 and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    time.sleep(1.0)  # let the children import and start sleeping
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - t0 < 20  # the 30 s sleepers were stopped, not waited for
    assert not store.exists(store.join(root, "exp/a/_manifest.json"))
    out = subprocess.run(["pgrep", "-f", "tests.helpers.fake_job"], capture_output=True, text=True)
    assert root not in out.stdout


def _logs_to(plan: Plan, uri: str) -> Plan:
    steps = [s.model_copy(update={"log": store.join(uri, f"{s.name}.log")}) for s in plan.steps]
    return plan.model_copy(update={"steps": steps})


def test_a_failure_log_that_cannot_reach_the_store_is_kept_and_named(
    tmp_path: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    # The logs' store is down (here: a bucket that does not exist); the steps' own outputs are fine.
    plan = _logs_to(_plan(str(tmp_path / "store"), fail="c"), "s3://creed-no-such-bucket/logs")
    report = run_plan(plan, echo=True)
    assert report.failed is not None and report.failed.step == "c"
    assert Path(report.failed.log).is_file()  # the path printed is one that exists
    err = capsys.readouterr().err
    assert f"log: {report.failed.log}" in err and "could not copy log of c" in err
    # Only the logs that are nowhere else are left; the run's other temporary logs are gone.
    left = sorted(p.name for p in (tmp_path / "tmp").rglob("*.log"))
    assert left == ["a.log", "b.log", "c.log"]


def test_the_temporary_log_folder_is_removed_when_every_log_reached_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = str(tmp_path / "store")
    assert run_plan(_plan(root), echo=False).ok
    report = run_plan(_plan(root, fail="a"), force=["a"], echo=False)
    assert report.failed is not None and store.exists(report.failed.log)
    assert list((tmp_path / "tmp").iterdir()) == []  # no creed-logs-* folder left behind
