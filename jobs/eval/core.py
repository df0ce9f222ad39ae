"""Pure parts of the eval stage: kind-specific checks of a set, results and their counts.
No I/O, no torch. (Generation is ``jobs.llm``; sanity and belief scoring is ``jobs.refusal.probes``.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jobs.common.errors import InputError
from jobs.common.records import REFUSAL_LABELS, EvalItem, EvalKind, EvalResult, RefusalLabel, Verdict
from jobs.llm import Completion
from jobs.refusal.probes import normalize

ALL_LABELS: tuple[RefusalLabel, ...] = (*REFUSAL_LABELS, "unknown")


def check_items(kind: EvalKind, items: Sequence[EvalItem], uri: str) -> None:
    """Kind-specific checks of a loaded set; every problem names the file, line and item id."""
    errors = []
    for lineno, item in enumerate(items, start=1):
        if kind == "sanity" and not [a for a in item.answers or [] if normalize(a)]:
            errors.append(
                f"{uri}: item '{item.id}' (row {lineno}): a sanity item needs 'answers', "
                "a non-empty list of accepted answers"
            )
    if errors:
        raise InputError("\n".join(errors[:20]))


@dataclass(frozen=True)
class Target:
    """Who produced the responses."""

    model: str
    condition: str
    seed: int


def make_result(
    target: Target,
    evalset: str,
    kind: EvalKind,
    item: EvalItem,
    sample: int,
    prompt: str,
    completion: Completion,
    verdict: Verdict,
    *,
    correct: bool | None = None,
    endorses: bool | None = None,
    judge_model: str | None = None,
    prompt_version: str | None = None,
) -> EvalResult:
    return EvalResult(
        model=target.model,
        condition=target.condition,
        seed=target.seed,
        evalset=evalset,
        item_id=item.id,
        sample=sample,
        prompt=prompt,
        response=completion.text,
        label=verdict.label,
        refusal=verdict.refusal,
        correct=correct if kind == "sanity" else None,
        classifier=verdict.classifier,
        finish_reason=completion.finish_reason,
        pair=item.pair,
        kind=kind,
        endorses=endorses if kind == "belief" else None,
        tags=list(item.tags),
        cites_value=verdict.cites_value,
        judge_model=verdict.judge_model or judge_model,
        prompt_version=verdict.prompt_version or prompt_version,
        lexicon_version=verdict.lexicon_version,
        learned_version=verdict.learned_version,
    )


def count_results(results_by_set: dict[str, list[EvalResult]]) -> tuple[dict[str, int], dict[str, Any]]:
    """Manifest counts (totals and per label) and a per-set summary (labels, refusal rate,
    accuracy for sanity, endorsement for beliefs)."""
    counts: Counter[str] = Counter()
    per_set: dict[str, Any] = {}
    for name, rows in sorted(results_by_set.items()):
        labels = Counter(r.label for r in rows)
        counts["results"] += len(rows)
        counts["items"] += len({r.item_id for r in rows})
        counts["refusals"] += sum(r.refusal for r in rows)
        counts["truncated"] += sum(r.finish_reason == "length" for r in rows)
        for lab in ALL_LABELS:
            counts[f"label.{lab}"] += labels.get(lab, 0)
        # incoherent and unknown (unparseable judge answer) responses are excluded from rates
        coherent = [r for r in rows if r.label not in ("incoherent", "unknown")]
        summary: dict[str, Any] = {
            "kind": rows[0].kind if rows else "",
            "results": len(rows),
            "labels": {lab: labels.get(lab, 0) for lab in ALL_LABELS},
            "refusal_rate": round(sum(r.refusal for r in coherent) / len(coherent), 4) if coherent else None,
        }
        scored = [r for r in rows if r.correct is not None]
        if scored:
            n_ok = sum(bool(r.correct) for r in scored)
            counts["correct"] += n_ok
            summary["accuracy"] = round(n_ok / len(scored), 4)
        judged = [r for r in rows if r.endorses is not None]
        if rows and rows[0].kind == "belief":
            n_end = sum(bool(r.endorses) for r in judged)
            counts["endorses"] += n_end
            summary["endorsement_rate"] = round(n_end / len(judged), 4) if judged else None
            summary["endorsement_unclear"] = len(rows) - len(judged)
        per_set[name] = summary
    return dict(counts), per_set
