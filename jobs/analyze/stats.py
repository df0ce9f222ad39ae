"""Statistics for the analysis: a vectorized two-way cluster bootstrap, Holm adjustment and the
mixed-effects logistic model used as a secondary estimate.

Why a cluster bootstrap: the responses of one trained model (a seed) share that model's quirks, and
the responses to one prompt share the prompt's difficulty, so pooling responses as if they were
independent overstates the evidence. The bootstrap resamples seeds and prompts (pigeonhole
bootstrap, Owen 2007) with Rao-Wu rescaling (draw n-1 of n clusters), which makes the variance of a
cluster mean unbiased even with three or four seeds, where the plain bootstrap is too narrow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.common.logs import get_logger

log = get_logger()


def cluster_weights(rng: np.random.Generator, n: int, reps: int) -> np.ndarray:
    """Bootstrap weights (reps x n) for n clusters: multinomial draws of n-1 clusters (Rao-Wu with
    m = n-1); one cluster always gets weight 1 (nothing to resample)."""
    if n <= 1:
        return np.ones((reps, max(n, 1)))
    # n-1 uniform draws per replicate, counted per cluster with one bincount over offset indices:
    # the same distribution as rng.multinomial, several times faster for many clusters
    draws = rng.integers(0, n, size=(reps, n - 1)) + (np.arange(reps) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=reps * n).reshape(reps, n).astype(np.float64)


@dataclass(frozen=True)
class Arm:
    """Successes and trials of one (condition, eval set): ``y[s, k]`` and ``n[s, k]`` over the seeds of
    its condition and the prompt clusters of the analysis it belongs to."""

    condition: str
    y: np.ndarray
    n: np.ndarray

    @property
    def rate(self) -> float:
        total = float(self.n.sum())
        return float(self.y.sum()) / total if total > 0 else math.nan


def replicate_rates(arm: Arm, seed_w: np.ndarray, prompt_w: np.ndarray) -> np.ndarray:
    """The arm's pooled rate under each replicate's weights: ``sum(w_s v_k y_sk) / sum(w_s v_k n_sk)``.
    One matrix product per arm, no Python loop over replicates."""
    num = ((seed_w @ arm.y) * prompt_w).sum(axis=1)
    den = ((seed_w @ arm.n) * prompt_w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True)
class Interval:
    estimate: float
    lo: float
    hi: float
    p_value: float
    reps_used: int


def summarize(estimate: float, reps: np.ndarray, alpha: float) -> Interval:
    """Percentile interval and a two-sided bootstrap p-value for "the quantity is 0" (the share of
    replicates on the far side of 0, doubled), consistent with the interval: p < alpha exactly when
    the (1 - alpha) interval excludes 0, up to replicate resolution."""
    ok = reps[np.isfinite(reps)]
    if not math.isfinite(estimate) or ok.size == 0:
        return Interval(estimate, math.nan, math.nan, math.nan, int(ok.size))
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    below = (np.sum(ok <= 0) + 1) / (ok.size + 1)
    above = (np.sum(ok >= 0) + 1) / (ok.size + 1)
    return Interval(estimate, float(lo), float(hi), float(min(1.0, 2 * min(below, above))), int(ok.size))


def rate_interval(arm: Arm, reps: int, alpha: float, rng: np.random.Generator) -> Interval:
    """A rate with its cluster-bootstrap interval (p-value is meaningless here and ignored)."""
    s, k = arm.y.shape
    if s == 0 or k == 0 or arm.n.sum() == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    boot = replicate_rates(arm, cluster_weights(rng, s, reps), cluster_weights(rng, k, reps))
    return summarize(arm.rate, boot, alpha)


def linear_contrast(
    terms: Sequence[tuple[float, Arm]], reps: int, alpha: float, rng: np.random.Generator
) -> Interval:
    """``sum(coef * rate(arm))`` with a two-way cluster bootstrap.

    Seeds are resampled independently per condition (each condition's seeds are different trained
    models) but with the same draw for every arm of that condition (one model answers every set).
    Prompt clusters are resampled once per replicate for all arms: the conditions answer the same
    prompts, and a neutral item and the violation item it is matched with form one cluster, so the
    prompt-level variation that is common to the arms cancels in the contrast, as it should.
    """
    if not terms:
        raise ValueError("a contrast needs at least one term")
    k = terms[0][1].y.shape[1]
    prompt_w = cluster_weights(rng, k, reps)
    seed_w: dict[str, np.ndarray] = {}
    total = np.zeros(reps)
    estimate = 0.0
    for coef, arm in terms:
        if arm.y.shape[1] != k:
            raise ValueError("every arm of a contrast must use the same prompt clusters")
        if arm.condition not in seed_w:
            seed_w[arm.condition] = cluster_weights(rng, arm.y.shape[0], reps)
        total = total + coef * replicate_rates(arm, seed_w[arm.condition], prompt_w)
        estimate += coef * arm.rate
    return summarize(estimate, total, alpha)


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


def pooled_z_test(y1: int, n1: int, y0: int, n0: int) -> float:
    """The naive two-proportion z-test that treats every response as independent (for comparison)."""
    from scipy.stats import norm

    if n1 == 0 or n0 == 0:
        return math.nan
    p = (y1 + y0) / (n1 + n0)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n0))
    if se == 0:
        return 1.0
    z = (y1 / n1 - y0 / n0) / se
    return float(2 * norm.sf(abs(z)))


@dataclass(frozen=True)
class MixedEstimate:
    log_odds: float
    lo: float
    hi: float
    note: str


def mixed_logit(data: pd.DataFrame, term: str, alpha: float) -> MixedEstimate:
    """``y ~ fixed + (1|prompt) + (1|seed)`` by statsmodels' variational Bayes binomial GLMM.

    ``data`` has columns ``y`` (0/1), ``treat`` (0/1), optionally ``viol`` (0/1, for a
    difference-in-differences), ``prompt`` and ``seed`` (cluster labels). ``term`` is the fixed
    effect reported (``treat`` or ``treat:viol``). Never raises: a model that cannot be fitted
    returns NaN with the reason.
    """
    from scipy.stats import norm
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    nan = math.nan
    if data.empty:
        return MixedEstimate(nan, nan, nan, "no data")
    if data["y"].nunique() < 2:
        return MixedEstimate(nan, nan, nan, "not fitted: every response has the same outcome")
    formula = "y ~ treat * viol" if "viol" in data.columns else "y ~ treat"
    vc = {"prompt": "0 + C(prompt)"}
    if data["seed"].nunique() > 1:
        vc["seed"] = "0 + C(seed)"
    try:
        with warnings.catch_warnings():
            # convergence and overflow warnings are reflected in the checks below, not printed
            warnings.simplefilter("ignore")
            model = BinomialBayesMixedGLM.from_formula(formula, vc, data)
            result = model.fit_vb()
        names = list(model.exog_names)
        if term not in names:
            return MixedEstimate(nan, nan, nan, f"not fitted: no term {term}")
        i = names.index(term)
        mean, sd = float(result.fe_mean[i]), float(result.fe_sd[i])
    except (
        Exception
    ) as exc:  # secondary estimate: any failure (patsy, linalg, optimizer) is reported, not fatal
        log.warning("analyze.mixed_model_failed", term=term, error=repr(exc))
        return MixedEstimate(nan, nan, nan, f"not fitted: {type(exc).__name__}")
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return MixedEstimate(nan, nan, nan, "not fitted: did not converge")
    z = float(norm.ppf(1 - alpha / 2))
    return MixedEstimate(mean, mean - z * sd, mean + z * sd, "variational Bayes (posterior mean ± z·sd)")
