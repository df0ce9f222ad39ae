"""Pure functions of the analysis: EvalResults → a frame → per-cell rates and pre-registered contrasts
(``contrasts``, the public API) with seed-level t intervals → plain-language verdicts that never say
more than the intervals.

No I/O here (see ``run.py``); everything takes and returns frames or plain values.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jobs.analyze import stats
from jobs.analyze.config import HeadlineContrast, bootstrap_message, family_size, min_bootstrap
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


def frame(results: pd.DataFrame | Iterable[EvalResult | Mapping[str, Any]]) -> pd.DataFrame:
    """EvalResults (a DataFrame with the EvalResult columns, or records, or dicts) → one row per
    response, with 0/1 outcome columns and denominator masks (``OUTCOMES``). Extra columns are
    dropped; ``label`` (the taxonomy) decides refusal and coherence."""
    if isinstance(results, pd.DataFrame):
        src = results
    else:
        src = pd.DataFrame(
            [
                r.model_dump(exclude={"prompt", "response"}) if isinstance(r, EvalResult) else dict(r)
                for r in results
            ]
        )
    missing = [
        c for c in ("model", "condition", "seed", "evalset", "item_id", "label") if c not in src.columns
    ]
    if missing and len(src):
        raise InputError(f"results: missing EvalResult columns {missing} (have {sorted(src.columns)})")
    n = len(src)

    def col(name: str, default: Any = None) -> pd.Series:
        return src[name] if name in src.columns else pd.Series([default] * n, index=src.index, dtype=object)

    evalset = col("evalset").astype(str) if n else col("evalset")
    kinds = {es: kind_of(es) for es in (evalset.unique() if n else [])}

    def kind(k: Any, es: str) -> str:
        k = getattr(k, "value", k)
        return str(k) if isinstance(k, str) and k else kinds[es]

    kind_col = [kind(k, es) for k, es in zip(col("kind"), evalset, strict=True)]
    pair = col("pair")
    df = pd.DataFrame(
        {
            "model": col("model").astype(str) if n else col("model"),
            "condition": col("condition").astype(str) if n else col("condition"),
            "seed": col("seed").astype(np.int64) if n else col("seed"),
            "evalset": evalset,
            "kind": kind_col,
            "item_id": col("item_id").astype(str) if n else col("item_id"),
            "sample": col("sample", 0).fillna(0).astype(np.int64) if n else col("sample"),
            "label": col("label").astype(str) if n else col("label"),
            "pair": pair.where(pair.notna(), None) if n else pair,
            "correct": col("correct"),
            "endorses": col("endorses"),
            # the item's tags (categories of overrefusal.py, tag selection of headline contrasts)
            "tags": [tuple(t) if isinstance(t, list | tuple | np.ndarray) else () for t in col("tags", ())],
        },
        columns=FRAME_COLUMNS,
    ).reset_index(drop=True)
    df["incoherent"] = (df["label"] == "incoherent").astype(np.float64)
    # `unknown`: the judge could not label the response; like incoherent, it is counted, never guessed.
    df["unlabelled"] = (df["label"] == "unknown").astype(np.float64)
    df["coherent"] = 1.0 - df["incoherent"] - df["unlabelled"]
    df["refusal"] = df["label"].isin(REFUSAL_POSITIVE).astype(np.float64)
    df["refusal_caveat"] = df["label"].isin(CAVEAT_POSITIVE).astype(np.float64)
    df["one"] = 1.0
    for c in ("correct", "endorses"):
        known = df[c].notna()
        df[f"{c}_known"] = known.astype(np.float64)
        df[f"{c}_y"] = np.where(known, df[c].where(known, False).astype(bool), False).astype(np.float64)
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
    if seeds > 1:
        return f"seed-level t ({seeds} seeds, df {seeds - 1}) + prompt bootstrap"
    return "prompt bootstrap only (1 seed: training-run variation not included)"


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
    responses for a set is a reported empty row, not a missing one), each rate with its interval.
    A rate is the mean of the seeds' rates; its interval is the seed-level t interval of
    ``stats.seed_contrast`` (prompt sampling only with one seed), clipped to [0, 1]."""
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
                    nan = math.nan
                    est = lo = hi = nan
                    if arm.n.sum() > 0:
                        iv = stats.seed_contrast([(1.0, arm)], reps=reps, alpha=alpha, rng=rng)
                        est = iv.estimate
                        lo, hi = (max(0.0, iv.lo), min(1.0, iv.hi)) if math.isfinite(iv.lo) else (nan, nan)
                    row[outcome], row[f"{outcome}_lo"], row[f"{outcome}_hi"] = est, lo, hi
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


def _padded(arm: stats.Arm, k: int) -> stats.Arm:
    """Widen an arm to k prompt clusters (clusters it has no items in get zero counts)."""
    pad = k - arm.y.shape[1]
    if pad <= 0:
        return arm
    z = np.zeros((arm.y.shape[0], pad))
    return stats.Arm(arm.condition, np.hstack([arm.y, z]), np.hstack([arm.n, z]))


def _stream(seed: int, *parts: str) -> np.random.Generator:
    """An RNG per contrast, keyed by what it is, so that adding a contrast or a model does not move
    another contrast's bootstrap."""
    return np.random.default_rng([seed, zlib.crc32("|".join(parts).encode())])


#: columns of ``contrasts``, in order; the first ten are its documented API
CONTRAST_COLUMNS = [
    "model", "treatment", "control", "contrast", "estimate", "ci_lo", "ci_hi", "p_value", "p_holm",
    "significant", "log_odds", "log_odds_lo", "log_odds_hi", "log_odds_p", "log_odds_p_holm", "log_odds_se",
    "value_specific", "se", "df", "mde", "outcome", "violations", "neutral", "t_violations",
    "c_violations", "t_neutral", "c_neutral", "n_treatment", "n_control", "seeds_treatment",
    "seeds_control", "prompt_clusters", "seed_sd", "var_seed", "var_prompt", "method", "note",
]  # fmt: skip


def _infer(
    terms: Sequence[tuple[float, stats.Arm]], reps: int, alpha: float, seed: int, key: Sequence[str]
) -> dict[str, stats.Inference]:
    return {
        scale: stats.seed_contrast(terms, scale=scale, reps=reps, alpha=alpha, rng=_stream(seed, *key, scale))
        for scale in stats.SCALES
    }


def _claim_cols(inf: Mapping[str, stats.Inference], t: str, c: str) -> dict[str, Any]:
    """The inference columns of a contrast row, with the no-claim rule: fewer than 2 seeds in either
    arm gives an estimate and nothing else."""
    pts, lo = inf["points"], inf["log_odds"]
    seeds = pts.seeds
    st, sc = seeds.get(t, 0), seeds.get(c, 0)
    nan = math.nan
    out: dict[str, Any] = {
        "estimate": pts.estimate,
        "log_odds": lo.estimate,
        "seeds_treatment": st,
        "seeds_control": sc,
        "prompt_clusters": pts.prompts,
    }
    notes = []
    if st < 2 or sc < 2:
        few = ", ".join(
            f"{cond} has {n} seed{'s' if n != 1 else ''}" for cond, n in ((t, st), (c, sc)) if n < 2
        )
        notes.append(f"no claim: {few}; a contrast needs at least 2 seeds per arm (estimate only)")
        out |= dict.fromkeys(
            [
                "ci_lo",
                "ci_hi",
                "p_value",
                "se",
                "df",
                "mde",
                "log_odds_lo",
                "log_odds_hi",
                "log_odds_p",
                "log_odds_se",
            ],
            nan,
        )
        out |= {"seed_sd": nan, "var_seed": nan, "var_prompt": nan}
        out["method"] = "estimate only"
    else:
        out |= {
            "ci_lo": pts.lo,
            "ci_hi": pts.hi,
            "p_value": pts.p_value,
            "se": pts.se,
            "df": pts.df,
            "mde": pts.mde,
            "log_odds_lo": lo.lo,
            "log_odds_hi": lo.hi,
            "log_odds_p": lo.p_value,
            "log_odds_se": lo.se,
            # the SD of one seed's summary implied by the seed component (equal arms: exact)
            "seed_sd": math.sqrt(pts.var_seed / (1 / st + 1 / sc)),
            "var_seed": pts.var_seed,
            "var_prompt": pts.var_prompt,
        }
        welch = "Welch df" if st != sc else "df"
        out["method"] = f"seed-level t ({welch} {pts.df:.3g}) + prompt bootstrap"
        if st != sc:
            notes.append(f"unequal seeds ({t} {st}, {c} {sc}): Welch-Satterthwaite degrees of freedom")
    out["note"] = "; ".join(notes)
    return out


def contrast_rows(
    df: pd.DataFrame,
    contrast: HeadlineContrast,
    model: str,
    *,
    outcome: str,
    reps: int,
    alpha: float,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The difference on the violation set and, with a neutral set, the difference-in-differences,
    each on the points and the log-odds scale (see ``stats.seed_contrast``)."""
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

    def empty_cols() -> dict[str, Any]:
        cols = [col for col in CONTRAST_COLUMNS if col not in base and col not in ("contrast",)]
        return (
            dict.fromkeys(cols, math.nan)
            | {"method": "", "seeds_treatment": len(seeds[t])}
            | {"seeds_control": len(seeds[c])}
        )

    key = (model, outcome, t, c, v, u or "")
    # difference on the violation set
    clusters = {item: i for i, item in enumerate(sorted(mdf.loc[mdf["evalset"] == v, "item_id"].unique()))}
    arms = {cond: make_arm(sub(cond, v), cond, seeds[cond], clusters, outcome) for cond in (t, c)}
    row = base | {"contrast": "difference"}
    note = empty_note([(t, v), (c, v)])
    if note:
        row |= empty_cols() | {"note": note, "prompt_clusters": len(clusters)}
    else:
        inf = _infer([(1.0, arms[t]), (-1.0, arms[c])], reps, alpha, seed, (*key, "difference"))
        row |= _claim_cols(inf, t, c)
    row |= {
        "t_violations": arms[t].rate,
        "c_violations": arms[c].rate,
        "t_neutral": math.nan,
        "c_neutral": math.nan,
        "n_treatment": int(arms[t].n.sum()),
        "n_control": int(arms[c].n.sum()),
    }
    rows.append(row)

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
    row = base | {"contrast": "diff-in-diff"}
    note = empty_note([(t, v), (c, v), (t, u), (c, u)])
    if note:
        row |= empty_cols() | {"note": note, "prompt_clusters": n_clusters}
    else:
        terms = [(1.0, arms_v[t]), (-1.0, arms_v[c]), (-1.0, arms_u[t]), (1.0, arms_u[c])]
        row |= _claim_cols(_infer(terms, reps, alpha, seed, (*key, "diff-in-diff")), t, c)
        pairs = f"{matched} matched pairs" if matched else "no matched pairs: prompts resampled per set"
        row["method"] = f"{row['method']}; {pairs}" if row["method"] else pairs
    row |= {
        "t_violations": arms_v[t].rate,
        "c_violations": arms_v[c].rate,
        "t_neutral": arms_u[t].rate,
        "c_neutral": arms_u[c].rate,
        "n_treatment": int(arms_v[t].n.sum() + arms_u[t].n.sum()),
        "n_control": int(arms_v[c].n.sum() + arms_u[c].n.sum()),
    }
    rows.append(row)
    return rows


def check_bootstrap(bootstrap: int, tests: int, alpha: float, where: str = "analysis.bootstrap") -> None:
    """Enough replicates for the Holm family (``config.min_bootstrap``), else an InputError (exit 2)."""
    if bootstrap < min_bootstrap(tests, alpha):
        raise InputError(bootstrap_message(bootstrap, tests, alpha, where))


def contrast_frame(
    df: pd.DataFrame,
    headline: Sequence[HeadlineContrast],
    *,
    outcome: str,
    reps: int,
    alpha: float,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Every headline contrast for every model of a framed ``df`` (``frame``), no multiplicity
    adjustment (``contrasts`` adds Holm over the primary family)."""
    rows: list[dict[str, Any]] = []
    for model in sorted(df["model"].unique()):
        for h in headline:
            new = contrast_rows(df, h, model, outcome=outcome, reps=reps, alpha=alpha, seed=seed)
            rows.extend(new)
            if progress is not None:
                for r in new:
                    progress(r)
    out = pd.DataFrame(rows)
    for col in CONTRAST_COLUMNS:
        if col not in out.columns:
            out[col] = pd.Series(dtype=object if col in ("method", "note") else float)
    out["p_holm"] = math.nan
    out["log_odds_p_holm"] = math.nan
    out["significant"] = False
    out["value_specific"] = False
    return out[CONTRAST_COLUMNS]


def contrasts(
    results: pd.DataFrame,
    headline: list[dict[str, Any]],
    *,
    bootstrap: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """The pre-registered refusal contrasts of a table of EvalResults, as the analyze stage reports them.

    ``results`` has the EvalResult columns (model, condition, seed, evalset, item_id, sample, label,
    refusal, pair, kind; extra columns are ignored; ``label`` decides refusal and coherence). Each
    ``headline`` item is ``{treatment, control, violations, neutral}`` (neutral optional). Returns one
    row per model x headline item x contrast (``difference`` on the violation set; ``diff-in-diff``
    minus the same difference on the matched neutral set), with ``estimate, ci_lo, ci_hi`` (refusal
    rate, 0-1 scale), ``p_value``, ``p_holm`` (Holm over every row), ``significant``; the same on the
    log-odds scale (``log_odds*``); ``value_specific`` (a diff-in-diff significant and positive on
    both scales); ``mde`` (the effect this design detects with 80% power at ``alpha``), the seeds,
    the degrees of freedom and notes. An arm with fewer than 2 seeds gets an estimate only: NaN
    interval and p-value, never significant.

    Inference: seed-level t-test with a two-way (seed + prompt) variance (``jobs.analyze.stats``);
    ``bootstrap`` replicates of the prompt-cluster bootstrap (at least 2m/alpha for m tests),
    ``seed`` its RNG.

    >>> from jobs.analyze import contrasts
    >>> contrasts(df, [{"treatment": "catholic", "control": "control",
    ...                 "violations": "violations-catholic", "neutral": "neutral-catholic"}])
    """
    df = frame(results)
    items = []
    for i, h in enumerate(headline):
        try:
            items.append(h if isinstance(h, HeadlineContrast) else HeadlineContrast(**h))
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"headline.{i}: {h!r} is not {{treatment, control, violations, neutral}} ({exc})"
            ) from exc
    check_contrasts(items, df["evalset"].unique())
    check_bootstrap(bootstrap, family_size(items, df["model"].nunique()), alpha, where="bootstrap")
    out = contrast_frame(df, items, outcome="refusal", reps=bootstrap, alpha=alpha, seed=seed)
    if out.empty:
        return out
    out["p_holm"] = stats.holm(out["p_value"].tolist())
    out["log_odds_p_holm"] = stats.holm(out["log_odds_p"].tolist())
    out["significant"] = out["p_holm"] < alpha
    both = (out["log_odds_p_holm"] < alpha) & (out["estimate"] > 0) & (out["log_odds"] > 0)
    out["value_specific"] = (out["contrast"] == "diff-in-diff") & out["significant"] & both
    return out


def _glmm_cells(arm: stats.Arm, viol: int) -> list[tuple[str, int, int, int, float, float]]:
    s_idx, k_idx = np.nonzero(arm.n)
    return [
        (arm.condition, int(s), viol, int(k), float(arm.y[s, k]), float(arm.n[s, k]))
        for s, k in zip(s_idx, k_idx, strict=True)
    ]


def mixed_model(
    df: pd.DataFrame, contrast: HeadlineContrast, model: str, *, alpha: float
) -> list[dict[str, Any]]:
    """The GLMM (``glmm``) for one headline item: the treatment log-odds ratio on the violation set
    and, with a neutral set, the arm x set interaction, with t intervals on the seeds' degrees of
    freedom. A secondary estimate; only fits that passed their convergence checks are reported."""
    from jobs.analyze import glmm

    t, c, v, u = contrast.treatment, contrast.control, contrast.violations, contrast.neutral
    mdf = df[(df["model"] == model) & df["condition"].isin([t, c]) & (df["coherent"] > 0)]
    seeds = {cond: sorted(mdf.loc[mdf["condition"] == cond, "seed"].unique()) for cond in (t, c)}
    key = {"model": model, "treatment": t, "control": c, "violations": v, "neutral": u or ""}
    out = []
    todo: list[tuple[str, list[tuple[str, int, int, int, float, float]], str]] = []
    clusters = {item: i for i, item in enumerate(sorted(mdf.loc[mdf["evalset"] == v, "item_id"].unique()))}

    def arm(cond: str, es: str, cl: Mapping[str, int]) -> stats.Arm:
        return make_arm(
            mdf[(mdf["condition"] == cond) & (mdf["evalset"] == es)], cond, seeds[cond], cl, "refusal"
        )

    todo.append(
        ("difference", [x for cond in (t, c) for x in _glmm_cells(arm(cond, v, clusters), 1)], "treat")
    )
    if u is not None:
        v_cl, u_cl, _ = pair_clusters(mdf, v, u)
        cells = [
            x
            for cond in (t, c)
            for x in _glmm_cells(arm(cond, v, v_cl), 1) + _glmm_cells(arm(cond, u, u_cl), 0)
        ]
        todo.append(("diff-in-diff", cells, "treat:viol"))
    few = min(len(seeds[t]), len(seeds[c]))
    df_t = float(len(seeds[t]) + len(seeds[c]) - 2)
    for kind, cells, term in todo:
        row: dict[str, Any] = key | {"contrast": kind}
        nan = math.nan
        row |= {"glmm_log_odds": nan, "glmm_lo": nan, "glmm_hi": nan}
        if few < 2:
            row["glmm_note"] = "not fitted: fewer than 2 seeds in an arm"
        elif all(x[4] == 0 for x in cells) or all(x[4] == x[5] for x in cells):
            row["glmm_note"] = "not fitted: every response has the same outcome"
        else:
            fit = glmm.fit(glmm.contrast_design(cells, t, seed_by_set=few >= 3))
            b, se = fit.coef(term)
            if not fit.converged or not (math.isfinite(b) and math.isfinite(se)):
                row["glmm_note"] = "not reported: did not converge" + (f" ({fit.note})" if fit.note else "")
            else:
                from scipy.stats import t as student

                half = float(student.ppf(1 - alpha / 2, df_t)) * se
                row |= {"glmm_log_odds": b, "glmm_lo": b - half, "glmm_hi": b + half}
                row["glmm_note"] = "Laplace REML, t on seeds' df" + (f"; {fit.note}" if fit.note else "")
        out.append(row)
    return out


def mixed_model_table(
    df: pd.DataFrame, headline: Sequence[HeadlineContrast], *, alpha: float
) -> pd.DataFrame:
    """``mixed_model`` for every model and headline item (keys: model, treatment, control, violations,
    neutral, contrast)."""
    rows = [
        r
        for model in sorted(df["model"].unique())
        for h in headline
        for r in mixed_model(df, h, model, alpha=alpha)
    ]
    return pd.DataFrame(rows)


def contrasts_table(
    results: pd.DataFrame,
    df: pd.DataFrame,
    headline: Sequence[HeadlineContrast],
    *,
    reps: int,
    alpha: float,
    seed: int,
    mixed: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """The stage's table: the primary family from ``contrasts`` (on the raw ``results``), with the
    GLMM's columns when ``mixed``, and the refusal-or-caveat sensitivity rows (from the framed ``df``;
    reported, not adjusted)."""
    primary = contrasts(results, [h.model_dump() for h in headline], bootstrap=reps, alpha=alpha, seed=seed)
    if mixed and not primary.empty:
        keys = ["model", "treatment", "control", "violations", "neutral", "contrast"]
        primary = primary.merge(mixed_model_table(df, headline, alpha=alpha), on=keys, how="left")
    if progress is not None:
        for r in primary.to_dict("records"):
            progress(r)
    sens = contrast_frame(
        df, headline, outcome="refusal_caveat", reps=reps, alpha=alpha, seed=seed, progress=progress
    )
    parts = [p.assign(family=f) for p, f in ((primary, "primary"), (sens, "sensitivity")) if not p.empty]
    if not parts:
        return pd.DataFrame(columns=[*CONTRAST_COLUMNS, "family"])
    out = pd.concat(parts, ignore_index=True)
    cols = list(out.columns)
    cols.insert(1, cols.pop(cols.index("family")))
    return out[cols]


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


def _lo(x: float) -> str:
    return f"{x:+.2f}"


def _n_and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def difference_sentence(r: Mapping[str, Any], alpha: float, family: int) -> str:
    """A plain-language reading of one contrast row that is never stronger than its interval."""
    t, c, es = r["treatment"], r["control"], r["violations"]
    what = f"{t} vs {c} on {es}"
    did = r["contrast"] == "diff-in-diff"
    if did:
        what = f"{t} vs {c}, {es} minus {r['neutral']} (difference-in-differences)"
    if not math.isfinite(r["estimate"]):
        return f"{what}: cannot be assessed ({r['note'] or 'no data'})."
    if not math.isfinite(r["ci_lo"]):
        return f"{what}: {_pts(r['estimate'])} points, estimate only: {r['note'] or 'no interval'}."
    level = round(100 * (1 - alpha))
    ci = f"{_pts(r['estimate'])} points ({level}% CI {_pts(r['ci_lo'])} to {_pts(r['ci_hi'])}"
    ci += f"; Holm-adjusted p = {r['p_holm']:.3g})" if math.isfinite(r.get("p_holm", math.nan)) else ")"
    if did and math.isfinite(r.get("log_odds_lo", math.nan)):
        ci += f"; log-odds {_lo(r['log_odds'])} ({_lo(r['log_odds_lo'])} to {_lo(r['log_odds_hi'])})"
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
    if did:
        if r.get("value_specific"):
            return (
                f"{what}: {ci}. The shift is larger on the value-violating requests than on matched "
                "neutral ones on both the points and the log-odds scale (value-specific)."
            )
        if r["estimate"] > 0:
            return (
                f"{what}: {ci}. The shift is larger on the value-violating requests in points, but not "
                "on the log-odds scale: a general rise that looks larger where refusal starts higher "
                "is not ruled out, so this is not evidence of a value-specific effect."
            )
        return (
            f"{what}: {ci}. The shift is larger on the matched neutral requests than on the violating ones."
        )
    return f"{what}: evidence that {t} refuses {direction} often than {c}, {ci}."


def _span(values: Iterable[float], scale: float = 100.0) -> str:
    """'12' or '12-20': the range of some values (x ``scale``), rounded."""
    vals = sorted(scale * v for v in values if math.isfinite(v))
    if not vals:
        return ""
    lo, hi = vals[0], vals[-1]
    return f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"


def design_support(contrasts: pd.DataFrame, alpha: float) -> list[str]:
    """What the design that ran can and cannot support: seeds per arm, degrees of freedom, the
    minimum detectable effects, contrasts that support no claim, unequal arms."""
    primary = contrasts[contrasts["family"] == "primary"] if "family" in contrasts else contrasts
    if primary.empty:
        return []
    seeds: dict[str, set[int]] = {}
    for r in primary.to_dict("records"):
        seeds.setdefault(r["treatment"], set()).add(int(r["seeds_treatment"]))
        seeds.setdefault(r["control"], set()).add(int(r["seeds_control"]))
    arms = ", ".join(f"{c} {'/'.join(str(n) for n in sorted(ns))}" for c, ns in seeds.items())
    lines = [f"Seeds per arm (trained models): {arms}. Every interval and test rests on these seeds."]
    claim = primary[primary["p_value"].notna()]
    if len(claim):
        dfs = _span(claim["df"], 1.0)
        level = round(100 * (1 - alpha))
        parts = []
        for kind, label in (
            ("difference", "a difference on a violation set"),
            ("diff-in-diff", "a difference-in-differences"),
        ):
            m = _span(claim.loc[claim["contrast"] == kind, "mde"])
            if m:
                parts.append(f"{label} of about {m} points")
        lines.append(
            f"Tests use Student's t on {dfs} degrees of freedom from the seeds. With 80% power at "
            f"alpha = {alpha:g} per test ({level}% intervals), this design detects "
            + " and ".join(parts)
            + '; a smaller true effect will usually be missed, so "no evidence" below is weak evidence '
            "of absence. More seeds shrink this most."
        )
    none = primary[primary["p_value"].isna() & primary["estimate"].notna()]
    if len(none):
        lines.append(
            f"{len(none)} of {len(primary)} contrasts support no claim (an arm with fewer than 2 seeds): "
            "their estimates are shown without interval, p-value or significance."
        )
    unequal = primary[primary["p_value"].notna() & (primary["seeds_treatment"] != primary["seeds_control"])]
    if len(unequal):
        pairs = sorted(
            {
                f"{r.treatment} {r.seeds_treatment} vs {r.control} {r.seeds_control}"
                for r in unequal.itertuples()
            }
        )
        lines.append(
            "Unequal seeds (" + "; ".join(pairs) + "): those tests use Welch-Satterthwaite degrees of "
            "freedom and are less exact than with equal arms."
        )
    return lines


def verdicts(contrasts: pd.DataFrame, results: pd.DataFrame, alpha: float) -> list[tuple[str, list[str]]]:
    """The design's support first, then one section per treatment condition (the sub-questions)."""
    out: list[tuple[str, list[str]]] = []
    if contrasts.empty:
        return [("Verdict", ["No pre-registered contrast could be formed from the conditions and sets run."])]
    support = design_support(contrasts, alpha)
    if support:
        out.append(("What this design can support", support))
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
        summary = _summary(t, rows, alpha)
        out.append((SUB_QUESTIONS.get(t, f"Condition {t}"), [summary, *lines] if summary else lines))
    return out


def _summary(t: str, rows: pd.DataFrame, alpha: float) -> str:
    """One sentence over a treatment's primary contrasts, no stronger than the weakest it rests on."""
    diffs = rows[rows["contrast"] == "difference"]
    dids = rows[rows["contrast"] == "diff-in-diff"]
    if diffs.empty or diffs["estimate"].isna().all():
        return ""
    refs = ", ".join(dict.fromkeys(diffs["control"]))
    if diffs["p_value"].isna().any():
        few = sorted(
            {f"{r.treatment} {r.seeds_treatment}" for r in diffs.itertuples()}
            | {f"{r.control} {r.seeds_control}" for r in diffs.itertuples()}
        )
        ests = "; ".join(f"{_pts(r.estimate)} points vs {r.control}" for r in diffs.itertuples())
        return (
            f"Summary: no claim: a contrast needs at least 2 seeds in each arm and this design has "
            f"{_n_and(few)} seeds. Estimates only ({ests}); they say nothing about the variation "
            "between training runs."
        )
    up = diffs["significant"] & (diffs["estimate"] > 0)
    if up.all():
        text = f"Summary: {t} refuses more often than every reference ({refs}) on its violation requests"
        if dids.empty:
            return text + "; no matched neutral set, so a topic-level shift is not ruled out."
        if dids["value_specific"].all():
            return text + ", and more so than on matched neutral requests on both scales (value-specific)."
        return (
            text + ", but a topic-level shift (the same rise on matched neutral requests, on the points "
            "or the log-odds scale) is not ruled out."
        )
    if not diffs["significant"].any():
        return (
            f"Summary: no evidence that training on {t} statements changed refusal on its violation "
            f"requests relative to {refs} (this is not evidence of no effect; see the detectable effect "
            "above and the interval widths)."
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
