"""Statistics of the analysis: a seed-level t-test with a two-way (seed and prompt) variance, and Holm.

Why this shape. The unit of replication is the trained model (a seed): responses of one model share
its quirks, so an arm with 3 seeds holds 3 independent observations of its condition, not 540
responses. Each seed is summarized by one number over the items every arm answers (its refusal rate,
or the difference between its rates on a violation set and the matched neutral set; on the points
or the log-odds scale). A contrast is then a difference of seed means, and its variance has two
parts:

- **seeds**: the spread of the seed summaries, ``s_c^2 / S_c`` per condition. It already holds the
  response-level noise of every seed x prompt cell once;
- **prompts**: the prompts are a sample too. A cluster bootstrap over prompt clusters (seeds held
  fixed; shared by every arm, a neutral item and its matched violation item one cluster) measures
  how the contrast moves with the prompts drawn. Its raw value counts the cell noise a second time,
  so that part (estimated from the spread between seeds at each prompt) is subtracted, leaving the
  prompt-by-condition variation; it is floored at 0 (Cameron, Gelbach and Miller's two-way variance,
  V_seed + V_prompt - V_cell).

Intervals and p-values use Student's t with the seeds' degrees of freedom (seeds_t + seeds_c - 2 for
equal arms, Welch-Satterthwaite for unequal ones): with 3 seeds per arm the critical value is 2.78,
not 1.96. For a comparison of two groups of clusters this is essentially the cluster-robust (CR2)
variance with Bell-McCaffrey degrees of freedom, and ``benchmarks/analyze_calibration.py`` shows it
holds its error rate at 3 and 5 seeds (a normal critical value rejects about 11% of null datasets at
3 vs 3). An arm with one seed has no seed variance to estimate, so a contrast involving it gets an
estimate and nothing else (the caller enforces that rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jobs.analyze import power


def cluster_weights(rng: np.random.Generator, n: int, reps: int) -> np.ndarray:
    """Bootstrap weights (reps x n) for n clusters: multinomial draws of n-1 clusters (Rao-Wu with
    m = n-1, which makes the bootstrap variance of a cluster mean s^2/n, unbiased); one cluster
    always gets weight 1 (nothing to resample)."""
    if n <= 1:
        return np.ones((reps, max(n, 1)))
    # n-1 uniform draws per replicate, counted per cluster with one bincount over offset indices:
    # the same distribution as rng.multinomial, several times faster for many clusters
    draws = rng.integers(0, n, size=(reps, n - 1)) + (np.arange(reps) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=reps * n).reshape(reps, n).astype(np.float64)


@dataclass(frozen=True)
class Arm:
    """Successes and trials of one (condition, eval set): ``y[s, k]`` and ``n[s, k]`` over the seeds of
    its condition and the prompt clusters of the analysis it belongs to. Every arm of one condition
    lists the same seeds in the same order (one trained model answers every set)."""

    condition: str
    y: np.ndarray
    n: np.ndarray

    @property
    def rate(self) -> float:
        """The mean over seeds of each seed's rate (a trained model counts once, however many of its
        responses were coherent); NaN without data."""
        rates = seed_values(self, "points")
        ok = rates[np.isfinite(rates)]
        return float(ok.mean()) if ok.size else math.nan


SCALES = ("points", "log_odds")


def _f(y: np.ndarray, n: np.ndarray, scale: str) -> np.ndarray:
    """A seed's summary from its totals: the rate, or its empirical logit (0.5 added to each count,
    finite at 0% and 100%). NaN where n == 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if scale == "points":
            return np.where(n > 0, y / np.where(n > 0, n, 1.0), np.nan)
        return np.where(n > 0, np.log((y + 0.5) / (n - y + 0.5)), np.nan)


def _df(y: np.ndarray, n: np.ndarray, scale: str) -> np.ndarray:
    """Derivative of ``_f`` with respect to the rate y/n (for the cell-noise term)."""
    if scale == "points":
        return np.ones_like(n, dtype=np.float64)
    return n / (y + 0.5) + n / (n - y + 0.5)


def seed_values(arm: Arm, scale: str) -> np.ndarray:
    return _f(arm.y.sum(axis=1), arm.n.sum(axis=1), scale)


@dataclass(frozen=True)
class Inference:
    """A linear contrast of seed means with its two-way standard error and t interval. ``se`` and
    everything after it are NaN where the design gives no variance (see ``seeds``)."""

    estimate: float
    se: float
    df: float
    lo: float
    hi: float
    p_value: float
    mde: float
    var_seed: float
    var_prompt: float
    seeds: dict[str, int]
    prompts: int

    @property
    def claim(self) -> bool:
        return math.isfinite(self.p_value)


def _t(alpha: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(1 - alpha / 2, df))


def _p(stat: float, df: float) -> float:
    from scipy.stats import t

    return float(min(1.0, 2 * t.sf(abs(stat), df)))


def seed_contrast(
    terms: Sequence[tuple[float, Arm]],
    *,
    scale: str = "points",
    reps: int,
    alpha: float,
    rng: np.random.Generator,
    fixed: Sequence[str] = (),
) -> Inference:
    """``sum(coef * seed summary of arm)``, averaged over each condition's seeds, with the two-way
    variance of the module docstring and a t interval on the seeds' degrees of freedom.

    A condition in ``fixed`` is one model, not a sample of training runs (the untrained ``base``
    model): it has no seed variance and adds no degrees of freedom, and a contrast against it needs
    2 seeds in the other conditions only.

    With one seed in every condition (a single trained model per arm) the interval is the prompt
    bootstrap's alone on K - 1 degrees of freedom: it describes prompt sampling only. With one seed in
    some but not all conditions there is no honest interval and ``se`` is NaN.
    """
    if not terms:
        raise ValueError("a contrast needs at least one term")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r} (known: {SCALES})")
    k = terms[0][1].y.shape[1]
    by_cond: dict[str, list[tuple[float, Arm]]] = {}
    for coef, arm in terms:
        if arm.y.shape[1] != k:
            raise ValueError("every arm of a contrast must use the same prompt clusters")
        by_cond.setdefault(arm.condition, []).append((coef, arm))

    # seed summaries per condition; a seed with no data on any of its sets drops out
    theta: dict[str, np.ndarray] = {}
    keep: dict[str, np.ndarray] = {}
    for cond, ts in by_cond.items():
        values = np.sum([coef * seed_values(arm, scale) for coef, arm in ts], axis=0)
        ok = np.isfinite(values)
        keep[cond], theta[cond] = ok, values[ok]
    seeds = {c: int(v.size) for c, v in theta.items()}
    nan = math.nan
    if any(s == 0 for s in seeds.values()):
        return Inference(nan, nan, nan, nan, nan, nan, nan, nan, nan, seeds, k)
    estimate = float(sum(v.mean() for v in theta.values()))

    # prompt component: bootstrap over prompt clusters with the seeds fixed
    v = cluster_weights(rng, k, reps).T  # K x reps
    boot = np.zeros(reps)
    cell = 0.0
    for cond, ts in by_cond.items():
        ok = keep[cond]
        total = np.zeros((int(ok.sum()), reps))
        z = np.zeros((int(ok.sum()), k))
        for coef, arm in ts:
            y, n = arm.y[ok], arm.n[ok]
            total += coef * _f(y @ v, n @ v, scale)
            ys, ns = y.sum(axis=1, keepdims=True), n.sum(axis=1, keepdims=True)
            rate = ys / ns
            z += coef * _df(ys, ns, scale) * (y - rate * n) / ns
        # a seed left without responses in a replicate (its items all dropped) sits that one out
        counted = np.isfinite(total)
        boot += np.where(counted, total, 0.0).sum(axis=0) / np.maximum(counted.sum(axis=0), 1)
        if seeds[cond] >= 2:
            cell += float(z.var(axis=0, ddof=1).sum()) / seeds[cond]
    finite = boot[np.isfinite(boot)]
    var_prompt_raw = float(finite.var(ddof=1)) if finite.size > 1 else 0.0
    factor = k / (k - 1) if k > 1 else 1.0

    sampled = {c: n for c, n in seeds.items() if c not in fixed}
    if all(s == 1 for s in sampled.values()):
        var_seed, var_prompt, df = nan, var_prompt_raw, float(max(k - 1, 1))
        var = var_prompt
    elif any(s == 1 for s in sampled.values()):
        return Inference(estimate, nan, nan, nan, nan, nan, nan, nan, nan, seeds, k)
    else:
        parts = {c: float(t.var(ddof=1)) / t.size for c, t in theta.items() if c not in fixed}
        seeds_sampled = {c: seeds[c] for c in parts}
        var_seed = sum(parts.values())
        var_prompt = max(0.0, var_prompt_raw - factor * cell)
        var = var_seed + var_prompt
        if len(set(seeds_sampled.values())) == 1:
            df = float(sum(s - 1 for s in seeds_sampled.values()))
        else:  # Welch-Satterthwaite over the conditions' seed components
            denom = sum(p * p / (seeds_sampled[c] - 1) for c, p in parts.items())
            df = var_seed**2 / denom if denom > 0 else float(sum(s - 1 for s in seeds_sampled.values()))
    se = math.sqrt(var)
    if se == 0:
        p = 1.0 if estimate == 0 else 0.0
        return Inference(estimate, 0.0, df, estimate, estimate, p, 0.0, var_seed, var_prompt, seeds, k)
    half = _t(alpha, df) * se
    return Inference(
        estimate,
        se,
        df,
        estimate - half,
        estimate + half,
        _p(estimate / se, df),
        power.mde(se, df, alpha),
        var_seed,
        var_prompt,
        seeds,
        k,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN entries stay NaN and are not part of the family."""
    idx = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out
