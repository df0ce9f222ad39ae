"""Power of the design, in plain Python (no numpy or scipy, so ``creed plan`` can use it on a core install).

Two uses: the analysis states the minimum detectable effect (MDE) of the design that ran, from its
observed standard error; ``creed plan`` states the MDE of a spec before anything runs, from assumed
variance components (seed SD and prompt SD on the log-odds scale, the control's refusal rate).

The MDE of a two-sided level-alpha t-test with ``df`` degrees of freedom and standard error ``se`` at
power 1 - beta is ``(t[1 - alpha/2] + t[1 - beta]) * se``: the usual normal-theory formula with t
quantiles, which is what a test on a handful of seeds needs (a z quantile would promise power that
three seeds cannot give).
"""

from __future__ import annotations

import math

_NODES = 161  # quadrature points over +-7 SD: the rates below are accurate to ~1e-6


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Lentz), as in Numerical Recipes."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom (df may be fractional)."""
    if math.isinf(df):
        return 0.5 * math.erfc(-x / math.sqrt(2.0))
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (bisection on ``t_cdf``; exact to ~1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q} is not in (0, 1)")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mde(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a two-sided level-``alpha`` t-test at ``power``."""
    if not (math.isfinite(se) and math.isfinite(df)) or se < 0 or df <= 0:
        return math.nan
    return (t_ppf(1.0 - alpha / 2.0, df) + t_ppf(power, df)) * se


# ---------------------------------------------------------------------------------------------
# The logistic model with random seed and prompt effects (for planning)
# ---------------------------------------------------------------------------------------------
def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _normal_grid(sd: float) -> list[tuple[float, float]]:
    """(point, weight) pairs that integrate against N(0, sd^2) (trapezoid on +-7 SD)."""
    if sd <= 0:
        return [(0.0, 1.0)]
    step = 14.0 / (_NODES - 1)
    pts = [-7.0 + i * step for i in range(_NODES)]
    w = [math.exp(-0.5 * z * z) for z in pts]
    total = sum(w)
    return [(z * sd, wi / total) for z, wi in zip(pts, w, strict=True)]


def marginal_rate(mu: float, seed_sd: float, prompt_sd: float) -> float:
    """E[expit(mu + a + b)], a ~ N(0, seed_sd^2), b ~ N(0, prompt_sd^2)."""
    return _expit_normal(mu, math.hypot(seed_sd, prompt_sd))


def _expit_normal(mu: float, sd: float) -> float:
    return sum(w * _expit(mu + z) for z, w in _normal_grid(sd))


def intercept_for(rate: float, seed_sd: float, prompt_sd: float) -> float:
    """The log-odds intercept whose marginal refusal rate is ``rate``."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate {rate} is not in (0, 1)")
    lo, hi = -30.0, 30.0
    sd = math.hypot(seed_sd, prompt_sd)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _expit_normal(mid, sd) < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def seed_rate_variance(rate: float, seed_sd: float, prompt_sd: float, prompts: int, samples: int) -> float:
    """Variance between seeds of one arm's refusal rate over ``prompts`` prompts x ``samples`` samples.

    The prompts are the same for every seed (so the prompt effects themselves cancel in a
    difference between arms); what varies between seeds is the seed effect, pushed through the
    logistic curve, plus binomial noise of the seed's responses."""
    mu = intercept_for(rate, seed_sd, prompt_sd)
    seeds, prompts_grid = _normal_grid(seed_sd), _normal_grid(prompt_sd)
    mean = second = noise = 0.0
    for a, wa in seeds:
        g = bern = 0.0
        for b, wb in prompts_grid:
            p = _expit(mu + a + b)
            g += wb * p
            bern += wb * p * (1.0 - p)
        mean += wa * g
        second += wa * g * g
        noise += wa * bern
    return max(second - mean * mean, 0.0) + noise / (prompts * samples)


def planned_mde(
    *,
    seeds: int,
    prompts: int,
    samples: int,
    rate: float,
    seed_sd: float,
    prompt_sd: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """MDE (rate points, 0-1) of treatment minus control on one violation set, ``seeds`` per arm,
    with the analysis' seed-level t-test (df = 2 seeds - 2). NaN when one seed per arm (no test)."""
    if seeds < 2 or prompts < 1 or samples < 1:
        return math.nan
    var = seed_rate_variance(rate, seed_sd, prompt_sd, prompts, samples)
    return mde(math.sqrt(2.0 * var / seeds), 2 * seeds - 2, alpha, power)
