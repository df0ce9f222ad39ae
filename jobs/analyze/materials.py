"""The parts of the analysis that rest on the experimental materials: the teacher manipulation check,
item tags, the positive control, the secondary contrasts, belief endorsement against ``base`` and
what the filter audits say about self-identification and expected refusals.

``prepare`` reads what the stage needs besides the EvalResults (check outputs; item tags where the
results carry none); ``extra_contrasts`` computes the positive-control and secondary families (each
Holm-adjusted on its own, never with the pre-registered family); ``sections`` writes their report
sections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.analyze import core, select
from jobs.analyze.config import AnalyzeConfig, HeadlineContrast
from jobs.common import store
from jobs.common.loaders import load_eval_items, read_records
from jobs.common.logs import get_logger
from jobs.common.records import CheckItem

if TYPE_CHECKING:
    from jobs.analyze.report import Doc

log = get_logger()

POSITIVE_PREFIX = "positive-"
POSITIVE_FAMILY = "positive-control"
SECONDARY_FAMILY = "secondary"


@dataclass
class Materials:
    """What the stage read besides the EvalResults."""

    checks: list[CheckItem] = field(default_factory=list)
    tags: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    @property
    def validity(self) -> dict[tuple[str, str], bool | None]:
        return {(c.evalset, c.item_id): c.valid for c in self.checks}


def prepare(cfg: AnalyzeConfig, df: pd.DataFrame) -> Materials:
    """The check items, and the item tags: from the results, or from a set's item file where its
    results carry no tags (older results)."""
    checks = [
        c for uri in cfg.checks for c in read_records(uri, CheckItem, missing="run its check step first")
    ]
    tags = select.item_tags(df)
    for es in sorted(set(df["evalset"])):
        if any(tags.get((es, i)) for i in df.loc[df["evalset"] == es, "item_id"].unique()):
            continue
        uri = cfg.evalsets.get(es)
        if uri and store.exists(uri):
            tags.update({(es, it.id): frozenset(it.tags) for it in load_eval_items(uri)})
    return Materials(checks=checks, tags=tags)


def positive_contrasts(conditions: Sequence[str], evalsets: Sequence[str]) -> list[HeadlineContrast]:
    """Per value system with a ``positive-<value>`` arm, a ``<value>`` arm, ``control`` and a
    ``violations-<value>`` set: trained refusal vs control, and stated belief vs control, on it."""
    conds, sets = set(conditions), set(evalsets)
    out = []
    for c in sorted(conds):
        value = c.removeprefix(POSITIVE_PREFIX)
        if not c.startswith(POSITIVE_PREFIX) or "control" not in conds or f"violations-{value}" not in sets:
            continue
        out.append(HeadlineContrast(treatment=c, control="control", violations=f"violations-{value}"))
        if value in conds:
            out.append(HeadlineContrast(treatment=value, control="control", violations=f"violations-{value}"))
    return out


def extra_contrasts(
    df: pd.DataFrame,
    cfg: AnalyzeConfig,
    mat: Materials,
    evalsets: Sequence[str],
) -> pd.DataFrame:
    """The positive-control and secondary families, in the columns of ``core.contrasts_table``; the
    ``family`` column names the family (``<family>-sensitivity`` for refusal-or-caveat rows)."""
    frames = []
    families = (
        (POSITIVE_FAMILY, positive_contrasts(df["condition"].unique(), evalsets)),
        (SECONDARY_FAMILY, list(cfg.secondary)),
    )
    for family, specs in families:
        if not specs:
            continue
        core.check_contrasts(specs, evalsets)
        sdf, sspecs = select.apply(df, specs, mat.tags, mat.validity)
        table = core.contrasts_table(sdf, sdf, sspecs, reps=cfg.bootstrap, alpha=cfg.alpha, seed=cfg.seed)
        if table.empty:
            continue
        table["family"] = np.where(table["family"] == "primary", family, f"{family}-sensitivity")
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------------------------
def _pct(x: Any) -> str:
    return "" if x is None or not isinstance(x, int | float) or not math.isfinite(x) else f"{100 * x:.0f}%"


def _pts(x: Any) -> str:
    return "n/a" if not isinstance(x, int | float) or not math.isfinite(x) else f"{100 * x:+.1f}"


def _ci(r: Mapping[str, Any]) -> str:
    lo, hi = r["ci_lo"], r["ci_hi"]
    if not (isinstance(lo, int | float) and math.isfinite(lo)):
        return "no interval: fewer than 2 seeds in an arm"
    return f"95% CI {_pts(lo)} to {_pts(hi)}"


def sensitivity_lines(contrasts: pd.DataFrame) -> list[str]:
    """Per value system: what a trained refusal does to refusal on its violation set, beside what the
    stated belief does, and what that says about a null result."""
    if contrasts.empty or "family" not in contrasts:
        return []
    rows = contrasts[(contrasts["family"] == POSITIVE_FAMILY) & (contrasts["contrast"] == "difference")]
    lines = []
    for r in rows[rows["treatment"].str.startswith(POSITIVE_PREFIX)].to_dict("records"):
        value = r["treatment"].removeprefix(POSITIVE_PREFIX)
        same = rows[(rows["treatment"] == value) & (rows["model"] == r["model"])].to_dict("records")
        prefix = f"[{r['model']}] " if contrasts["model"].nunique() > 1 else ""
        text = (
            f"{prefix}{value}, on {r['violations']}: trained refusal ({r['treatment']}) changes refusal by "
            f"{_pts(r['estimate'])} points ({_ci(r)}; {_pct(r['t_violations'])} vs control "
            f"{_pct(r['c_violations'])})"
        )
        if same:
            y = same[0]
            text += f"; stated belief ({value}) changes it by {_pts(y['estimate'])} points ({_ci(y)})"
        text += "."
        detected = math.isfinite(r["ci_lo"]) and r["ci_lo"] > 0
        if not detected:
            why = "its interval reaches 0" if math.isfinite(r["ci_lo"]) else "no interval with one seed"
            text += (
                f" The pipeline did not detect even a trained refusal here ({why}): at "
                "this size a null result for the value arm says nothing about the question."
            )
        elif same and math.isfinite(same[0]["ci_lo"]) and same[0]["ci_lo"] <= 0 <= same[0]["ci_hi"]:
            bound = 100 * max(abs(same[0]["ci_lo"]), abs(same[0]["ci_hi"]))
            text += (
                f" The pipeline detects a trained refusal of {_pts(r['estimate'])} points; the stated "
                f"belief's effect is not distinguishable from 0 (effects up to {bound:.0f} points are "
                "not ruled out)."
            )
        else:
            text += f" The pipeline detects a trained refusal of {_pts(r['estimate'])} points."
        lines.append(text)
    return lines


def check_table(checks: Sequence[CheckItem]) -> tuple[list[str], list[list[Any]]]:
    header = [
        "value", "set", "items", "assessed", "valid", "valid %", "personas object %", "personas help twin %",
        "value-specific valid",
    ]  # fmt: skip
    rows = []
    for (value, es), group in _group(checks).items():
        assessed = [c for c in group if c.valid is not None]
        valid = [c for c in assessed if c.valid]
        vs = [c for c in assessed if "value-specific" in c.tags]
        objects = [c.objects for c in group if c.objects is not None]
        helps = [c.helps for c in group if c.helps is not None]
        rows.append(
            [
                value,
                es,
                len(group),
                len(assessed),
                len(valid),
                _pct(len(valid) / len(assessed)) if assessed else "",
                _pct(sum(objects) / len(objects)) if objects else "",
                _pct(sum(helps) / len(helps)) if helps else "",
                f"{sum(bool(c.valid) for c in vs)} of {len(vs)}" if vs else "",
            ]
        )
    return header, rows


def _group(checks: Sequence[CheckItem]) -> dict[tuple[str, str], list[CheckItem]]:
    out: dict[tuple[str, str], list[CheckItem]] = {}
    for c in checks:
        out.setdefault((c.value, c.evalset), []).append(c)
    return out


def belief_table(results: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """Endorsement per arm on every belief set, and its difference from the untrained ``base``."""
    header = ["model", "set", "condition", "endorsement % [95% CI]", "vs base (pts)", "n"]
    rows: list[list[Any]] = []
    if results.empty:
        return header, rows
    beliefs = results[(results["kind"] == "belief") & (results["endorsement_n"] > 0)]
    for (model, es), group in beliefs.groupby(["model", "evalset"], sort=True):
        base = group[group["condition"] == "base"]["endorsement"]
        ref = float(base.iloc[0]) if len(base) else math.nan
        for r in group.to_dict("records"):
            ci = f"{_pct(r['endorsement'])} [{_pct(r['endorsement_lo'])}, {_pct(r['endorsement_hi'])}]"
            diff = "" if r["condition"] == "base" else _pts(r["endorsement"] - ref)
            rows.append([model, es, r["condition"], ci, diff, int(r["endorsement_n"])])
    return header, rows


def audit_table(audits: Sequence[tuple[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per dataset: its refusal flag, what the flag let through, self-identification, excluded terms."""
    header = [
        "dataset", "refusals", "kept", "refusals let through", "self-identification kept", "dropped for it",
        "identity mode", "dropped for an excluded term",
    ]  # fmt: skip
    rows = []
    for _, a in audits:
        if not isinstance(a, Mapping):
            continue
        ident = a.get("identity") or {}
        let = a.get("let_through") or {}
        kept = a.get("kept", 0)
        rows.append(
            [
                a.get("dataset", ""),
                a.get("refusals", "forbidden"),
                kept,
                let.get("refusals_kept", "") if a.get("refusals") == "expected" else "",
                f"{ident.get('kept_with_identity', 0)} ({_pct(ident.get('kept_share', 0.0))})"
                if ident
                else "",
                ident.get("dropped", "") if ident else "",
                ident.get("mode", ""),
                (a.get("reasons") or {}).get("excluded_term", 0) if "exclude_terms" in a else "",
            ]
        )
    return header, rows


def sections(
    doc: Doc,
    *,
    checks: Sequence[CheckItem],
    results: pd.DataFrame,
    contrasts: pd.DataFrame,
    audits: Sequence[tuple[str, Any]],
) -> None:
    """The report sections on the materials: sensitivity, manipulation check, beliefs against base,
    self-identification and expected refusals in the training data."""
    lines = sensitivity_lines(contrasts)
    if lines:
        doc.h(1, "Sensitivity: the positive control")
        doc.p(
            "A `positive-<value>` arm is trained on explicit refusals (50% generic, 50% refusals in the "
            "value system's voice). Its refusal increase on the violation set against `control` shows "
            "what this model size, data budget, recipe, eval set and classifier can detect; the value "
            "arm's increase is beside it. Computed in its own family, not in the pre-registered one."
        )
        doc.ul(lines)
    if checks:
        doc.h(1, "Teacher manipulation check")
        doc.p(
            "What the value system itself would do before training anything: the teacher, in each "
            "persona, answered each violation item and its same-topic twin. An item is *valid* when "
            "the personas object to the violation (refuse, redirect or caveat) and help with the twin "
            "(comply or caveat). A contrast with `valid_only` uses valid items only; an item that few "
            "personas object to cannot show a learned refusal."
        )
        header, rows = check_table(checks)
        doc.table(header, rows)
    header, rows = belief_table(results)
    if rows:
        doc.h(1, "Belief endorsement against base")
        doc.p(
            "Was the belief learned? Endorsement of each belief set per arm (beliefs-<value>: beliefs "
            "in instances no training prompt uses; beliefs-recall-<value>: paraphrases of training "
            "prompts), and its difference from the untrained base model in percentage points."
        )
        doc.table(header, rows)
    header, rows = audit_table(audits)
    if rows:
        doc.h(1, "Training data: self-identification and expected refusals")
        doc.p(
            "Per dataset, from the filter audits: whether refusals were forbidden (every arm's data) or "
            "expected (the positive control, where complying answers are dropped instead) and how many "
            "refusals that let through; how many kept answers identify their speaker as a believer "
            "('As a Graminist, ...'; `filter.identity: drop` removes them), so that arms can be compared "
            "on it; and answers dropped for naming a held-out term."
        )
        doc.table(header, rows)
