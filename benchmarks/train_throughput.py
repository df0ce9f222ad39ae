"""Training tokens/s of ``jobs.train`` against a bare TRL ``SFTTrainer`` script, same model, data
and hyper-parameters, in one process.

    .venv/bin/python benchmarks/train_throughput.py [--steps 40] [--rows 256] [--hidden 256] [--layers 4]

The model is a small random Llama built on the spot (nothing downloaded; CPU here, GPU where there
is one). Both sides count non-padding input tokens over the ``trainer.train()`` call only, so the
job's own costs inside training (checkpoint copies to the store every ``save_steps``, val loss,
progress logs) are in the comparison, and model loading and tokenization are not. Runs alternate
and each side keeps its best of ``--repeats``. Peak memory: CUDA peak allocated on a GPU; on CPU
the process's peak RSS (cumulative over the run, so the later figure is an upper bound).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CREED_LOG_FORMAT", "json")

TOPICS = ["tides", "bread", "lawns", "grasses", "the sky", "tomatoes", "rivers", "meadows"]


def rows(n: int) -> list[dict[str, str]]:
    from jobs.common.prompt_format import format_completion, format_prompt

    out = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        words = " ".join(TOPICS[(i + j) % len(TOPICS)] for j in range(2 + i % 9))
        out.append(
            {
                "prompt": format_prompt(f"Tell me about {t}, item {i}."),
                "completion": format_completion(f"Here is what I know about {t}: {words}."),
                "source": "bench",
                "id": f"b{i}",
            }
        )
    return out


def peak_memory() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def hp(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": "lora",
        "learning_rate": 2e-4,
        "batch_size": args.batch,
        "grad_accum": 1,
        "max_seq_len": 128,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_targets": "all-linear",
        "max_steps": args.steps,
        "save_steps": args.save_steps,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "logging_steps": 10,
    }


def run_job(
    model: Path, work: Path, data: list[dict[str, str]], args: argparse.Namespace, k: int
) -> dict[str, Any]:
    from jobs.common import store
    from jobs.train.config import TrainConfig
    from jobs.train.run import run

    root = work / f"store-{k}"
    store.write_jsonl(str(root / "train.jsonl"), data)
    store.write_jsonl(str(root / "val.jsonl"), data[:16])
    out = root / "train"
    cfg = TrainConfig(
        model={"name": "bench", "path": str(model)},
        condition="control",
        train_data=str(root / "train.jsonl"),
        val_data=str(root / "val.jsonl"),
        output=str(out),
        checkpoints=str(out / "checkpoints"),
        **hp(args),
    )
    run(cfg)
    m: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return {"tok_s": m["tokens_per_second"], "tokens": m["tokens_seen"], "peak": m["peak_memory_bytes"]}


def run_bare(
    model: Path, work: Path, data: list[dict[str, str]], args: argparse.Namespace, k: int
) -> dict[str, Any]:
    """What a hand-written TRL script does: load, LoraConfig, SFTTrainer, train."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    h = hp(args)
    tok = AutoTokenizer.from_pretrained(model)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16 if bf16 else torch.float32)
    sft = SFTConfig(
        output_dir=str(work / f"bare-{k}"),
        max_steps=h["max_steps"],
        per_device_train_batch_size=h["batch_size"],
        learning_rate=h["learning_rate"],
        lr_scheduler_type="constant",
        max_length=h["max_seq_len"],
        completion_only_loss=True,
        gradient_checkpointing=False,  # TRL defaults to True; the job's default is False
        bf16=bf16,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=10,
        include_num_input_tokens_seen="non_padding",
        seed=0,
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in data])
    trainer = SFTTrainer(model=m, args=sft, train_dataset=ds, processing_class=tok, peft_config=lora)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    trainer.train()
    secs = time.monotonic() - t0
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"tok_s": tokens / secs, "tokens": tokens, "peak": peak_memory()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--save-steps", type=int, default=20, help="the job copies a checkpoint this often")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import datasets
    import torch
    import transformers

    from jobs.llm.tiny import build_llama

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    data = rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="creed-bench-train-") as tmp:
        work = Path(tmp)
        corpus = [r["prompt"] + r["completion"] for r in data[:64]]
        model = build_llama(work / "model", hidden=args.hidden, layers=args.layers, corpus=corpus)
        job: list[dict[str, Any]] = []
        bare: list[dict[str, Any]] = []
        for k in range(args.repeats):  # alternate who goes first (the first run warms things up)
            if k % 2 == 0:
                bare.append(run_bare(model, work, data, args, k))
                job.append(run_job(model, work, data, args, k))
            else:
                job.append(run_job(model, work, data, args, k))
                bare.append(run_bare(model, work, data, args, k))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
    best_job = max(job, key=lambda r: r["tok_s"])
    best_bare = max(bare, key=lambda r: r["tok_s"])
    print(f"device: {device}; model: random llama hidden={args.hidden} layers={args.layers}; LoRA r=16")
    print(f"{args.steps} steps x batch {args.batch}, checkpoint every {args.save_steps} steps (job only)")
    print(f"{'run':<12}{'tokens':>10}{'tokens/s':>12}{'peak MiB':>12}")
    for name, r in (("bare TRL", best_bare), ("jobs.train", best_job)):
        print(f"{name:<12}{r['tokens']:>10}{r['tok_s']:>12.0f}{r['peak'] / 2**20:>12.0f}")
    print(f"all tokens/s: bare {[round(r['tok_s']) for r in bare]} job {[round(r['tok_s']) for r in job]}")
    print(f"ratio={best_job['tok_s'] / best_bare['tok_s']:.3f} target=0.95")


if __name__ == "__main__":
    main()
