"""Requests per second of the ``openai`` provider of the LLM client (the generate stage's path: real
``openai`` client, bounded concurrency, answers written to the store cache) against the ideal
``concurrency / latency`` of a loopback OpenAI-compatible server with a fixed latency.

    .venv/bin/python benchmarks/generate_throughput.py [--requests 2000] [--concurrency 64] [--latency 0.05]

The server runs in its own process (its own GIL), like a real endpoint. Also printed: the client's CPU
time per request (this process only). The last line is ``ratio=<measured/ideal> target=0.85``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 0.85


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"the fake server did not start (said {base_url!r})")
    return proc, base_url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05, help="server latency per request, seconds")
    ap.add_argument("--no-cache", action="store_true", help="do not write answers to a store cache")
    ap.add_argument(
        "--cache-dir",
        default=str(ROOT / "store"),
        help="folder the temporary cache is made in (default: the local store, ./store)",
    )
    args = ap.parse_args()

    from jobs.llm import LLMClient, LLMConfig

    proc, base_url = start_server(args.latency)
    try:
        cfg = LLMConfig(
            provider="openai", model="bench", base_url=base_url, concurrency=args.concurrency, max_tokens=64
        )

        def requests(tag: str, n: int) -> list[tuple[list[dict[str, str]], int]]:
            return [
                (
                    [
                        {"role": "system", "content": "You are terse."},
                        {"role": "user", "content": f"{tag} {i}"},
                    ],
                    0,
                )
                for i in range(n)
            ]

        Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=args.cache_dir) as tmp:
            cache = None if args.no_cache else str(Path(tmp) / "cache")
            with LLMClient(cfg, cache) as client:
                client.chat_many(requests("warmup", args.concurrency))  # open the connections
                r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                results = client.chat_many(requests("question", args.requests))
                wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        errors = sum(not r.ok for r in results)
        if errors:
            raise SystemExit(f"{errors} requests failed: {next(r.error for r in results if not r.ok)}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    server_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu_s = server_cpu.ru_utime + server_cpu.ru_stime

    rate = args.requests / wall
    ideal = args.concurrency / args.latency
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"requests={args.requests} concurrency={args.concurrency} latency_ms={args.latency * 1000:g} cache={cache is not None}"
    )
    print(f"{'':24}{'req/s':>10}")
    print(f"{'ideal (conc/latency)':24}{ideal:>10.1f}")
    print(f"{'measured':24}{rate:>10.1f}")
    per = 1000 / args.requests
    print(
        f"client CPU per request: {(user + system) * per:.2f} ms "
        f"(user {user * per:.2f}, system {system * per:.2f})   wall: {wall:.2f} s"
    )
    print(
        f"server CPU per request (whole run, warm-up included): {server_cpu_s / (args.requests + args.concurrency) * 1000:.2f} ms"
    )
    print(f"ratio={rate / ideal:.3f} target={TARGET}")


if __name__ == "__main__":
    main()
