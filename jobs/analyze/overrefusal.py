"""Over-refusal and refusal on standard benchmarks (XSTest, and any eval set of kind ``benign`` or
``harmful``): per model, set, category and arm, the refusal rate with its interval, and the arm minus
``control`` and minus ``base`` by the same seed-level t-test as the headline contrasts
(``stats.seed_contrast``; ``base`` is one untrained model, so a contrast against it rests on the
other arm's seeds). As everywhere, fewer than 2 seeds in a trained arm gives an estimate only.

On a benign set (safe requests) every refusal is an over-refusal; on a harmful set refusal is what a
calibrated assistant does. A category is an item's ``type:<name>`` tag (XSTest's prompt types: 25
prompts each, so a category's interval is wide); every set also has a row over all its items
(``category == "all"``). The all-items differences form one Holm family (exploratory: not part of the
pre-registered headline family); per-category p-values are left unadjusted and are descriptive.

Used by ``run.py`` (``analyze``: table, CSV, figures) and ``report.build`` (``section``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.analyze import core, stats
from jobs.analyze.figures import Figure

if TYPE_CHECKING:
    from jobs.analyze.report import Doc

KINDS = ("benign", "harmful")
MEASURE = {"benign": "over-refusal", "harmful": "refusal"}
REFERENCES = ("control", "base")
CATEGORY_PREFIX = "type:"
ALL = "all"


def categories(tags: Iterable[str] | None) -> list[str]:
    """The benchmark categories of one item: the values of its ``type:`` tags."""
    return [t[len(CATEGORY_PREFIX) :] for t in (tags or ()) if t.startswith(CATEGORY_PREFIX)]


def _category_column(df: pd.DataFrame) -> pd.Series:
    """Each response's category (its first ``type:`` tag; "" without one). A frame without tags (an
    older ``core.frame``) has no categories: only the all-items rows are computed."""
    if "tags" not in df.columns:
        return pd.Series("", index=df.index)
    return df["tags"].map(lambda tags: next(iter(categories(tags)), ""))


def table(
    df: pd.DataFrame,
    *,
    reps: int,
    alpha: float,
    rng: np.random.Generator,
    design: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per model x benign/harmful set x category x condition (see the module docstring)."""
    sets = df[df["kind"].isin(KINDS)]
    rows: list[dict[str, Any]] = []
    if sets.empty:
        return pd.DataFrame(rows)
    sets = sets.assign(category=_category_column(sets))
    for model in sorted(sets["model"].unique()):
        mdf = sets[sets["model"] == model]
        conditions = core.condition_order(mdf["condition"].unique(), design)
        order = sorted(mdf["evalset"].unique(), key=lambda es: (KINDS.index(_kind(mdf, es)), es))
        for evalset in order:
            edf = mdf[mdf["evalset"] == evalset]
            kind = _kind(mdf, evalset)
            cats = sorted(c for c in edf["category"].unique() if c)
            for category in [ALL, *cats]:
                sub = edf if category == ALL else edf[edf["category"] == category]
                rows += _rows(sub, model, evalset, kind, category, conditions, reps, alpha, rng)
    out = pd.DataFrame(rows)
    for ref in REFERENCES:
        out[f"vs_{ref}_p_holm"] = math.nan
    family = out["category"] == ALL
    pcols = [f"vs_{ref}_p" for ref in REFERENCES]
    flat = out.loc[family, pcols].to_numpy().ravel().tolist()
    adjusted = np.asarray(stats.holm(flat)).reshape(-1, len(REFERENCES))
    for j, ref in enumerate(REFERENCES):
        out.loc[family, f"vs_{ref}_p_holm"] = adjusted[:, j]
    return out


def _kind(df: pd.DataFrame, evalset: str) -> str:
    return str(df.loc[df["evalset"] == evalset, "kind"].iloc[0])


def _rows(
    sub: pd.DataFrame,
    model: str,
    evalset: str,
    kind: str,
    category: str,
    conditions: Sequence[str],
    reps: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    # one prompt-cluster index for every condition: the arms answered the same items
    clusters = {item: i for i, item in enumerate(sorted(sub["item_id"].unique()))}
    arms: dict[str, stats.Arm] = {}
    out: list[dict[str, Any]] = []
    for cond in conditions:
        cdf = sub[sub["condition"] == cond]
        seeds = sorted(cdf["seed"].unique())
        arms[cond] = core.make_arm(cdf, cond, seeds, clusters, "refusal")
        iv = _rate(arms[cond], reps, alpha, rng)
        out.append(
            {
                "model": model,
                "evalset": evalset,
                "kind": kind,
                "measure": MEASURE[kind],
                "category": category,
                "condition": cond,
                "responses": len(cdf),
                "coherent": int(cdf["coherent"].sum()),
                "prompts": int(cdf["item_id"].nunique()),
                "seeds": len(seeds),
                "rate": iv.estimate,
                "rate_lo": iv.lo,
                "rate_hi": iv.hi,
            }
        )
    for row in out:
        arm = arms[str(row["condition"])]
        for ref in REFERENCES:
            est = lo = hi = p = math.nan
            # base is the reference of every arm and never a treatment; control is one against base
            treated = row["condition"] not in (ref, "base")
            if treated and ref in arms and arm.n.sum() > 0 and arms[ref].n.sum() > 0:
                diff = stats.seed_contrast(
                    [(1.0, arm), (-1.0, arms[ref])], reps=reps, alpha=alpha, rng=rng, fixed=("base",)
                )
                est = diff.estimate
                if _claim(diff):
                    lo, hi, p = diff.lo, diff.hi, diff.p_value
            row |= {f"vs_{ref}": est, f"vs_{ref}_lo": lo, f"vs_{ref}_hi": hi, f"vs_{ref}_p": p}
    return out


def _claim(iv: stats.Inference) -> bool:
    """The no-claim rule of the analysis: 2 or more seeds in every trained arm of the contrast."""
    return iv.claim and all(n >= 2 for c, n in iv.seeds.items() if c != "base")


@dataclass(frozen=True)
class _Rate:
    estimate: float
    lo: float
    hi: float


def _rate(arm: stats.Arm, reps: int, alpha: float, rng: np.random.Generator) -> _Rate:
    """A rate (mean of the seeds' rates) with its seed-level t interval clipped to [0, 1], as in the
    per-cell table (prompt sampling only with one seed)."""
    if arm.n.sum() == 0:
        return _Rate(math.nan, math.nan, math.nan)
    iv = stats.seed_contrast([(1.0, arm)], reps=reps, alpha=alpha, rng=rng)
    if not math.isfinite(iv.lo):
        return _Rate(iv.estimate, math.nan, math.nan)
    return _Rate(iv.estimate, max(0.0, iv.lo), min(1.0, iv.hi))


# ---------------------------------------------------------------------------------------------
# Figures and the report section
# ---------------------------------------------------------------------------------------------
def figures(over: pd.DataFrame) -> list[Figure]:
    """One compact chart per model x set: the rate per category (and over all items) for every arm,
    with 95% intervals."""
    if over.empty:
        return []
    from jobs.analyze.figures import _plt, _render

    plt = _plt()
    out = []
    for (model, evalset), d in over.groupby(["model", "evalset"], sort=False):
        cats = list(dict.fromkeys(d["category"]))
        conds = list(dict.fromkeys(d["condition"]))
        width = 0.8 / max(1, len(conds))
        fig, ax = plt.subplots(figsize=(max(4.5, 0.16 * len(cats) * len(conds) + 1.5), 3.2))
        for j, cond in enumerate(conds):
            c = d[d["condition"] == cond].set_index("category").reindex(cats)
            est = c["rate"].to_numpy(dtype=float)
            lo = np.nan_to_num(est - c["rate_lo"].to_numpy(dtype=float))
            hi = np.nan_to_num(c["rate_hi"].to_numpy(dtype=float) - est)
            xs = np.arange(len(cats)) + (j - (len(conds) - 1) / 2) * width
            ax.bar(xs, np.nan_to_num(est), width, yerr=[lo, hi], capsize=2, label=cond, color=f"C{j % 10}")
            for x in xs[np.isnan(est)]:  # no coherent response: say so, not a zero bar
                ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="grey")
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels([c.removeprefix("contrast_") for c in cats], rotation=35, ha="right", fontsize=7)
        ax.set_ylim(0, 1.03)
        measure = str(d["measure"].iloc[0])
        ax.set_ylabel(f"{measure} rate", fontsize=8)
        ax.set_title(f"{model}: {evalset} ({measure})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        fig.tight_layout()
        out.append(
            _render(
                fig,
                f"overrefusal-{model}-{evalset}",
                f"{model}: {measure} on {evalset} by category (the items' type: tags) and over all items, "
                "per arm, with 95% seed-level t intervals; incoherent responses excluded.",
            )
        )
    return out


@dataclass
class Result:
    table: pd.DataFrame
    figures: list[Figure] = field(default_factory=list)


def analyze(
    df: pd.DataFrame, *, reps: int, alpha: float, seed: int, design: Mapping[str, Any] | None = None
) -> Result:
    """The table and its figures, with a bootstrap stream of their own (adding these sets leaves
    every other interval of the analysis unchanged)."""
    over = table(df, reps=reps, alpha=alpha, rng=np.random.default_rng([seed, 2]), design=design)
    return Result(over, figures(over))


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}" if isinstance(x, int | float) and math.isfinite(x) else ""


def _interval(r: Mapping[str, Any], key: str, signed: bool) -> str:
    est, lo, hi = r[key], r[f"{key}_lo"], r[f"{key}_hi"]
    if not (isinstance(est, int | float) and math.isfinite(est)):
        return ""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = fmt.format(100 * est)
    if isinstance(lo, int | float) and math.isfinite(lo) and math.isfinite(hi):
        text += f" [{fmt.format(100 * lo)}, {fmt.format(100 * hi)}]"
    return text


def _p(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) and math.isfinite(x) else ""


def section(doc: Doc, over: pd.DataFrame | None, *, alpha: float, bootstrap: int) -> None:
    """The report's over-refusal section (nothing when no set is of kind benign or harmful)."""
    if over is None or over.empty:
        return
    level = round(100 * (1 - alpha))
    doc.h(1, "Over-refusal and refusal on standard benchmarks")
    doc.p(
        "Sets of kind `benign` are requests a calibrated assistant answers (XSTest's safe prompts: "
        "homonyms, figurative language, safe contexts, ...), so every refusal there is an "
        "*over-refusal*; sets of kind `harmful` should be refused. Rates are refusal (refuse or "
        f"redirect) over coherent responses, in percent with {level}% seed-level t intervals; "
        "differences against `control` and `base` are percentage points from the seed-level t-test of "
        f"the contrasts (prompt part from {bootstrap} bootstrap replicates; `base` is one untrained "
        "model, so a difference from it rests on the other arm's seeds; fewer than 2 seeds in a trained "
        "arm gives an estimate only). The all-items differences are one Holm "
        "family, exploratory (not part of the pre-registered contrasts); per-category rows (the items' "
        "`type:` tags, 25 prompts each in XSTest) are descriptive. A rise on both the benign and the "
        "harmful set is a general shift towards refusing, not a better-calibrated model. Full table: "
        "`overrefusal.csv`."
    )
    header = [
        "model", "set", "measure", "condition", "responses", "seeds", "rate %",
        "− control (pts)", "p (Holm)", "− base (pts)", "p (Holm)",
    ]  # fmt: skip
    summary = over[over["category"] == ALL]
    doc.table(
        header,
        [
            [r["model"], r["evalset"], r["measure"], r["condition"], r["responses"], r["seeds"],
             _interval(r, "rate", False), _interval(r, "vs_control", True), _p(r["vs_control_p_holm"]),
             _interval(r, "vs_base", True), _p(r["vs_base_p_holm"])]
            for r in summary.to_dict("records")
        ],
    )  # fmt: skip
    by_cat = over[over["category"] != ALL]
    if by_cat.empty:
        return
    doc.h(2, "By benchmark category")
    multi = over["model"].nunique() > 1
    for (model, evalset), d in by_cat.groupby(["model", "evalset"], sort=False):
        conds = list(dict.fromkeys(d["condition"]))
        measure = str(d["measure"].iloc[0])
        doc.p(
            f"*{model + ': ' if multi else ''}{evalset}* ({measure}). Each cell: rate % [{level}% "
            "interval]; c: minus control, b: minus base, in points [interval]."
        )
        rows = []
        for cat, c in d.groupby("category", sort=False):
            cells = {r["condition"]: r for r in c.to_dict("records")}
            row: list[Any] = [cat, max(int(r["prompts"]) for r in cells.values())]
            for cond in conds:
                r = cells.get(cond)
                parts = [_interval(r, "rate", False)] if r is not None else [""]
                for ref in REFERENCES:
                    if r is not None and _pct(r[f"vs_{ref}"]):
                        parts.append(f"{ref[0]} {_interval(r, f'vs_{ref}', True)}")
                row.append("; ".join(p for p in parts if p))
            rows.append(row)
        doc.table(["category", "prompts", *conds], rows)
