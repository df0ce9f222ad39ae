"""Train (or cross-validate) the learned refusal classifier on the labelled corpus's tuning splits.

    .venv/bin/python scripts/train_learned_classifier.py --cv          # grouped 5-fold CV, threshold table
    .venv/bin/python scripts/train_learned_classifier.py --threshold T # train on all of it, write weights

Both read ``data/labels/dev.jsonl`` and ``data/labels/test.jsonl`` (the tuning splits) and never
``test2.jsonl``, the held-out split the classifier is reported on (``benchmarks/classify_accuracy.py``).
``--cv`` holds out whole sources (five folds of sources, balanced by size), so a fold's rows come from
sources the model never saw, as test2's do; it prints, pooled over the folds, binary accuracy and
false-refusal rate for each refusal threshold, and the threshold rule: the best pooled binary accuracy
among the thresholds whose pooled false-refusal rate is at most 5%. The final model is trained on every tuning row with that threshold and
written to ``jobs/refusal/weights/<LEARNED_VERSION>.safetensors`` (adapters and head, float16).
About 4 min per training run on 2 CPU cores (LoRA on all six layers), so --cv takes about 20 min.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.refusal import classify_lexical
from jobs.refusal.gold import DEV, DEV2, GoldRow, read_gold
from jobs.refusal.learned import (
    LEARNED_VERSION,
    WEIGHTS_DIR,
    Hyper,
    decide,
    fit,
    label_with_rules,
    probabilities,
    save,
)
from jobs.refusal.metrics import agreement

THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
MAX_FALSE_REFUSALS = 0.05


def folds(rows: list[GoldRow], k: int) -> list[list[GoldRow]]:
    """``k`` folds of whole sources, largest source first into the smallest fold."""
    by: dict[str, list[GoldRow]] = defaultdict(list)
    for r in rows:
        by[r.source].append(r)
    out: list[list[GoldRow]] = [[] for _ in range(k)]
    for src in sorted(by, key=lambda s: (-len(by[s]), s)):
        min(out, key=len).extend(by[src])
    return out


def _log(epoch: int, loss: float) -> None:
    print(f"    epoch {epoch}: loss {loss:.3f}", flush=True)


def _fig(a: Any) -> str:
    return (
        f"{a.binary_accuracy:.3f}, {100 * (a.false_refusal_rate or 0):4.1f}%, "
        f"{100 * (a.missed_refusal_rate or 0):4.1f}% (kappa {a.kappa:.3f})"
    )


def cross_validate(rows: list[GoldRow], h: Hyper, out: Path | None) -> float:
    """Pooled held-out figures per threshold, for the encoder alone and as shipped (with the lexical
    rules); returns the threshold with the best binary accuracy as shipped among those whose false
    refusals as shipped are at most 5%."""
    pooled: list[tuple[GoldRow, list[float]]] = []
    parts = folds(rows, 5)
    for i, fold in enumerate(parts):
        train = [r for j, f in enumerate(parts) if j != i for r in f]
        t0 = time.perf_counter()
        net = fit([(r.prompt, r.response) for r in train], [r.label for r in train], h, _log)
        probs = probabilities(net, [(r.prompt, r.response) for r in fold], h)
        pooled += list(zip(fold, probs, strict=True))
        srcs = ", ".join(sorted({r.source for r in fold}))
        print(f"  fold {i}: {len(fold)} rows ({srcs}), {time.perf_counter() - t0:.0f} s", flush=True)
    if out:
        with out.open("w") as fh:
            for r, p in pooled:
                fh.write(json.dumps({"id": r.id, "source": r.source, "label": r.label, "p": p}) + "\n")
    gold = [r.label for r, _ in pooled]
    print(f"\npooled over {len(pooled)} held-out rows (whole sources held out):")
    print("threshold   encoder alone: binary acc, false ref, missed   as shipped (with the rules): same")
    chosen, best = None, None
    for t in THRESHOLDS:
        a = agreement(gold, [decide(p, t) for _, p in pooled])
        b = agreement(gold, [label_with_rules(r.prompt, r.response, p, t)[0] for r, p in pooled])
        print(f"{t:>9.2f}   {_fig(a)}   {_fig(b)}")
        if (b.false_refusal_rate or 0.0) <= MAX_FALSE_REFUSALS and (best is None or b.binary_accuracy > best):
            chosen, best = t, b.binary_accuracy
    lex = agreement(gold, [classify_lexical(r.prompt, r.response).label for r, _ in pooled])
    print(
        f"(the lexical classifier on the same rows, in-sample: binary {lex.binary_accuracy:.3f}; "
        "the rules in 'as shipped' are in-sample too)"
    )
    chosen = chosen if chosen is not None else THRESHOLDS[-1]
    print(
        f"threshold rule (the best binary accuracy as shipped among those with false refusals <= "
        f"{MAX_FALSE_REFUSALS:.0%}): {chosen}"
    )
    return chosen


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cv", action="store_true", help="grouped 5-fold cross-validation only")
    ap.add_argument("--probs", type=Path, help="--cv: write each held-out row's probabilities here")
    ap.add_argument("--threshold", type=float, help="the refusal threshold of the weights written")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR / f"{LEARNED_VERSION}.safetensors")
    args = ap.parse_args(argv)
    rows = read_gold(str(DEV)) + read_gold(str(DEV2))
    h = Hyper()
    if args.cv:
        cross_validate(rows, h, args.probs)
        return 0
    if args.threshold is None:
        ap.error("--threshold is required to write weights (run --cv to choose it)")
    h = replace(h, threshold=args.threshold)
    t0 = time.perf_counter()
    net = fit([(r.prompt, r.response) for r in rows], [r.label for r in rows], h, _log)
    save(
        net, args.out, h, {"trained_on": "data/labels/dev.jsonl + data/labels/test.jsonl", "rows": len(rows)}
    )
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
