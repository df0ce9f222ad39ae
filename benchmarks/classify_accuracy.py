"""Quality of the refusal classifiers (lexical, learned) on the labelled corpus, against a string matcher.

    .venv/bin/python benchmarks/classify_accuracy.py [--errors dev]

Reads the tuning splits ``data/labels/dev.jsonl`` and ``data/labels/test.jsonl`` (the first test
split: it was consulted while lexicon-2 and lexicon-3 were tuned, so its figures are in-sample too) and
the held-out ``data/labels/test2.jsonl`` (rows from other sources, written without access to the
classifier's rules and never used to tune it; provenance in ``data/labels/README-*.md``). For each split, and per
source and per label, it prints the lexical classifier's accuracy, Cohen's kappa, per-label
precision/recall and the figures the experiment rests on: binary accuracy (refusal = refuse or
redirect) and the false-refusal rate (comply, caveat or incoherent responses called a refusal). The
baseline, run on the same rows, is a plain refusal-phrase string matcher (XSTest's prefix list:
"I'm sorry", "I cannot", "As an AI", ...). Only test2's figures are a measurement; the tuning
splits' figures are in-sample. ``--errors dev`` lists the dev rows whose refusal/non-refusal call is wrong
(test errors are not printed: reading them would be tuning on the test split).

The learned classifier (``jobs/refusal/learned.py``; trained on dev and test by
``scripts/train_learned_classifier.py``, so only test2 is reported for it) runs on test2 alone.

Ends with the issue's targets (binary accuracy >= 0.90, false refusals <= 5%) for each classifier on
its own line, and ``ratio=<learned test2 binary accuracy / string matcher's> target=1.0``.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable

from jobs.refusal import LEARNED_VERSION, LEXICON_VERSION, LearnedClassifier, classify_lexical
from jobs.refusal.gold import DEV, DEV2, TEST, GoldRow, read_gold
from jobs.refusal.metrics import Agreement, agreement, format_agreement, is_refusal, string_match_label

TARGET_ACCURACY = 0.90
TARGET_FALSE_REFUSALS = 0.05


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _row(name: str, n: int, a: Agreement, s: Agreement) -> str:
    return (
        f"{name:<20} {n:>4}  {a.accuracy:>6.3f} {a.binary_accuracy:>7.3f} {_pct(a.false_refusal_rate):>7} "
        f"{_pct(a.missed_refusal_rate):>7}   {s.binary_accuracy:>7.3f} {_pct(s.false_refusal_rate):>7}"
    )


Labeller = Callable[[list[GoldRow]], list[str]]


def lexical(rows: list[GoldRow]) -> list[str]:
    return [classify_lexical(r.prompt, r.response).label for r in rows]


def report(
    split: str, rows: list[GoldRow], show_errors: bool, labeller: Labeller = lexical, name: str = ""
) -> tuple[Agreement, Agreement]:
    name = name or f"lexical classifier {LEXICON_VERSION}"
    t0 = time.perf_counter()
    pred = labeller(rows)
    ms = 1000 * (time.perf_counter() - t0) / len(rows)
    base = [string_match_label(r.response) for r in rows]
    gold = [r.label for r in rows]
    lex, sm = agreement(gold, pred), agreement(gold, base)
    print(f"== {split}: {len(rows)} rows, {name} ({ms:.2f} ms/row)")
    print(format_agreement(lex))
    print(
        f"\nstring matcher: binary accuracy {sm.binary_accuracy:.3f}, false refusals {_pct(sm.false_refusal_rate)}"
    )
    print(
        f"\n{'source':<20} {'n':>4}  {'acc':>6} {'binary':>7} {'false':>7} {'missed':>7}   "
        f"{'string matcher: binary, false':>30}"
    )
    by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by[r.source].append(i)
    for src, idx in by.items():
        a = agreement([gold[i] for i in idx], [pred[i] for i in idx])
        s = agreement([gold[i] for i in idx], [base[i] for i in idx])
        print(_row(src, len(idx), a, s))
    print(_row("all", len(rows), lex, sm))
    if show_errors:
        print(f"\n{split} rows called wrongly (refusal or not):")
        for r, p in zip(rows, pred, strict=True):
            if is_refusal(p) != is_refusal(r.label):
                print(f"  {r.id} gold={r.label:<10} pred={p:<10} {r.prompt[:50]!r} -> {r.response[:90]!r}")
    print()
    return lex, sm


def main(argv: list[str]) -> int:
    errors = "--errors" in argv and "dev" in argv
    report("dev (in-sample: the lexicon was tuned on it)", read_gold(str(DEV)), errors)
    report("test, the first test split (in-sample since lexicon-3)", read_gold(str(DEV2)), False)
    test2 = read_gold(str(TEST))
    lex, sm = report("test2 (held out: never used for tuning)", test2, False)
    clf = LearnedClassifier()

    def learned(rows: list[GoldRow]) -> list[str]:
        return [v.label for v in clf.classify_many([(r.prompt, r.response) for r in rows])]

    lrn, _ = report(
        "test2 (held out: never trained on)", test2, False, learned, f"learned classifier {LEARNED_VERSION}"
    )
    for name, a in ((f"lexical {LEXICON_VERSION}", lex), (f"learned {LEARNED_VERSION}", lrn)):
        fr = a.false_refusal_rate or 0.0
        met = a.binary_accuracy >= TARGET_ACCURACY and fr <= TARGET_FALSE_REFUSALS
        print(
            f"test2, {name}: binary accuracy {a.binary_accuracy:.3f} (target >= {TARGET_ACCURACY}), false "
            f"refusals {_pct(fr)} (target <= {100 * TARGET_FALSE_REFUSALS:.0f}%): {'met' if met else 'NOT met'}"
        )
    print(f"ratio={lrn.binary_accuracy / sm.binary_accuracy:.3f} target=1.0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
