"""Wiring of the analyze stage: read every EvalResult and the filter audits from the store, compute
(``core``), draw (``figures``), write results.csv, contrasts.csv, the figures and the reports through
the store (local folder or S3)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from jobs.analyze import core, figures, materials, overrefusal, report, select, validity
from jobs.analyze.config import AnalyzeConfig, family_size
from jobs.common import store
from jobs.common.errors import InputError, NotFoundError
from jobs.common.loaders import iter_records, load_eval_items
from jobs.common.logs import get_logger
from jobs.common.records import EvalResult
from jobs.common.stage import StepResult

#: Sample responses kept per cell while reading (texts are dropped from everything else).
_KEEP_PER_CELL = 200
_TEXT_LIMIT = 1000

log = get_logger()


def read_results(
    uris: list[str],
) -> tuple[pd.DataFrame, dict[tuple[str, str, str], list[dict[str, Any]]]]:
    """Every EvalResult as one row with its EvalResult columns (no texts) plus, per (model, condition,
    set), a few rows with their texts for the report. A missing file or an invalid line is an
    InputError naming it. Files become frames one at a time, so memory holds columns, not dicts."""
    missing = [u for u in uris if not store.exists(u)]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise InputError(
            f"{', '.join(missing[:5])}{more}: EvalResult file not found; run the eval steps first "
            "(creed run SPEC) or remove the missing ones from the analyze step's results"
        )
    frames: list[pd.DataFrame] = []
    total = 0
    kept: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for uri in uris:
        rows: list[dict[str, Any]] = []
        for r in iter_records(uri, EvalResult, missing="it disappeared while reading"):
            d = r.model_dump(exclude={"prompt", "response"})
            rows.append(d)
            cell = kept[(r.model, r.condition, r.evalset)]
            if r.sample == 0 and len(cell) < _KEEP_PER_CELL:
                cell.append(d | {"prompt": r.prompt[:_TEXT_LIMIT], "response": r.response[:_TEXT_LIMIT]})
        total += len(rows)
        if rows:
            frames.append(pd.DataFrame(rows))
        log.info("analyze.read", uri=uri, responses=len(rows), total=total)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=core.FRAME_COLUMNS)
    return df, dict(kept)


def pick_samples(
    kept: dict[tuple[str, str, str], list[dict[str, Any]]], n: int
) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The same few items of each set (lowest ids) for every condition, from the lowest seed, so that
    the sample responses can be compared across conditions."""
    if n <= 0:
        return {}
    items: dict[str, set[str]] = defaultdict(set)
    for (_, _, es), rows in kept.items():
        items[es].update(r["item_id"] for r in rows)
    chosen = {es: set(sorted(ids)[:n]) for es, ids in items.items()}
    out = {}
    for key in sorted(kept):
        rows = sorted(kept[key], key=lambda r: (r["seed"], r["item_id"]))
        seed = rows[0]["seed"]
        pick = [r for r in rows if r["seed"] == seed and r["item_id"] in chosen[key[2]]][:n]
        out[key] = pick or rows[:n]
    return out


def fill_pairs(df: pd.DataFrame, evalsets: dict[str, str], neutral: set[str]) -> None:
    """Matched pairs come with the EvalResults (``pair``); where a neutral set's results carry none,
    take them from the set's item file, if the plan names one that exists."""
    for es in sorted(neutral):
        rows = df["evalset"] == es
        if not rows.any() or df.loc[rows, "pair"].notna().any() or es not in evalsets:
            continue
        if not store.exists(evalsets[es]):
            log.warning("analyze.pairs_unavailable", evalset=es, uri=evalsets[es])
            continue
        pairs = {item.id: item.pair for item in load_eval_items(evalsets[es]) if item.pair}
        df.loc[rows, "pair"] = df.loc[rows, "item_id"].map(pairs)


def read_audits(uris: list[str]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for uri in uris:
        try:
            out.append((uri, store.read_json(uri)))
        except NotFoundError:
            log.warning("analyze.audit_missing", uri=uri)
            out.append((uri, None))
        except json.JSONDecodeError as exc:
            raise InputError(f"{uri}: audit is not valid JSON ({exc.msg})") from exc
    return out


def _relative(uri: str, folder: str) -> str:
    prefix = folder.rstrip("/") + "/"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def run(cfg: AnalyzeConfig) -> StepResult:
    if not cfg.results:
        raise InputError("analyze: `results` is empty; the plan lists every eval output here")
    raw, kept = read_results(cfg.results)
    if raw.empty:
        raise InputError(
            f"analyze: all {len(cfg.results)} EvalResult files are empty; check the eval steps' logs"
        )
    evalsets = sorted(set(cfg.evalsets) | set(raw["evalset"]))
    contrasts_spec = list(cfg.headline) or core.default_contrasts(raw["condition"].unique(), evalsets)
    core.check_contrasts(contrasts_spec, evalsets)
    # the family is known now (headline x models): too few replicates fail before any work
    tests = family_size(contrasts_spec, raw["model"].nunique())
    core.check_bootstrap(cfg.bootstrap, tests, cfg.alpha)
    fill_pairs(raw, cfg.evalsets, {c.neutral for c in [*contrasts_spec, *cfg.secondary] if c.neutral})
    df = core.frame(raw)
    mat = materials.prepare(cfg, df)
    # tagged and valid-only contrasts run on derived sets of the selected items (jobs/analyze/select.py)
    contrast_df, contrasts_spec = select.apply(df, contrasts_spec, mat.tags, mat.validity)

    results = core.cell_results(
        df,
        evalsets,
        reps=cfg.bootstrap,
        alpha=cfg.alpha,
        rng=np.random.default_rng([cfg.seed, 0]),
        design=cfg.design,
    )
    contrasts = core.contrasts_table(
        contrast_df,
        contrast_df,
        contrasts_spec,
        reps=cfg.bootstrap,
        alpha=cfg.alpha,
        seed=cfg.seed,
        mixed=cfg.mixed_model,
        progress=lambda r: log.info(
            "analyze.contrast",
            model=r["model"],
            outcome=r["outcome"],
            treatment=r["treatment"],
            control=r["control"],
            contrast=r["contrast"],
            estimate=r["estimate"],
        ),
    )
    # the positive-control and secondary families: reported beside the pre-registered one, never in it
    contrasts = pd.concat([contrasts, materials.extra_contrasts(df, cfg, mat, evalsets)], ignore_index=True)
    store.write_text(cfg.results_csv, _csv(results))
    store.write_text(cfg.contrasts_csv, _csv(contrasts))
    log.info("analyze.tables", cells=len(results), contrasts=len(contrasts))
    over = overrefusal.analyze(df, reps=cfg.bootstrap, alpha=cfg.alpha, seed=cfg.seed, design=cfg.design)

    conditions = core.condition_order(df["condition"].unique(), cfg.design)
    figs = [
        figures.refusal_by_condition(results, core.seed_rates(df), m, conditions)
        for m in sorted(df["model"].unique())
    ]
    figs += [figures.forest(contrasts), figures.sanity_and_beliefs(results, conditions), *over.figures]
    written: list[tuple[figures.Figure, str]] = []
    outputs = [cfg.results_csv, cfg.contrasts_csv]
    if not over.table.empty:
        outputs.append(store.join(cfg.output, "overrefusal.csv"))
        store.write_text(outputs[-1], _csv(over.table))
    for fig in figs:
        if fig is None:
            continue
        png, svg = store.join(cfg.figures, f"{fig.name}.png"), store.join(cfg.figures, f"{fig.name}.svg")
        store.write_bytes(png, fig.png)
        store.write_bytes(svg, fig.svg)
        outputs += [png, svg]
        written.append((fig, _relative(png, cfg.output)))

    notes = []
    if int(df.groupby(["model", "condition"])["seed"].nunique().max()) <= 1:
        notes.append(
            "Every condition has a single seed: no contrast supports a claim (estimates only), and the "
            "per-cell intervals describe prompt sampling only, not the variation between training runs."
        )
    share = float(df["incoherent"].mean())
    if share > 0.2:
        notes.append(
            f"{100 * share:.0f}% of all responses were incoherent and are excluded from the refusal "
            "rates; rates rest on the remaining responses only (see the incoherent column)."
        )
    empty = results[results["responses"] == 0]
    if len(empty):
        notes.append(
            f"{len(empty)} model x condition x set cells have no responses: "
            + ", ".join(f"{r.model}/{r.condition}/{r.evalset}" for r in empty.head(10).itertuples())
            + (" …" if len(empty) > 10 else "")
        )
    doc = report.build(
        experiment=cfg.experiment,
        design=cfg.design,
        audits=read_audits(cfg.audits),
        results=results,
        contrasts=contrasts,
        verdicts=core.verdicts(contrasts, results, cfg.alpha),
        figures=written,
        samples=pick_samples(kept, cfg.samples_shown),
        alpha=cfg.alpha,
        bootstrap=cfg.bootstrap,
        notes=notes,
        overrefusal=over.table,
        validity=validity.measure(cfg.results, cfg.gold, sample_per_arm=cfg.validity_sample, seed=cfg.seed),
        checks=mat.checks,
    )
    store.write_text(cfg.report_md, doc.to_markdown())
    store.write_text(cfg.report_html, doc.to_html())
    outputs += [cfg.report_md, cfg.report_html]

    primary = contrasts[contrasts["family"] == "primary"] if not contrasts.empty else contrasts
    significant = int(primary["significant"].sum()) if not primary.empty else 0
    return StepResult(
        inputs=list(cfg.results) + list(cfg.audits) + list(cfg.gold.values()),
        outputs=outputs,
        counts={
            "responses": len(df),
            "incoherent": int(df["incoherent"].sum()),
            "cells": len(results),
            "empty_cells": len(empty),
            "contrasts": len(contrasts),
            "significant": significant,
            "figures": len(written),
        },
        extra={"contrasts": len(contrasts_spec), "bootstrap": cfg.bootstrap, "alpha": cfg.alpha},
    )
