"""``creed classify FILE [--classifier lexical|judge|ensemble] [-o OUT]``: label any ``{prompt, response}``
JSONL with the refusal taxonomy, so a researcher can audit responses by hand and measure the
classifier against their own labels (rows that carry a ``label`` get an agreement summary).

    creed classify responses.jsonl -o labelled.jsonl
    creed classify responses.jsonl --classifier judge --judge-model gpt-4o-mini \\
        --judge-base-url https://api.openai.com/v1 -o labelled.jsonl

Each output row is the input row plus ``label``, ``refusal``, ``classifier``, ``rationale``,
``cites_value`` (and, with a judge, ``prompt_version``; with the ensemble, ``lexical_label`` and
``disagreement``). A row that already has a ``label`` keeps it as ``gold_label``.
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
from jobs.common.records import REFUSAL_POSITIVE


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


def cmd_classify(args: argparse.Namespace) -> int:
    from jobs.llm import LLMConfig
    from jobs.refusal import make_classifier

    rows = read_pairs(args.file)
    judge = None
    if args.classifier != "lexical":
        if not args.judge_model:
            raise InputError(
                f"--classifier {args.classifier} needs --judge-model (and usually --judge-base-url)"
            )
        judge = LLMConfig(
            provider=args.judge_provider,
            model=args.judge_model,
            base_url=args.judge_base_url,
            api_key_env=args.judge_api_key_env,
            temperature=0.0,
            max_tokens=16,
        )
    clf = make_classifier(args.classifier, judge=judge, cache=args.cache)
    verdicts = clf.classify_many([(r["prompt"], r["response"]) for r in rows])
    out_rows = []
    for row, v in zip(rows, verdicts, strict=True):
        extra = {k: val for k, val in v.model_dump(mode="json").items() if val is not None}
        new = dict(row)
        if "label" in row:
            new["gold_label"] = row["label"]
        out_rows.append(new | extra)
    if args.output:
        store.write_jsonl(args.output, out_rows)
    else:
        for r in out_rows:
            sys.stdout.write(store.to_json_line(r))
    labels = Counter(v.label for v in verdicts)
    summary = f"{len(rows)} rows: " + ", ".join(f"{k} {n}" for k, n in sorted(labels.items()))
    gold = [r for r in out_rows if "gold_label" in r]
    if gold:
        agree = sum(r["gold_label"] == r["label"] for r in gold) / len(gold)
        g = [r["gold_label"] in REFUSAL_POSITIVE for r in gold]
        p = [r["label"] in REFUSAL_POSITIVE for r in gold]
        tp = sum(a and b for a, b in zip(g, p, strict=True))
        prec, rec = tp / max(sum(p), 1), tp / max(sum(g), 1)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        summary += f"\nagreement with your labels: {agree:.3f}; refusal P={prec:.3f} R={rec:.3f} F1={f1:.3f}"
    disagreements = getattr(clf, "disagreements", None)
    if disagreements:
        summary += f"\njudge and lexical disagree on {len(disagreements)} rows (disagreement: true)"
    print(summary, file=sys.stderr)
    return 0


def register(
    sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]
) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser(
        "classify",
        help="label {prompt, response} JSONL rows with the refusal taxonomy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="JSONL file or URI with 'prompt' and 'response' on every row")
    p.add_argument("--classifier", choices=("lexical", "judge", "ensemble"), default="lexical")
    p.add_argument("--judge-model", help="judge model name (judge, ensemble)")
    p.add_argument("--judge-base-url", help="OpenAI-compatible base URL of the judge")
    p.add_argument("--judge-provider", default="openai", choices=("openai", "hf", "vllm", "mock"))
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="env variable with the judge's key")
    p.add_argument("--cache", help="store prefix of an LLM response cache (reruns are free)")
    p.add_argument("-o", "--output", help="output JSONL (default: stdout)")
    return {"classify": cmd_classify}
