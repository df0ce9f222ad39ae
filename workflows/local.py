"""The local backend: run a plan on this machine, one subprocess per step.

Steps run in dependency order, independent ones in parallel up to ``workers``; GPU steps run one
at a time per visible GPU (one at a time in all on a CPU-only machine). Each step is exactly the
command the Argo backend runs in a container: ``python -m jobs.<stage> --config <uri>``. A step
whose manifest says it is complete for the same config is skipped; the first failure stops new
steps from starting and is reported with its exit code and log.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobs.common import manifest, store
from jobs.common.errors import CreedError, InputError
from workflows.plan import Plan, Step, topological_order
from workflows.staging import stage_inputs


@dataclass
class Failure:
    step: str
    exit_code: int
    log: str


@dataclass
class RunReport:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: Failure | None = None
    not_started: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed is None and not self.interrupted


def _match(name: str, globs: list[str] | None) -> bool:
    return bool(globs) and any(fnmatch.fnmatchcase(name, g) for g in globs or [])


def step_complete(step: Step) -> bool:
    return bool(step.manifest) and manifest.is_complete(
        step.manifest, step.config_hash(), step.config.upstream
    )


def _gpu_count() -> int:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return len([ln for ln in out.stdout.splitlines() if ln.startswith("GPU")])
    except (OSError, subprocess.SubprocessError):
        return 0


@dataclass
class _Running:
    step: Step
    proc: subprocess.Popen[bytes]
    log_path: Path
    gpu: int | None
    started: float


def run_plan(
    plan: Plan,
    *,
    only: list[str] | None = None,
    force: list[str] | None = None,
    workers: int = 1,
    python: str = sys.executable,
    echo: bool = True,
    poll_s: float = 0.2,
) -> RunReport:
    """Run the plan; return what ran, what was skipped and the first failure, if any."""
    report = RunReport()
    order = topological_order(plan.steps)
    selected = [s for s in order if not only or _match(s.name, only)]
    if only and not selected:
        raise InputError(f"--only {' '.join(only)}: matches no step; `creed plan SPEC` lists them")
    stage_inputs(plan)

    def say(msg: str) -> None:
        if echo:
            print(msg, file=sys.stderr, flush=True)

    done: set[str] = set()
    # Completeness is decided when a step becomes ready, not up front: a step upstream that reruns
    # and changes its outputs makes the steps that consume them stale.
    pending: list[Step] = list(selected)
    selected_names = {s.name for s in selected}
    for s in order:  # steps outside --only count as done only if their manifest says so
        if s.name not in selected_names and step_complete(s):
            done.add(s.name)
    for s in pending:
        missing = [d for d in s.depends if d not in done and d not in {p.name for p in pending}]
        if missing:
            raise InputError(
                f"step '{s.name}' needs {missing}, which are not complete and not selected; "
                "run them first or widen --only"
            )

    n_gpu = _gpu_count()
    free_gpus = list(range(n_gpu)) if n_gpu else [-1]  # -1: the CPU stands in for one "GPU" slot
    running: dict[str, _Running] = {}
    # Each step logs here while it runs; the log is then copied to the store. The folder is removed
    # at the end unless a log could not be copied (the store is down): then it is the only copy.
    logdir = Path(tempfile.mkdtemp(prefix="creed-logs-"))
    kept: list[Path] = []
    total = len(pending)  # steps that may run (complete ones are skipped when they become ready)
    stop = False

    # Parallel steps share the CPU cores: without a cap every torch process starts one thread per
    # core, and the oversubscribed, spin-waiting thread pools run several times slower than one step.
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))

    def start(s: Step) -> None:
        store.write_text(s.config_uri, s.config_json())
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, threads)
        gpu = None
        if s.gpu:
            gpu = free_gpus.pop(0)
            if gpu >= 0:
                env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        if _match(s.name, force):
            env["CREED_FORCE"] = "true"
        log_path = logdir / f"{s.name}.log"
        with open(log_path, "wb") as log_f:
            proc = subprocess.Popen(
                [python, "-m", s.job, "--config", s.config_uri],
                stdout=log_f,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: Ctrl-C here is forwarded deliberately
            )
        running[s.name] = _Running(s, proc, log_path, gpu, time.monotonic())
        say(f"[run ] {s.name} ({len(report.ran) + len(running)}/{total})")

    def save_log(r: _Running) -> str:
        """Copy the step's log to the store; return where the log now is (the local copy if not)."""
        if r.step.log:
            try:
                store.write_bytes(r.step.log, r.log_path.read_bytes())
                return r.step.log
            except (CreedError, OSError) as exc:
                say(
                    f"[warn] could not copy log of {r.step.name} to {r.step.log} ({exc}); kept at {r.log_path}"
                )
        kept.append(r.log_path)
        return str(r.log_path)

    def finish(r: _Running, code: int) -> None:
        if r.gpu is not None:
            free_gpus.append(r.gpu)
        log = save_log(r)
        secs = time.monotonic() - r.started
        if code == 0:
            done.add(r.step.name)
            report.ran.append(r.step.name)
            say(f"[ok  ] {r.step.name} ({secs:.1f}s)")
        elif report.failed is None:
            report.failed = Failure(r.step.name, code, log)
            say(f"[FAIL] {r.step.name} exit {code} ({secs:.1f}s); log: {log}")
            tail = r.log_path.read_text(errors="replace").splitlines()[-15:]
            for line in tail:
                say(f"       | {line}")

    try:
        while pending or running:
            if not stop:
                progressed = True
                while progressed:  # skipping a complete step can make others ready at once
                    progressed = False
                    for s in list(pending):
                        if any(d not in done for d in s.depends):
                            continue
                        if not _match(s.name, force) and step_complete(s):
                            pending.remove(s)
                            done.add(s.name)
                            report.skipped.append(s.name)
                            say(f"[skip] {s.name} (complete)")
                            progressed = True
                            continue
                        if len(running) >= max(1, workers) or (s.gpu and not free_gpus):
                            continue
                        pending.remove(s)
                        start(s)
            if not running:
                if stop or not pending:
                    break
                # Nothing can start (cannot happen after validation): fail loudly rather than spin.
                raise InputError(f"steps cannot start, dependencies unmet: {[s.name for s in pending]}")
            time.sleep(poll_s)
            for name, r in list(running.items()):
                code = r.proc.poll()
                if code is not None:
                    del running[name]
                    finish(r, code)
                    if code != 0:
                        stop = True
    except KeyboardInterrupt:
        report.interrupted = True
        say("[stop] interrupted; stopping running steps")
        for r in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        for r in running.values():
            try:
                r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait()
            save_log(r)
    finally:
        _clean_logs(logdir, kept)
    report.not_started = [s.name for s in pending]
    return report


def _clean_logs(logdir: Path, kept: list[Path]) -> None:
    """Remove the run's temporary log folder, but for the logs that are only there."""
    if not kept:
        shutil.rmtree(logdir, ignore_errors=True)
        return
    for p in logdir.iterdir():
        if p not in kept:
            p.unlink(missing_ok=True)
