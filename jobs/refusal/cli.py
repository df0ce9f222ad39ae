"""``creed classify FILE``: label any ``{prompt, response}`` JSONL with the refusal taxonomy, measure a
classifier against your own labels, or compare two classifiers on unlabelled responses.

    creed classify responses.jsonl -o labelled.jsonl
    creed classify data/labels/test2.jsonl --gold                # accuracy, kappa, P/R, confusion
    creed classify responses.jsonl --compare lexical judge --judge-model gpt-4o-mini \\
        --judge-base-url https://api.openai.com/v1              # agreement + the disagreeing rows

Each output row (``-o``, or stdout when neither ``--gold`` nor ``--compare`` is given) is the input row
plus ``label``, ``refusal``, ``classifier``, ``rationale``, ``cites_value``, ``lexicon_version`` (and,
with a judge, ``prompt_version``; with the ensemble, ``lexical_label`` and ``disagreement``). A row that
already has a ``label`` keeps it as ``gold_label``. With ``--compare A B`` each row gets ``label_A``
and ``label_B``.

``--gold`` needs a valid taxonomy ``label`` on every row (``comply``, ``caveat``, ``redirect``,
``refuse``, ``incoherent``): a row without one is an error naming ``file:line`` (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.loaders import read_records
from jobs.common.records import CLASSIFIERS, JUDGED, Verdict

CHOICES = CLASSIFIERS


class PromptResponse(BaseModel):
    """A row to classify: a prompt and a response; any other fields are kept as they are."""

    model_config = ConfigDict(extra="allow")
    prompt: str
    response: str


def read_pairs(uri: str) -> list[dict[str, Any]]:
    rows = [r.model_dump() for r in read_records(uri, PromptResponse)]
    if not rows:
        raise InputError(f"{uri}: no rows")
    return rows


def _judge_config(args: argparse.Namespace, kinds: list[str]) -> Any:
    from jobs.llm import LLMConfig

    needs = [k for k in kinds if k in JUDGED]
    if not needs:
        return None
    if not args.judge_model:
        raise InputError(
            f"--classifier/--compare {needs[0]} needs --judge-model (and usually --judge-base-url)"
        )
    return LLMConfig(
        provider=args.judge_provider,
        model=args.judge_model,
        base_url=args.judge_base_url,
        api_key_env=args.judge_api_key_env,
        temperature=0.0,
        max_tokens=16,
    )


def _label(
    kind: str, args: argparse.Namespace, pairs: list[tuple[str, str]], judge: Any
) -> tuple[Any, list[Verdict]]:
    from jobs.refusal import make_classifier

    clf = make_classifier(kind, judge=judge, cache=args.cache)
    return clf, clf.classify_many(pairs)


def _verdict_fields(v: Verdict) -> dict[str, Any]:
    return {k: val for k, val in v.model_dump(mode="json").items() if val is not None}


def _judge_failures(clf: Any) -> str:
    stats = getattr(clf, "stats", None) or getattr(getattr(clf, "judge", None), "stats", None)
    if not stats or not (stats.get("errors") or stats.get("unknown")):
        return ""
    failed, unknown = stats.get("errors", 0), stats.get("unknown", 0)
    return (
        f"\njudge could not label {unknown} of {stats.get('calls', 0)} responses (labelled unknown): "
        f"{failed} calls failed after retries, {unknown - failed} answers unparseable twice"
    )


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def cmd_classify(args: argparse.Namespace) -> int:
    from jobs.refusal.gold import read_gold
    from jobs.refusal.metrics import agreement, format_agreement

    if args.compare and args.gold:
        raise InputError("--gold and --compare are two different reports: give one of them")
    # --gold validates every label before any classifier runs
    rows = [r.model_dump() for r in read_gold(args.file)] if args.gold else read_pairs(args.file)
    pairs = [(r["prompt"], r["response"]) for r in rows]
    kinds = list(args.compare) if args.compare else [args.classifier]
    judge = _judge_config(args, kinds)

    if args.compare:
        a, b = kinds
        if a == b:
            raise InputError(f"--compare {a} {b}: name two different classifiers")
        clf_a, va = _label(a, args, pairs, judge)
        clf_b, vb = _label(b, args, pairs, judge)
        ag = agreement([v.label for v in va], [v.label for v in vb])
        out_rows = [
            row | {f"label_{a}": x.label, f"label_{b}": y.label}
            for row, x, y in zip(rows, va, vb, strict=True)
        ]
        if args.output:
            store.write_jsonl(args.output, out_rows)
        print(f"{a} vs {b} on {args.file}")
        print(format_agreement(ag, gold_name=a, pred_name=b).replace("precision", f"{'agree':>9}", 1))
        differ = [i for i, (x, y) in enumerate(zip(va, vb, strict=True)) if x.label != y.label]
        flips = sum(va[i].refusal != vb[i].refusal for i in differ)
        print(f"\n{len(differ)} rows disagree ({flips} on refusal or not):")
        for i in differ[: args.show]:
            rid = rows[i].get("id") or f"line {i + 1}"
            flag = " *" if va[i].refusal != vb[i].refusal else ""
            print(f"- {rid}: {a}={va[i].label} {b}={vb[i].label}{flag}")
            print(f"    prompt:   {_short(rows[i]['prompt'], 160)}")
            print(f"    response: {_short(rows[i]['response'], 240)}")
        if len(differ) > args.show:
            print(f"  ... and {len(differ) - args.show} more (--show N, or -o FILE for every row)")
        print(_judge_failures(clf_a).strip() or _judge_failures(clf_b).strip() or "", end="")
        return 0

    clf, verdicts = _label(args.classifier, args, pairs, judge)
    out_rows = []
    for row, v in zip(rows, verdicts, strict=True):
        new = dict(row)
        if "label" in row:
            new["gold_label"] = row["label"]
        out_rows.append(new | _verdict_fields(v))
    if args.output:
        store.write_jsonl(args.output, out_rows)
    elif not args.gold:
        for r in out_rows:
            sys.stdout.write(store.to_json_line(r))
    labels = Counter(v.label for v in verdicts)
    summary = f"{len(rows)} rows: " + ", ".join(f"{k} {n}" for k, n in sorted(labels.items()))
    if args.gold:
        v0 = verdicts[0]
        version = v0.learned_version or v0.prompt_version or v0.lexicon_version or ""
        print(f"{args.classifier} ({version}) against the labels of {args.file}")
        print(format_agreement(agreement([r["label"] for r in rows], [v.label for v in verdicts])))
    else:
        gold = [r for r in out_rows if "gold_label" in r]
        if gold:
            ag = agreement([str(r["gold_label"]) for r in gold], [r["label"] for r in gold])
            summary += (
                f"\nagreement with your labels: {ag.accuracy:.3f} (kappa {ag.kappa:.3f}) on {len(gold)} rows; "
                "--gold for the full report"
            )
    disagreements = getattr(clf, "disagreements", None)
    if disagreements:
        summary += f"\njudge and lexical disagree on {len(disagreements)} rows (disagreement: true)"
    summary += _judge_failures(clf)
    print(summary, file=sys.stderr)
    return 0


def register(
    sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]
) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser(
        "classify",
        help="label {prompt, response} JSONL rows with the refusal taxonomy; --gold, --compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="JSONL file or URI with 'prompt' and 'response' on every row")
    p.add_argument("--classifier", choices=CHOICES, default="lexical")
    p.add_argument(
        "--gold",
        action="store_true",
        help="measure the classifier against the file's 'label' column: accuracy, Cohen's kappa, "
        "per-label precision/recall, confusion matrix",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        choices=CHOICES,
        help="run two classifiers and print their agreement and the rows where they disagree",
    )
    p.add_argument("--show", type=int, default=20, help="disagreeing rows printed by --compare")
    p.add_argument("--judge-model", help="judge model name (judge, ensemble)")
    p.add_argument("--judge-base-url", help="OpenAI-compatible base URL of the judge")
    p.add_argument("--judge-provider", default="openai", choices=("openai", "hf", "vllm", "mock"))
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="env variable with the judge's key")
    p.add_argument("--cache", help="store prefix of an LLM response cache (reruns are free)")
    p.add_argument("-o", "--output", help="output JSONL (default: stdout, unless --gold or --compare)")
    return {"classify": cmd_classify}
