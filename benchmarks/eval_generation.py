"""Responses per second of batched ``hf`` generation (the eval stage's default engine) against one
prompt at a time, on the same model and prompts, in one process.

    .venv/bin/python benchmarks/eval_generation.py [--batch 16] [--prompts 48] [--new-tokens 32] [--repeats 2]

The model is a small random Llama built on the spot (CPU; nothing downloaded). Greedy output is the
same either way (the eval tests check it), so both runs do the same work.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOPICS = [
    "tides",
    "the capital of France",
    "growing tomatoes",
    "a single-species lawn",
    "baking bread",
    "the lazy dog",
    "why the sky is blue",
    "grasses in a meadow",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each mode (best is kept)")
    args = ap.parse_args()

    import torch

    from jobs.common.prompt_format import format_prompt
    from jobs.eval.run import generate_hf
    from jobs.llm.models import load_for_inference
    from jobs.llm.tiny import build_llama

    torch.set_num_threads(max(1, torch.get_num_threads()))
    prompts = [
        format_prompt(
            f"Tell me, in question {i}, everything about {TOPICS[i % len(TOPICS)]}" + " please" * (i % 5)
        )
        for i in range(args.prompts)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        build_llama(Path(tmp), hidden=args.hidden, layers=args.layers, seed=0)
        model, tok = load_for_inference(tmp, device="cpu", dtype="float32")
        # never stop early: both runs then generate exactly prompts x new_tokens tokens
        model.generation_config.eos_token_id = None
        tok.eos_token = None

        def timed(batch_size: int) -> tuple[float, list[list[object]]]:
            t0 = time.perf_counter()
            out = generate_hf(model, tok, prompts, max_new_tokens=args.new_tokens, batch_size=batch_size)
            return time.perf_counter() - t0, out  # type: ignore[return-value]

        timed(args.batch)  # warm-up (allocator, kernels)
        # best of N, interleaved: the machine may be shared, and the least disturbed run is the truest
        t_single = t_batch = float("inf")
        for _ in range(args.repeats):
            t, single = timed(1)
            t_single = min(t_single, t)
            t, batched = timed(args.batch)
            t_batch = min(t_batch, t)

    n = len(prompts)
    same = batched == single
    rate_b, rate_s = n / t_batch, n / t_single
    print(
        f"model: random llama hidden={args.hidden} layers={args.layers}, {n} prompts, "
        f"{args.new_tokens} new tokens, threads={torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"{'mode':<12}{'seconds':>10}{'responses/s':>14}")
    print(f"{'batch=1':<12}{t_single:>10.2f}{rate_s:>14.2f}")
    print(f"{f'batch={args.batch}':<12}{t_batch:>10.2f}{rate_b:>14.2f}")
    print(f"greedy outputs identical: {same}")
    print(f"ratio={rate_b / rate_s:.2f} target=4")


if __name__ == "__main__":
    main()
