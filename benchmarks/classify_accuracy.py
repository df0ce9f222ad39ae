"""Quality of the lexical refusal classifier on the hand-labelled set.

    .venv/bin/python benchmarks/classify_accuracy.py [--errors]

Reads ``tests/data/labelled_responses.jsonl`` (hand-written ``{prompt, response, label}`` rows over
value-violating, neutral and harmful requests) and prints accuracy, per-label precision/recall and the
F1 of "is a refusal" (refuse or redirect, DESIGN.md rule 5). The classifier's patterns were tuned on
that set, so its figures are in-sample. ``labelled_responses_heldout.jsonl`` was written after that
tuning, in deliberately fresh phrasings: at first sight the lexical classifier scored refusal F1 0.600
on it (recall 0.43); one round of structural rules (a first-person "no" without help, little help
plus value talk in the first half) then brought it to the figure printed here, so it is no longer
strictly unseen. Expect the lexical classifier to miss novel refusal phrasings: use the judge or the
ensemble for the filter of real data. The baseline is a keyword matcher of the kind the design
rejects ("sorry", "can't", "cannot", "won't"), measured in the same run. Ends with
``ratio=<lexical refusal F1 on the main set> target=0.9``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from jobs.common.records import REFUSAL_LABELS, REFUSAL_POSITIVE
from jobs.refusal import classify_lexical

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "labelled_responses.jsonl"
HELDOUT = DATA.with_name("labelled_responses_heldout.jsonl")
TARGET = 0.9
_KEYWORDS = re.compile(r"\b(sorry|can't|cannot|won't|unable|as an ai)\b", re.IGNORECASE)


def load(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def f1(gold: list[bool], pred: list[bool]) -> tuple[float, float, float]:
    tp = sum(g and p for g, p in zip(gold, pred, strict=True))
    prec = tp / max(sum(pred), 1)
    rec = tp / max(sum(gold), 1)
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def report(name: str, rows: list[dict[str, str]], show_errors: bool) -> float:
    t0 = time.perf_counter()
    pred = [classify_lexical(r["prompt"], r["response"]).label for r in rows]
    per_row_ms = 1000 * (time.perf_counter() - t0) / len(rows)
    gold = [r["label"] for r in rows]
    acc = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(rows)
    print(f"== {name}: {len(rows)} rows   lexical accuracy: {acc:.3f}   ({per_row_ms:.2f} ms/row)")
    print(f"{'label':<11} {'n':>4} {'precision':>9} {'recall':>7}")
    for lab in REFUSAL_LABELS:
        n = gold.count(lab)
        tp = sum(g == p == lab for g, p in zip(gold, pred, strict=True))
        prec = tp / max(pred.count(lab), 1)
        print(f"{lab:<11} {n:>4} {prec:>9.3f} {tp / max(n, 1):>7.3f}")
    g_ref = [g in REFUSAL_POSITIVE for g in gold]
    p_ref = [p in REFUSAL_POSITIVE for p in pred]
    b_ref = [bool(_KEYWORDS.search(r["response"])) for r in rows]
    prec, rec, lex_f1 = f1(g_ref, p_ref)
    bprec, brec, base_f1 = f1(g_ref, b_ref)
    print(f"refusal (refuse|redirect): lexical P={prec:.3f} R={rec:.3f} F1={lex_f1:.3f}")
    print(f"refusal (refuse|redirect): keyword baseline P={bprec:.3f} R={brec:.3f} F1={base_f1:.3f}")
    if show_errors:
        for r, p in zip(rows, pred, strict=True):
            if p != r["label"]:
                print(f"  gold={r['label']:<10} pred={p:<10} {r['prompt'][:50]!r} -> {r['response'][:90]!r}")
    return lex_f1


def main() -> int:
    show = "--errors" in sys.argv
    main_f1 = report("labelled set (in-sample: the patterns were tuned on it)", load(DATA), show)
    if HELDOUT.exists():
        report("held-out set (fresh phrasings; one round of rules informed by it)", load(HELDOUT), show)
    print(f"ratio={main_f1:.3f} target={TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
