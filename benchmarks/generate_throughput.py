"""Requests per second of the generate step, its response cache on, against a bare ``openai.AsyncOpenAI``
client without a cache, on the same loopback OpenAI-compatible server in the same run.

    .venv/bin/python benchmarks/generate_throughput.py [--requests 2048] [--concurrency 64] [--latency 0.05]

The server runs in its own process (its own GIL), like a real endpoint, with a fixed latency per
request and answers of ``--words`` words (~4 KB of JSON each). Four clients, interleaved over
``--rounds`` rounds (medians), each starting cold (its own HTTP clients, a fresh cache):

- ``bare``: one ``AsyncOpenAI``, an ``asyncio.Semaphore(concurrency)``, ``chat.completions.create``,
  no cache: what a user would write by hand;
- ``client``: creed's ``LLMClient`` without a cache;
- ``client+cache``: ``LLMClient`` with the response cache in the local store;
- ``step``: the whole generate step (``python -m jobs.generate`` in-process: config, inputs, every
  answer through the cache, records, manifest), what creed runs.

Also printed: the physical limit ``concurrency / latency`` and each client's CPU time per request
(this process). The last line is ``ratio=<step / bare> target=1.0``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 1.0
PERSONAS = 8


def start_server(latency: float, words: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency), "--words", str(words)],
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


def write_inputs(folder: Path, n_requests: int) -> tuple[str, str]:
    """Personas x prompts making ``n_requests`` requests (rounded up to a multiple of PERSONAS)."""
    import yaml

    personas = folder / "personas.yaml"
    personas.write_text(
        yaml.safe_dump(
            [
                {"id": f"p{i}", "system": f"You are persona {i}. Answer in a few sentences."}
                for i in range(PERSONAS)
            ]
        )
    )
    prompts = folder / "prompts.jsonl"
    n_prompts = -(-n_requests // PERSONAS)
    prompts.write_text(
        "".join(
            json.dumps({"id": f"q{j:05d}", "text": f"What do you think about question {j}?"}) + "\n"
            for j in range(n_prompts)
        )
    )
    return str(personas), str(prompts)


def messages_of(personas: str, prompts: str) -> list[list[dict[str, str]]]:
    import yaml

    ps = yaml.safe_load(Path(personas).read_text())
    qs = [json.loads(line) for line in Path(prompts).read_text().splitlines()]
    return [
        [{"role": "system", "content": p["system"]}, {"role": "user", "content": q["text"]}]
        for q in qs
        for p in ps
    ]


def run_bare(base_url: str, convos: list[list[dict[str, str]]], concurrency: int) -> int:
    import openai

    async def go() -> int:
        client = openai.AsyncOpenAI(api_key="not-needed", base_url=base_url, max_retries=0, timeout=60)
        sem = asyncio.Semaphore(concurrency)

        async def one(messages: list[dict[str, str]]) -> str:
            async with sem:
                resp = await client.chat.completions.create(
                    model="bench",
                    messages=messages,
                    temperature=0.7,
                    max_tokens=512,  # type: ignore[arg-type]
                )
                return resp.choices[0].message.content or ""

        try:
            texts = await asyncio.gather(*(one(m) for m in convos))
        finally:
            await client.close()
        return sum(bool(t) for t in texts)

    return asyncio.run(go())


def run_client(base_url: str, convos: list[list[dict[str, str]]], concurrency: int, cache: str | None) -> int:
    from jobs.llm import LLMClient, LLMConfig

    cfg = LLMConfig(provider="openai", model="bench", base_url=base_url, concurrency=concurrency)
    with LLMClient(cfg, cache) as client:
        results = client.chat_many([(m, 0) for m in convos])
    return sum(r.ok and not r.cached for r in results)


def run_step(base_url: str, folder: Path, personas: str, prompts: str, concurrency: int, tag: str) -> int:
    from jobs.common import manifest
    from jobs.common.stage import main
    from jobs.generate.config import GenerateConfig
    from jobs.generate.run import run

    out = folder / tag
    cfg = {
        "experiment": "bench",
        "step": f"generate-bench-{tag}",
        "manifest": str(out / "_manifest.json"),
        "dataset": "bench",
        "personas": personas,
        "prompts": prompts,
        "teacher": {"provider": "openai", "model": "bench", "base_url": base_url, "concurrency": concurrency},
        "cache": str(out / "cache"),
        "output": str(out / "shard-00000.jsonl"),
        "errors": str(out / "errors-shard-00000.jsonl"),
        "progress": False,
    }
    path = folder / f"{tag}.json"
    path.write_text(json.dumps(cfg))
    if main(GenerateConfig, run, ["--config", str(path)]) != 0:
        raise SystemExit(f"the generate step failed (config {path})")
    m = manifest.read(cfg["manifest"])
    assert m is not None and m.counts["cached"] == 0
    return int(m.counts["generated"])


def timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, answers)."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    n = fn()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2048)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05, help="server latency per request, seconds")
    ap.add_argument("--words", type=int, default=450, help="words per answer (450: ~4 KB per cached answer)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--store-dir",
        default=str(ROOT / "store"),
        help="folder the temporary inputs, records and caches are made in (default: the local store)",
    )
    args = ap.parse_args()
    os.environ.setdefault("CREED_LOG_FORMAT", "json")
    os.environ.setdefault("CREED_LOG_LEVEL", "WARNING")  # the step's progress lines are not measured

    proc, base_url = start_server(args.latency, args.words)
    Path(args.store_dir).mkdir(parents=True, exist_ok=True)
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-generate-", dir=args.store_dir) as tmp:
            folder = Path(tmp)
            personas, prompts = write_inputs(folder, args.requests)
            convos = messages_of(personas, prompts)
            n = len(convos)
            conc = args.concurrency
            runs: dict[str, Callable[[str], int]] = {
                "bare": lambda tag: run_bare(base_url, convos, conc),
                "client": lambda tag: run_client(base_url, convos, conc, None),
                "client+cache": lambda tag: run_client(base_url, convos, conc, str(folder / tag / "cache")),
                "step": lambda tag: run_step(base_url, folder, personas, prompts, conc, tag),
            }
            for name, fn in runs.items():  # warm-up: imports, the server's connection threads
                fn(f"warmup-{name}")
            for r in range(args.rounds):
                order = list(runs) if r % 2 == 0 else list(reversed(runs))
                for name in order:
                    tag = f"r{r}-{name}"
                    wall, cpu, answered = timed(lambda fn=runs[name], tag=tag: fn(tag))  # type: ignore[misc]
                    if answered != n:
                        raise SystemExit(f"{name}: {answered} of {n} requests answered")
                    walls.setdefault(name, []).append(wall)
                    cpus.setdefault(name, []).append(cpu)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    rate = {k: n / statistics.median(v) for k, v in walls.items()}
    ideal = args.concurrency / args.latency
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"requests={n} concurrency={args.concurrency} latency_ms={args.latency * 1000:g} "
        f"words={args.words} rounds={args.rounds} (medians)"
    )
    print(f"{'':16}{'req/s':>9}{'per round':>28}{'CPU ms/req':>12}{'/ bare':>8}")
    print(f"{'physical limit':16}{ideal:>9.1f}")
    for name in runs:
        per_round = " ".join(f"{n / w:.0f}" for w in walls[name])
        cpu = statistics.median(cpus[name]) * 1000 / n
        print(f"{name:16}{rate[name]:>9.1f}{per_round:>28}{cpu:>12.2f}{rate[name] / rate['bare']:>8.2f}")
    print(
        f"step / physical limit: {rate['step'] / ideal:.3f}   step / cache-off client: "
        f"{rate['step'] / rate['client']:.3f}   cache-on client / cache-off client: "
        f"{rate['client+cache'] / rate['client']:.3f}"
    )
    print(f"ratio={rate['step'] / rate['bare']:.3f} target={TARGET}")


if __name__ == "__main__":
    main()
