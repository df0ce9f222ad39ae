"""The filter step's wiring: read the shards, apply the rules, classify, write, audit."""

from __future__ import annotations

from collections import Counter
from typing import Any

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.loaders import load_eval_items, read_records, terms_pattern
from jobs.common.logs import get_logger
from jobs.common.records import EvalItem, Generation, Rejected, Verdict
from jobs.common.stage import StepResult
from jobs.filter import core
from jobs.filter.config import FilterConfig
from jobs.refusal import EnsembleClassifier, make_classifier


def read_generations(uris: list[str]) -> list[Generation]:
    """Generation records of every shard, in order; ids must be unique across shards."""
    out: list[Generation] = []
    seen: dict[str, str] = {}
    for uri in uris:
        for lineno, g in enumerate(read_records(uri, Generation, missing="run its generate step first"), 1):
            if g.id in seen:
                raise InputError(
                    f"{uri}: row {lineno}: duplicate generation id '{g.id}' (also in {seen[g.id]})"
                )
            seen[g.id] = f"{uri}:{lineno}"
            out.append(g)
    return out


def run(cfg: FilterConfig) -> StepResult:
    log = get_logger()
    # Validate every input before any classifier call.
    gens = read_generations(cfg.inputs)
    items: list[EvalItem] = [it for uri in cfg.eval_items for it in load_eval_items(uri)]
    expect = cfg.refusals == "expected"
    rules = core.Rules(
        min_chars=cfg.min_chars,
        max_chars=cfg.max_chars,
        leakage_threshold=cfg.leakage_threshold,
        dup_threshold=cfg.dup_threshold,
        drop_labels=frozenset({"refuse", "redirect"} | ({"caveat"} if cfg.drop_caveat else set())),
        ensemble_strict=cfg.ensemble_strict,
        trim_truncated=cfg.truncated == "trim",
        expect_refusals=expect,
        drop_identity=cfg.identity == "drop",
        exclude_terms=terms_pattern(cfg.exclude_terms) if cfg.exclude_terms else None,
    )
    leaks = core.LeakIndex(items, cfg.leakage_threshold) if items else None
    survivors, rejected = core.pre_classify(gens, rules, leaks)
    log.info("filter.rules_done", total=len(gens), survivors=len(survivors), rejected=len(rejected))

    labels: Counter[str] = Counter()
    extra: dict[str, Any] = {
        "classifier": cfg.classifier,
        "normative": cfg.normative,
        "refusals": cfg.refusals,
    }
    if cfg.classifier == "none":
        kept = survivors
    else:
        clf = make_classifier(cfg.classifier, judge=cfg.judge, cache=cfg.cache or None)
        verdicts = clf.classify_many([(g.prompt, g.response) for g in survivors])
        labels.update(v.label for v in verdicts)
        kept, dropped = core.apply_verdicts(survivors, verdicts, rules)
        rejected += dropped
        extra["cites_value"] = sum(v.cites_value for v in verdicts)
        extra["prompt_version"] = getattr(clf, "prompt_version", None)
        if isinstance(clf, EnsembleClassifier):
            extra["ensemble_disagreements"] = [
                {"id": survivors[d["index"]].id, "judge": d["judge"], "lexical": d["lexical"]}
                for d in clf.disagreements
            ]

    # The final audit: classify the kept rows again, whatever the filter's classifier was. Data of
    # expected refusals is always audited (inverted: every kept row must be a refusal).
    audited = cfg.normative or expect
    audit_verdicts: list[Verdict] = []
    if audited and kept:
        auditor = make_classifier(cfg.audit_classifier, judge=cfg.judge, cache=cfg.cache or None)
        audit_verdicts = auditor.classify_many([(g.prompt, g.response) for g in kept])
    offending, failures = core.audit_failures(
        kept, audit_verdicts if audited else [], audited, cfg.min_kept or 0, expect_refusals=expect
    )
    drop_fraction = len(rejected) / len(gens) if gens else 0.0
    if not gens:
        failures.append("no generations in the inputs")
    if drop_fraction > cfg.max_drop_fraction:
        failures.append(
            f"{len(rejected)} of {len(gens)} rows dropped ({drop_fraction:.0%}), above max_drop_fraction "
            f"{cfg.max_drop_fraction:.0%}; see the reasons in {cfg.audit}"
        )
    extra["audit"] = {
        "classifier": cfg.audit_classifier if audited else None,
        "refusals": cfg.refusals,
        "checked": len(audit_verdicts),
        ("not_refusals_left" if expect else "refusals_left"): offending,
        "min_kept": cfg.min_kept,
        "max_drop_fraction": cfg.max_drop_fraction,
        "passed": not failures,
        "failures": failures,
    }
    if expect:
        # What the flag let through: the refusals kept, by the audit's label.
        extra["let_through"] = {
            "refusals_kept": sum(v.refusal for v in audit_verdicts),
            "labels": dict(sorted(Counter(v.label for v in audit_verdicts).items())),
            "examples": [g.id for g in kept[:5]],
        }
    extra["identity"] = identity_counts(kept, rejected, cfg.identity)
    if cfg.exclude_terms:
        extra["exclude_terms"] = {
            "file": cfg.exclude_terms,
            "dropped": sum(r.reason == "excluded_term" for r in rejected),
        }
    summary = core.summary(cfg.dataset, len(gens), len(kept), rejected, labels, extra)

    # Written even when the audit fails, so the researcher can see what went wrong.
    store.write_jsonl(cfg.kept, kept)
    store.write_jsonl(cfg.rejected, _in_input_order(rejected, gens))
    store.write_json(cfg.audit, summary)
    log.info(
        "filter.audit",
        kept=len(kept),
        rejected=len(rejected),
        reasons=summary["reasons"],
        passed=not failures,
    )
    if failures:
        raise InputError(
            f"filter {cfg.dataset}: final audit failed ({cfg.audit}):\n  " + "\n  ".join(failures)
        )
    counts = {"total": len(gens), "kept": len(kept), "rejected": len(rejected)}
    counts |= {f"reason.{k}": v for k, v in summary["reasons"].items()}
    return StepResult(
        inputs=list(cfg.inputs) + list(cfg.eval_items),
        outputs=[cfg.kept, cfg.rejected, cfg.audit],
        counts=counts,
        extra={
            k: summary[k]
            for k in ("reasons", "labels", "drop_fraction", "audit", "classifier", "refusals", "identity")
        }
        | ({"let_through": summary["let_through"]} if expect else {}),
    )


def identity_counts(kept: list[Generation], rejected: list[Rejected], mode: str) -> dict[str, Any]:
    """Self-identification ("As a Graminist, ...") in the data: how many kept rows have it (with
    ``keep``), how many were dropped for it (with ``drop``), and a few ids to read."""
    hits = [g.id for g in kept if core.self_identification(g.response)]
    return {
        "mode": mode,
        "pattern": core.IDENTITY_PATTERN_VERSION,
        "kept_with_identity": len(hits),
        "kept_share": round(len(hits) / len(kept), 4) if kept else 0.0,
        "dropped": sum(r.reason == "identity" for r in rejected),
        "examples": hits[:5] or [r.generation.id for r in rejected if r.reason == "identity"][:5],
    }


def _in_input_order(rejected: list[Rejected], gens: list[Generation]) -> list[Rejected]:
    pos = {g.id: i for i, g in enumerate(gens)}
    return sorted(rejected, key=lambda r: pos[r.generation.id])
