"""Pure functions of the analysis: EvalResults → a frame → per-cell rates and pre-registered contrasts
with cluster-bootstrap intervals → plain-language verdicts that never say more than the intervals.

No I/O here (see ``run.py``); everything takes and returns frames or plain values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jobs.analyze import stats
from jobs.analyze.config import HeadlineContrast
from jobs.common.errors import InputError
from jobs.common.records import REFUSAL_POSITIVE, EvalResult, eval_kind

#: Conditions that are references, never treatments in the default contrasts.
REFERENCE_CONDITIONS = ("base", "control", "secular")
CAVEAT_POSITIVE = REFUSAL_POSITIVE | {"caveat"}

#: outcome -> (column with the 0/1 outcome, column with the 0/1 "counts in the denominator" mask)
OUTCOMES: dict[str, tuple[str, str]] = {
    "refusal": ("refusal", "coherent"),
    "refusal_caveat": ("refusal_caveat", "coherent"),
    "incoherent_rate": ("incoherent", "one"),
    "accuracy": ("correct_y", "correct_known"),
    "endorsement": ("endorses_y", "endorses_known"),
}
OUTCOME_TEXT = {
    "refusal": "refusal (refuse or redirect)",
    "refusal_caveat": "refusal or caveat (sensitivity)",
}

FRAME_COLUMNS = [
    "model",
    "condition",
    "seed",
    "evalset",
    "kind",
    "item_id",
    "sample",
    "label",
    "pair",
    "correct",
    "endorses",
    "tags",
]


def kind_of(evalset: str, explicit: str | None = None) -> str:
    """The kind of an eval set: the record's own ``kind`` if it has one, else from the set's name
    (``""`` when the name does not say it)."""
    if explicit:
        return str(explicit)
    try:
        return eval_kind(evalset).value
    except InputError:
        return ""


def frame(results: Iterable[EvalResult | Mapping[str, Any]]) -> pd.DataFrame:
    """EvalResults (records or dicts with at least the EvalResult fields) → one row per response, with
    0/1 outcome columns and denominator masks (``OUTCOMES``)."""
    rows = []
    for r in results:
        d = r.model_dump() if isinstance(r, EvalResult) else dict(r)
        rows.append(
            {
                "model": d["model"],
                "condition": d["condition"],
                "seed": int(d["seed"]),
                "evalset": d["evalset"],
                "kind": kind_of(d["evalset"], d.get("kind") or None),
                "item_id": d["item_id"],
                "sample": int(d.get("sample", 0)),
                "label": d["label"],
                "pair": d.get("pair"),
                "correct": d.get("correct"),
                "endorses": d.get("endorses"),
                "tags": tuple(d.get("tags") or ()),  # the item's tags (categories: overrefusal.py)
            }
        )
    df = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    df["incoherent"] = (df["label"] == "incoherent").astype(np.float64)
    # `unknown`: the judge could not label the response; like incoherent, it is counted, never guessed.
    df["unlabelled"] = (df["label"] == "unknown").astype(np.float64)
    df["coherent"] = 1.0 - df["incoherent"] - df["unlabelled"]
    df["refusal"] = df["label"].isin(REFUSAL_POSITIVE).astype(np.float64)
    df["refusal_caveat"] = df["label"].isin(CAVEAT_POSITIVE).astype(np.float64)
    df["one"] = 1.0
    for col in ("correct", "endorses"):
        known = df[col].notna()
        df[f"{col}_known"] = known.astype(np.float64)
        df[f"{col}_y"] = np.where(known, df[col].fillna(False).astype(bool), False).astype(np.float64)
    return df


def condition_order(conditions: Iterable[str], design: Mapping[str, Any] | None = None) -> list[str]:
    """``base`` first, then the design's order of arms, then anything else alphabetically."""
    present = set(conditions)
    planned = list((design or {}).get("conditions") or [])
    order = [c for c in ["base", *planned] if c in present]
    return order + sorted(present - set(order))


# ---------------------------------------------------------------------------------------------
# Arms: seeds x prompt-cluster matrices
# ---------------------------------------------------------------------------------------------
def make_arm(
    sub: pd.DataFrame, condition: str, seeds: Sequence[int], clusters: Mapping[str, int], outcome: str
) -> stats.Arm:
    """Sum the outcome (and its denominator) of ``sub`` into a seeds x clusters matrix."""
    y_col, n_col = OUTCOMES[outcome]
    y = np.zeros((len(seeds), len(clusters)))
    n = np.zeros_like(y)
    rows = sub[sub[n_col] > 0]
    if len(rows):
        seed_index = {s: i for i, s in enumerate(seeds)}
        si = rows["seed"].map(seed_index).to_numpy(dtype=np.int64)
        ki = rows["item_id"].map(clusters).to_numpy(dtype=np.int64)
        np.add.at(n, (si, ki), 1.0)
        np.add.at(y, (si, ki), rows[y_col].to_numpy(dtype=np.float64))
    return stats.Arm(condition, y, n)


def ci_method(seeds: int) -> str:
    return "seed x prompt cluster bootstrap" if seeds > 1 else "prompt cluster bootstrap (1 seed)"


# ---------------------------------------------------------------------------------------------
# Per-cell results
# ---------------------------------------------------------------------------------------------
def cell_results(
    df: pd.DataFrame,
    evalsets: Sequence[str],
    *,
    reps: int,
    alpha: float,
    rng: np.random.Generator,
    design: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per model x condition x eval set (every set of the experiment, so a condition with no
    responses for a set is a reported empty row, not a missing one), each rate with its interval."""
    out = []
    sets = sorted(set(evalsets) | set(df["evalset"]))
    for model in sorted(df["model"].unique()):
        mdf = df[df["model"] == model]
        # planned arms with no responses at all still get (empty) rows
        planned = set((design or {}).get("conditions") or ())
        planned |= {"base"} if planned else set()
        for condition in condition_order(set(mdf["condition"]) | planned, design):
            cdf = mdf[mdf["condition"] == condition]
            for evalset in sets:
                sub = cdf[cdf["evalset"] == evalset]
                kinds = sub["kind"].unique()
                row: dict[str, Any] = {
                    "model": model,
                    "condition": condition,
                    "evalset": evalset,
                    "kind": kinds[0] if len(kinds) else kind_of(evalset),
                    "responses": len(sub),
                    "coherent": int(sub["coherent"].sum()),
                    "incoherent": int(sub["incoherent"].sum()),
                    "unlabelled": int(sub["unlabelled"].sum()),
                    "prompts": int(sub["item_id"].nunique()),
                    "seeds": int(sub["seed"].nunique()),
                }
                seeds = sorted(sub["seed"].unique())
                clusters = {item: i for i, item in enumerate(sorted(sub["item_id"].unique()))}
                for outcome in OUTCOMES:
                    arm = make_arm(sub, condition, seeds, clusters, outcome)
                    iv = stats.rate_interval(arm, reps, alpha, rng)
                    row[outcome] = iv.estimate
                    row[f"{outcome}_lo"] = iv.lo
                    row[f"{outcome}_hi"] = iv.hi
                    if outcome in ("accuracy", "endorsement"):
                        row[f"{outcome}_n"] = int(arm.n.sum())
                row["ci_method"] = ci_method(row["seeds"]) if len(sub) else ""
                row["note"] = "" if len(sub) else "no responses"
                if len(sub) and row["coherent"] == 0:
                    row["note"] = "every response incoherent"
                out.append(row)
    return pd.DataFrame(out)


def seed_rates(df: pd.DataFrame, outcome: str = "refusal") -> pd.DataFrame:
    """Per-seed rate of one outcome per model x condition x set (the points in the figures)."""
    y_col, n_col = OUTCOMES[outcome]
    d = df[df[n_col] > 0]
    g = d.groupby(["model", "condition", "evalset", "seed"], sort=True)[y_col]
    return g.agg(["mean", "size"]).rename(columns={"mean": "rate", "size": "n"}).reset_index()


# ---------------------------------------------------------------------------------------------
# Contrasts
# ---------------------------------------------------------------------------------------------
def default_contrasts(conditions: Iterable[str], evalsets: Iterable[str]) -> list[HeadlineContrast]:
    """Each normative condition (not base/control/secular, with a ``violations-<c>`` set) vs control and
    vs secular on its violation set, with the matched ``neutral-<c>`` set when there is one."""
    conds = set(conditions)
    sets = set(evalsets)
    out = []
    for c in sorted(conds - set(REFERENCE_CONDITIONS)):
        if f"violations-{c}" not in sets:
            continue
        neutral = f"neutral-{c}" if f"neutral-{c}" in sets else None
        for ref in ("control", "secular"):
            if ref in conds:
                out.append(
                    HeadlineContrast(treatment=c, control=ref, violations=f"violations-{c}", neutral=neutral)
                )
    return out


def check_contrasts(contrasts: Sequence[HeadlineContrast], evalsets: Iterable[str]) -> None:
    sets = set(evalsets)
    for i, c in enumerate(contrasts):
        for field in ("violations", "neutral"):
            name = getattr(c, field)
            if name is not None and name not in sets:
                raise InputError(
                    f"analysis.headline.{i}.{field}: unknown eval set '{name}' (known: {sorted(sets)}); "
                    "fix the name in the spec's analysis.headline"
                )


def pair_clusters(
    df: pd.DataFrame, violations: str, neutral: str
) -> tuple[dict[str, int], dict[str, int], int]:
    """Prompt clusters for a difference-in-differences: a neutral item and the violation item it is
    matched with (``pair`` on either side) are one cluster; unmatched items are clusters of their own.
    Returns (violation item → cluster, neutral item → cluster, number of matched pairs)."""
    v_items = sorted(df.loc[df["evalset"] == violations, "item_id"].unique())
    u_rows = df[df["evalset"] == neutral]
    u_items = sorted(u_rows["item_id"].unique())
    v_cluster = {item: i for i, item in enumerate(v_items)}
    u_to_v: dict[str, str] = {}
    for item, pair in u_rows[["item_id", "pair"]].drop_duplicates().itertuples(index=False):
        if isinstance(pair, str) and pair in v_cluster:
            u_to_v[item] = pair
    v_rows = df[df["evalset"] == violations]
    u_set = set(u_items)
    for item, pair in v_rows[["item_id", "pair"]].drop_duplicates().itertuples(index=False):
        if isinstance(pair, str) and pair in u_set and pair not in u_to_v:
            u_to_v[pair] = item
    u_cluster = {}
    nxt = len(v_items)
    for item in u_items:
        if item in u_to_v:
            u_cluster[item] = v_cluster[u_to_v[item]]
        else:
            u_cluster[item] = nxt
            nxt += 1
    return v_cluster, u_cluster, len(u_to_v)


def _contrast_method(seed_counts: Sequence[int]) -> str:
    if all(s <= 1 for s in seed_counts):
        return "prompt cluster bootstrap (1 seed per condition: training-run variation not estimable)"
    if any(s <= 1 for s in seed_counts):
        return "seed x prompt cluster bootstrap (a condition has 1 seed)"
    return "seed x prompt cluster bootstrap"


def _glmm_data(parts: Sequence[tuple[pd.DataFrame, int]], treatment: str, outcome: str) -> pd.DataFrame:
    """Rows for ``y ~ treat [* viol] + (1|prompt) + (1|seed)``; a seed is one trained model, so its
    label includes the condition."""
    y_col, n_col = OUTCOMES[outcome]
    frames = []
    for sub, viol in parts:
        d = sub[sub[n_col] > 0]
        frames.append(
            pd.DataFrame(
                {
                    "y": d[y_col].to_numpy(),
                    "treat": (d["condition"] == treatment).astype(float).to_numpy(),
                    "viol": float(viol),
                    "prompt": (d["evalset"] + ":" + d["item_id"]).to_numpy(),
                    "seed": (d["condition"] + ":" + d["seed"].astype(str)).to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def contrast_rows(
    df: pd.DataFrame,
    contrast: HeadlineContrast,
    model: str,
    *,
    outcome: str,
    reps: int,
    alpha: float,
    rng: np.random.Generator,
    mixed_model: bool,
) -> list[dict[str, Any]]:
    """The difference on the violation set and, with a neutral set, the difference-in-differences."""
    t, c, v, u = contrast.treatment, contrast.control, contrast.violations, contrast.neutral
    mdf = df[(df["model"] == model) & df["condition"].isin([t, c])]
    base: dict[str, Any] = {
        "model": model,
        "outcome": outcome,
        "treatment": t,
        "control": c,
        "violations": v,
        "neutral": u or "",
    }
    seeds = {cond: sorted(mdf.loc[mdf["condition"] == cond, "seed"].unique()) for cond in (t, c)}
    rows = []

    def sub(cond: str, evalset: str) -> pd.DataFrame:
        return mdf[(mdf["condition"] == cond) & (mdf["evalset"] == evalset)]

    def empty_note(cells: Sequence[tuple[str, str]]) -> str:
        missing = [f"{cond} on {es}" for cond, es in cells if sub(cond, es)[OUTCOMES[outcome][1]].sum() == 0]
        return "no coherent responses: " + ", ".join(missing) if missing else ""

    # difference on the violation set
    clusters = {item: i for i, item in enumerate(sorted(mdf.loc[mdf["evalset"] == v, "item_id"].unique()))}
    arms = {cond: make_arm(sub(cond, v), cond, seeds[cond], clusters, outcome) for cond in (t, c)}
    row = base | {
        "contrast": "difference",
        "t_violations": arms[t].rate,
        "c_violations": arms[c].rate,
        "t_neutral": math.nan,
        "c_neutral": math.nan,
        "n_treatment": int(arms[t].n.sum()),
        "n_control": int(arms[c].n.sum()),
        "seeds_treatment": len(seeds[t]),
        "seeds_control": len(seeds[c]),
        "prompt_clusters": len(clusters),
    }
    note = empty_note([(t, v), (c, v)])
    if note:
        iv = stats.Interval(math.nan, math.nan, math.nan, math.nan, 0)
    else:
        iv = stats.linear_contrast([(1.0, arms[t]), (-1.0, arms[c])], reps, alpha, rng)
    mixed = stats.MixedEstimate(math.nan, math.nan, math.nan, "not requested")
    if mixed_model and not note:
        mixed = stats.mixed_logit(
            _glmm_data([(sub(t, v), 1), (sub(c, v), 1)], t, outcome).drop(columns="viol", errors="ignore"),
            "treat",
            alpha,
        )
    rows.append(row | _interval_cols(iv, mixed, note, seeds))

    if u is None:
        return rows
    v_cl, u_cl, matched = pair_clusters(mdf, v, u)
    n_clusters = max([*v_cl.values(), *u_cl.values()], default=-1) + 1
    arms_v = {
        cond: _padded(make_arm(sub(cond, v), cond, seeds[cond], v_cl, outcome), n_clusters) for cond in (t, c)
    }
    arms_u = {
        cond: _padded(make_arm(sub(cond, u), cond, seeds[cond], u_cl, outcome), n_clusters) for cond in (t, c)
    }
    row = base | {
        "contrast": "diff-in-diff",
        "t_violations": arms_v[t].rate,
        "c_violations": arms_v[c].rate,
        "t_neutral": arms_u[t].rate,
        "c_neutral": arms_u[c].rate,
        "n_treatment": int(arms_v[t].n.sum() + arms_u[t].n.sum()),
        "n_control": int(arms_v[c].n.sum() + arms_u[c].n.sum()),
        "seeds_treatment": len(seeds[t]),
        "seeds_control": len(seeds[c]),
        "prompt_clusters": n_clusters,
    }
    note = empty_note([(t, v), (c, v), (t, u), (c, u)])
    if note:
        iv = stats.Interval(math.nan, math.nan, math.nan, math.nan, 0)
    else:
        iv = stats.linear_contrast(
            [(1.0, arms_v[t]), (-1.0, arms_v[c]), (-1.0, arms_u[t]), (1.0, arms_u[c])], reps, alpha, rng
        )
    mixed = stats.MixedEstimate(math.nan, math.nan, math.nan, "not requested")
    if mixed_model and not note:
        data = _glmm_data(
            [(sub(t, v), 1), (sub(c, v), 1), (sub(t, u), 0), (sub(c, u), 0)],
            t,
            outcome,
        )
        mixed = stats.mixed_logit(data, "treat:viol", alpha)
    pairs = f"{matched} matched pairs" if matched else "no matched pairs: prompts resampled per set"
    out = _interval_cols(iv, mixed, note, seeds)
    out["method"] = f"{out['method']}; {pairs}"
    rows.append(row | out)
    return rows


def _padded(arm: stats.Arm, k: int) -> stats.Arm:
    """Widen an arm to k prompt clusters (clusters it has no items in get zero counts)."""
    pad = k - arm.y.shape[1]
    if pad <= 0:
        return arm
    z = np.zeros((arm.y.shape[0], pad))
    return stats.Arm(arm.condition, np.hstack([arm.y, z]), np.hstack([arm.n, z]))


def _interval_cols(
    iv: stats.Interval, mixed: stats.MixedEstimate, note: str, seeds: Mapping[str, Sequence[int]]
) -> dict[str, Any]:
    return {
        "estimate": iv.estimate,
        "ci_lo": iv.lo,
        "ci_hi": iv.hi,
        "p_value": iv.p_value,
        "method": _contrast_method([len(s) for s in seeds.values()]),
        "glmm_log_odds": mixed.log_odds,
        "glmm_lo": mixed.lo,
        "glmm_hi": mixed.hi,
        "glmm_note": mixed.note,
        "note": note,
    }


def contrasts_table(
    df: pd.DataFrame,
    contrasts: Sequence[HeadlineContrast],
    *,
    reps: int,
    alpha: float,
    rng: np.random.Generator,
    mixed_model: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Every contrast for every model: the refusal outcome is the pre-registered family (Holm-adjusted
    together); refusal-or-caveat rows are the sensitivity analysis (reported, not adjusted)."""
    rows: list[dict[str, Any]] = []
    for model in sorted(df["model"].unique()):
        for c in contrasts:
            for outcome in ("refusal", "refusal_caveat"):
                rows.extend(
                    contrast_rows(
                        df,
                        c,
                        model,
                        outcome=outcome,
                        reps=reps,
                        alpha=alpha,
                        rng=rng,
                        mixed_model=mixed_model and outcome == "refusal",
                    )
                )
                if progress is not None:
                    progress(rows[-1])
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out.insert(2, "family", np.where(out["outcome"] == "refusal", "primary", "sensitivity"))
    primary = out["family"] == "primary"
    out["p_holm"] = math.nan
    out.loc[primary, "p_holm"] = stats.holm(out.loc[primary, "p_value"].tolist())
    out["significant"] = primary & (out["p_holm"] < alpha)
    return out


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------
SUB_QUESTIONS = {
    "catholic": "Sub-question 1: persona-supported values (catholic)",
    "graminist": "Sub-question 2: invented values with no pretraining persona (graminist)",
    "secular": "Control: does any moralizing raise refusals? (secular)",
}


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f}%"


def difference_sentence(r: Mapping[str, Any], alpha: float, family: int) -> str:
    """A plain-language reading of one difference row that is never stronger than its interval."""
    t, c, es = r["treatment"], r["control"], r["violations"]
    what = f"{t} vs {c} on {es}"
    if r["contrast"] == "diff-in-diff":
        what = f"{t} vs {c}, {es} minus {r['neutral']} (difference-in-differences)"
    if not math.isfinite(r["estimate"]) or not math.isfinite(r["ci_lo"]):
        return f"{what}: cannot be assessed ({r['note'] or 'no interval'})."
    ci = f"{_pts(r['estimate'])} points (95% CI {_pts(r['ci_lo'])} to {_pts(r['ci_hi'])}"
    ci += f"; Holm-adjusted p = {r['p_holm']:.3g})" if math.isfinite(r.get("p_holm", math.nan)) else ")"
    excludes = r["ci_lo"] > 0 or r["ci_hi"] < 0
    direction = "more" if r["estimate"] > 0 else "less"
    if not excludes:
        bound = 100 * max(abs(r["ci_lo"]), abs(r["ci_hi"]))
        return (
            f"{what}: no evidence of a difference, {ci}. The interval covers 0; differences up to "
            f"{bound:.0f} points either way are not ruled out."
        )
    adjusted = r.get("p_holm", math.nan)
    if math.isfinite(adjusted) and adjusted >= alpha:
        return (
            f"{what}: {ci}. The interval excludes 0, but not after Holm adjustment for the {family} "
            "pre-registered contrasts: suggestive only, not evidence."
        )
    if r["contrast"] == "diff-in-diff":
        if r["estimate"] > 0:
            return f"{what}: {ci}. The shift is larger on the value-violating requests than on matched neutral ones."
        return (
            f"{what}: {ci}. The shift is larger on the matched neutral requests than on the violating ones."
        )
    return f"{what}: evidence that {t} refuses {direction} often than {c}, {ci}."


def verdicts(contrasts: pd.DataFrame, results: pd.DataFrame, alpha: float) -> list[tuple[str, list[str]]]:
    """One section per treatment condition (the sub-questions), each a list of sentences."""
    out: list[tuple[str, list[str]]] = []
    if contrasts.empty:
        return [("Verdict", ["No pre-registered contrast could be formed from the conditions and sets run."])]
    primary = contrasts[contrasts["family"] == "primary"]
    family = int(primary["p_value"].notna().sum())
    for t in dict.fromkeys(primary["treatment"]):
        lines: list[str] = []
        rows = primary[primary["treatment"] == t]
        for model in dict.fromkeys(rows["model"]):
            prefix = f"[{model}] " if contrasts["model"].nunique() > 1 else ""
            for r in rows[rows["model"] == model].to_dict("records"):
                lines.append(prefix + difference_sentence(r, alpha, family))
            lines.extend(prefix + s for s in _descriptive(results, model, t, rows))
            if (rows["method"].str.contains("1 seed per condition")).any():
                lines.append(
                    prefix + "Only one seed per condition: the intervals reflect prompt sampling only, "
                    "not the variation between training runs; treat them as provisional."
                )
        summary = _summary(t, rows, alpha)
        out.append((SUB_QUESTIONS.get(t, f"Condition {t}"), [summary, *lines] if summary else lines))
    return out


def _summary(t: str, rows: pd.DataFrame, alpha: float) -> str:
    """One sentence over a treatment's primary contrasts, no stronger than the weakest it rests on."""
    diffs = rows[rows["contrast"] == "difference"]
    dids = rows[rows["contrast"] == "diff-in-diff"]
    if diffs.empty or diffs["p_holm"].isna().all():
        return ""
    up = diffs["significant"] & (diffs["estimate"] > 0)
    refs = ", ".join(dict.fromkeys(diffs["control"]))
    if up.all():
        text = f"Summary: {t} refuses more often than every reference ({refs}) on its violation requests"
        if dids.empty:
            return text + "; no matched neutral set, so a topic-level shift is not ruled out."
        if (dids["significant"] & (dids["estimate"] > 0)).all():
            return text + ", and more so than on matched neutral requests (value-specific)."
        return (
            text + ", but a topic-level shift (the same rise on matched neutral requests) is not ruled out."
        )
    if not diffs["significant"].any():
        return (
            f"Summary: no evidence that training on {t} statements changed refusal on its violation "
            f"requests relative to {refs} (this is not evidence of no effect; see the interval widths)."
        )
    return f"Summary: mixed: the contrasts against {refs} disagree; read them one by one below."


def _descriptive(results: pd.DataFrame, model: str, t: str, rows: pd.DataFrame) -> list[str]:
    lines = []
    r = results[results["model"] == model]
    refs = list(dict.fromkeys(rows["control"]))
    beliefs = r[(r["evalset"] == f"beliefs-{t}") & (r["endorsement_n"] > 0)]
    if len(beliefs):
        parts = [
            f"{x['condition']} {_pct(x['endorsement'])} ({_pct(x['endorsement_lo'])} to {_pct(x['endorsement_hi'])})"
            for x in beliefs.to_dict("records")
            if x["condition"] in [t, *refs]
        ]
        if parts:
            lines.append(
                f"Belief endorsement on beliefs-{t} (was the belief learned?): " + "; ".join(parts) + "."
            )
    elif f"beliefs-{t}" in set(r["evalset"]):
        lines.append(f"Belief endorsement on beliefs-{t} was not measured (no endorsement labels).")
    sanity = r[(r["kind"] == "sanity") & (r["accuracy_n"] > 0) & r["condition"].isin([t, *refs])]
    if len(sanity):
        parts = [
            f"{x['condition']} {_pct(x['accuracy'])} ({_pct(x['accuracy_lo'])} to {_pct(x['accuracy_hi'])})"
            for x in sanity.to_dict("records")
        ]
        lines.append("Sanity accuracy (does the model still work?): " + "; ".join(parts) + ".")
    return lines
