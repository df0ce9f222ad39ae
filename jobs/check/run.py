"""The check step: load the personas and sets, ask the teacher every question through the (cached)
LLM client, label the answers, write the answers, the per-item validity and the summary."""

from __future__ import annotations

import time
from collections.abc import Sequence

from jobs.check import core
from jobs.check.config import CheckConfig
from jobs.common import store
from jobs.common.errors import InputError, TransientError
from jobs.common.loaders import load_eval_items, load_personas
from jobs.common.logs import get_logger
from jobs.common.records import CheckAnswer, EvalItem
from jobs.common.stage import StepResult
from jobs.common.subset import stable_subset
from jobs.llm import LLMClient
from jobs.refusal import make_classifier

SetItems = tuple[str, Sequence[EvalItem], str, Sequence[EvalItem]]


def load_sets(cfg: CheckConfig) -> list[SetItems]:
    """Every (violation set, items, twin set, twin items), subset as eval subsets them: violation items
    by id with eval's salt, so that ``max_items`` chooses the items eval's ``max_items`` chooses."""
    out: list[SetItems] = []
    for name, s in sorted(cfg.sets.items()):
        violations = load_eval_items(s.violations)
        twins = load_eval_items(s.neutral_uri)
        if not any(t.pair for t in twins):
            raise InputError(
                f"{s.neutral_uri}: no item names a violation item in `pair`; the check needs the twins "
                f"of {name} (set checks.<value>.sets.{name} to its same-topic neutral set)"
            )
        violations = stable_subset(violations, cfg.max_items, key=lambda i: i.id, salt="eval")
        chosen = {v.id for v in violations}
        out.append((name, violations, s.neutral, [t for t in twins if t.pair in chosen]))
    return out


def run(cfg: CheckConfig) -> StepResult:
    log = get_logger()
    personas = load_personas(cfg.personas)
    personas = stable_subset(personas, cfg.max_personas, key=lambda p: p.id, salt=f"check:{cfg.seed}")
    sets = load_sets(cfg)
    classifier = make_classifier(cfg.classifier, judge=cfg.judge, cache=cfg.cache or None)
    qs = core.questions(personas, sets)
    log.info(
        "check.start",
        value=cfg.value,
        personas=len(personas),
        sets=len(sets),
        requests=len(qs),
        teacher=f"{cfg.teacher.provider}:{cfg.teacher.model}",
    )
    t0 = time.monotonic()
    with LLMClient(cfg.teacher, cfg.cache or None) as client:
        results = client.chat_many([(q.messages(), 0) for q in qs], progress=cfg.progress)
    seconds = time.monotonic() - t0
    ok = [k for k, r in enumerate(results) if r.ok]
    verdicts = classifier.classify_many([(qs[k].item.text, results[k].text) for k in ok])
    label = {k: v for k, v in zip(ok, verdicts, strict=True)}
    answers = [
        CheckAnswer(
            value=cfg.value,
            persona_id=q.persona.id,
            evalset=q.evalset,
            item_id=q.item.id,
            role=q.role,  # type: ignore[arg-type]
            pair=q.pair,
            prompt=q.item.text,
            response=r.text,
            finish_reason=r.finish_reason,
            label=label[k].label if k in label else None,
            classifier=label[k].classifier if k in label else "",
            request_hash=r.request_hash,
            error=r.error,
        )
        for k, (q, r) in enumerate(zip(qs, results, strict=True))
    ]
    items = core.item_rows(cfg.value, sets, answers, cfg.valid_share)
    summary = core.summarize(items, answers)
    store.write_jsonl(cfg.answers, answers)
    store.write_jsonl(cfg.items, items)
    store.write_json(
        cfg.summary,
        {
            "value": cfg.value,
            "personas": [p.id for p in personas],
            "classifier": getattr(classifier, "name", cfg.classifier),
            "valid_share_threshold": cfg.valid_share,
            "sets": summary,
        },
    )
    failed = len(qs) - len(ok)
    for name, s in summary.items():
        log.info("check.set_done", evalset=name, items=s["items"], valid=s["valid"], assessed=s["assessed"])
    if qs and failed / len(qs) > cfg.max_failed_fraction:
        raise TransientError(
            f"{failed} of {len(qs)} teacher requests failed after retries (> max_failed_fraction "
            f"{cfg.max_failed_fraction:.0%}); rerun the step: answered requests are cached"
        )
    return StepResult(
        inputs=[cfg.personas, *(u for s in cfg.sets.values() for u in (s.violations, s.neutral_uri))],
        outputs=[cfg.answers, cfg.items, cfg.summary],
        counts={
            "requests": len(qs),
            "failed": failed,
            "items": len(items),
            "assessed": sum(i.valid is not None for i in items),
            "valid": sum(bool(i.valid) for i in items),
        },
        extra={
            "teacher": cfg.teacher.model_dump(mode="json", exclude={"prices"}),
            "seconds": round(seconds, 3),
            "sets": {
                k: {x: v[x] for x in ("items", "assessed", "valid", "valid_share")}
                for k, v in summary.items()
            },
        },
    )
