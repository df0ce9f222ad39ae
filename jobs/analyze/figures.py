"""Figures of the analysis (matplotlib, Agg backend): each returned as PNG and SVG bytes so that the
caller writes them through the store (local or S3) and embeds the PNG in the HTML report."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    png: bytes
    svg: bytes


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _render(fig: Any, name: str, caption: str) -> Figure:
    plt = _plt()
    out = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        # a fixed date keeps the SVG byte-identical between runs of the same data
        meta = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight", metadata=meta)
        out[fmt] = buf.getvalue()
    plt.close(fig)
    return Figure(name, caption, out["png"], out["svg"])


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _interval_panel(
    ax: Any,
    cells: pd.DataFrame,
    conditions: list[str],
    measure: str,
    points: pd.DataFrame | None,
    offset: float = 0.0,
    color: str = "C0",
    label: str | None = None,
) -> None:
    xs = {c: i for i, c in enumerate(conditions)}
    for r in cells.to_dict("records"):
        x = xs[r["condition"]] + offset
        est, lo, hi = r[measure], r[f"{measure}_lo"], r[f"{measure}_hi"]
        if not _finite(est):
            ax.text(x, 0.02, "empty", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
            continue
        yerr = [[est - lo], [hi - est]] if _finite(lo) and _finite(hi) else None
        ax.errorbar(x, est, yerr=yerr, fmt="o", color=color, capsize=3, ms=6, label=label, zorder=3)
        label = None
        if points is not None:
            p = points[points["condition"] == r["condition"]]
            if len(p):
                jitter = np.linspace(-0.12, 0.12, len(p)) if len(p) > 1 else np.zeros(1)
                ax.scatter(x + 0.25 + jitter, p["rate"], s=12, color=color, alpha=0.45, zorder=2)
    ax.set_xticks(range(len(conditions)))
    ax.set_xticklabels(conditions, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(axis="y", alpha=0.3)


def refusal_by_condition(
    results: pd.DataFrame, per_seed: pd.DataFrame, model: str, conditions: list[str]
) -> Figure | None:
    """Refusal rate (95% interval) by condition, one panel per eval set; small dots are seeds."""
    r = results[results["model"] == model]
    sets = list(dict.fromkeys(r["evalset"]))
    if not sets:
        return None
    plt = _plt()
    ncols = min(4, len(sets))
    nrows = math.ceil(len(sets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.9 * nrows), squeeze=False, sharey=True)
    for ax, es in zip(axes.flat, sets, strict=False):
        seeds = per_seed[(per_seed["model"] == model) & (per_seed["evalset"] == es)]
        _interval_panel(ax, r[r["evalset"] == es], conditions, "refusal", seeds)
        ax.set_title(es, fontsize=9)
    for ax in list(axes.flat)[len(sets) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("refusal rate")
    fig.suptitle(f"{model}: refusal (refuse or redirect) by condition; dots = seeds", fontsize=10)
    fig.tight_layout()
    return _render(
        fig,
        f"refusal-{model}",
        f"{model}: refusal rate by condition for each eval set, with 95% seed-level t intervals "
        "(points with bars) and per-seed rates (small dots). Incoherent responses are excluded.",
    )


def forest(contrasts: pd.DataFrame) -> Figure | None:
    """The pre-registered contrasts (percentage points, 95% interval); filled = significant after Holm."""
    if contrasts.empty:
        return None
    rows = contrasts[contrasts["family"] == "primary"].to_dict("records")
    if not rows:
        return None
    plt = _plt()
    multi = contrasts["model"].nunique() > 1
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    labels = []
    for i, r in enumerate(reversed(rows)):
        kind = "DiD vs " + r["neutral"] if r["contrast"] == "diff-in-diff" else r["violations"]
        labels.append(
            ("[" + r["model"] + "] " if multi else "") + f"{r['treatment']} − {r['control']} ({kind})"
        )
        if not _finite(r["estimate"]):
            ax.text(0, i, "not estimable", va="center", ha="center", fontsize=7, color="grey")
            continue
        if not _finite(r["ci_lo"]):  # fewer than 2 seeds in an arm: the estimate, and no claim
            ax.plot(100 * r["estimate"], i, "x", color="grey", ms=7)
            ax.text(100 * r["estimate"], i + 0.25, "estimate only", ha="center", fontsize=7, color="grey")
            continue
        est, lo, hi = 100 * r["estimate"], 100 * r["ci_lo"], 100 * r["ci_hi"]
        color = "C3" if r["contrast"] == "diff-in-diff" else "C0"
        ax.plot([lo, hi], [i, i], color=color, lw=2)
        ax.plot(est, i, "o", color=color, mfc=color if r["significant"] else "white", ms=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("difference in refusal rate (percentage points), 95% interval")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _render(
        fig,
        "contrasts-forest",
        "Pre-registered contrasts: differences in refusal rate (blue) and differences-in-differences "
        "against the matched neutral set (red), with 95% seed-level t intervals; filled markers are "
        "significant after Holm adjustment; grey crosses are estimates without a claim (an arm with "
        "fewer than 2 seeds).",
    )


def sanity_and_beliefs(results: pd.DataFrame, conditions: list[str]) -> Figure | None:
    """Sanity accuracy and belief endorsement by condition (one series per model x set)."""
    panels = [
        ("accuracy", results[(results["kind"] == "sanity")], "sanity accuracy"),
        ("endorsement", results[(results["kind"] == "belief")], "belief endorsement"),
    ]
    panels = [(m, d[d[f"{m}_n"] > 0], t) for m, d, t in panels]
    if all(d.empty for _, d, _ in panels):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), squeeze=False)
    for ax, (measure, d, title) in zip(axes.flat, panels, strict=True):
        series = list(dict.fromkeys(zip(d["model"], d["evalset"], strict=True)))
        width = 0.5 / max(1, len(series))
        for j, (model, es) in enumerate(series):
            cells = d[(d["model"] == model) & (d["evalset"] == es)]
            off = (j - (len(series) - 1) / 2) * width
            _interval_panel(ax, cells, conditions, measure, None, off, f"C{j % 10}", f"{model} {es}")
        if d.empty:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="grey")
            ax.set_xticks([])
        elif series:
            ax.legend(fontsize=7, loc="best")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _render(
        fig,
        "sanity-beliefs",
        "Sanity accuracy (responses with a correctness label) and belief endorsement (responses "
        "with an endorsement label) by condition, with 95% seed-level t intervals.",
    )
