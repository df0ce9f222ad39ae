"""A binomial GLMM with crossed random effects, fitted by Laplace-approximated restricted likelihood.

``refusal ~ arm * set + (1 | arm:seed) + (1 | pair/prompt) [+ (1 | arm:seed:set)]``, the secondary
estimate of the analysis on the conditional log-odds scale. numpy and scipy only; deterministic (no
random numbers: fixed starting values, no sampling), so the same data give the same fit.

How. In the scaled parameterization u = sigma * b, b ~ N(0, I), the penalized log-likelihood
``l(beta, b) = sum(y eta - n log(1 + e^eta)) - |b|^2 / 2`` is maximized over (beta, b) by Newton's
method (penalized IRLS) for given SDs; the SDs (log scale) maximize the Laplace approximation of the
likelihood with beta integrated out as well (``l(beta^, b^) - log|M| / 2``, M the Hessian in the
scaled coordinates), which is the GLMM analogue of REML: maximum likelihood ignores the degrees of
freedom the fixed effects take, which with 3-5 seeds per arm would shrink the seed variance, and
the interval with it. Wald intervals use Student's t on the seeds' degrees of freedom, as
the main analysis does. A fit is reported only when it converged: the inner Newton steps and the
outer optimizer both stopped on their tolerances and the fixed-effect Hessian is positive definite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: log-SD bounds: exp(-7) ~ 0.001 is "no variance" (a boundary fit), exp(2.5) ~ 12 is degenerate
_LOG_SD = (-7.0, 2.5)


@dataclass(frozen=True)
class Design:
    """Aggregated binomial rows: ``y`` of ``n``, fixed effects ``x`` (rows x p) named ``names``, and
    random-effect groupings ``groups[term]`` (an integer level per row)."""

    y: np.ndarray
    n: np.ndarray
    x: np.ndarray
    names: tuple[str, ...]
    groups: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Fit:
    beta: np.ndarray
    cov: np.ndarray
    sd: dict[str, float]
    converged: bool
    note: str
    names: tuple[str, ...]

    def coef(self, name: str) -> tuple[float, float]:
        i = self.names.index(name)
        return float(self.beta[i]), float(math.sqrt(max(self.cov[i, i], 0.0)))


def _indicators(groups: Mapping[str, np.ndarray], rows: int) -> tuple[Any, list[tuple[str, slice]]]:
    """The random-effects design as a sparse 0/1 matrix (one column per level, term after term)."""
    from scipy import sparse

    cols, spans, start = [], [], 0
    for term, g in groups.items():
        levels = int(g.max()) + 1 if g.size else 0
        cols.append(g + start)
        spans.append((term, slice(start, start + levels)))
        start += levels
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    row = np.tile(np.arange(rows), len(cols))
    z = sparse.csr_matrix((np.ones(col.size), (row, col)), shape=(rows, start))
    return z, spans


class _Model:
    """Penalized IRLS and the Laplace objective on sparse matrices: the Hessian has a few hundred
    rows but few non-zeros, and a sparse LU (single-threaded) is both faster and steadier than dense
    LAPACK on a small shared machine."""

    def __init__(self, d: Design) -> None:
        from scipy import sparse

        self.d = d
        self.z, self.spans = _indicators(d.groups, len(d.y))
        self.x = sparse.csr_matrix(d.x)
        self.p, self.q = d.x.shape[1], self.z.shape[1]
        self.coef = np.zeros(self.p + self.q)  # warm start carried across evaluations
        # start the intercept at the pooled log-odds so the first Newton steps are small
        pooled = (d.y.sum() + 0.5) / (d.n.sum() + 1.0)
        self.coef[0] = math.log(pooled / (1 - pooled))
        self.penalty = np.r_[np.zeros(self.p), np.ones(self.q)]
        self.inner_ok = True

    def _scale(self, log_sd: np.ndarray) -> np.ndarray:
        s = np.empty(self.q)
        for (_, span), v in zip(self.spans, log_sd, strict=True):
            s[span] = math.exp(v)
        return s

    def _hessian(self, a: Any, coef: np.ndarray) -> tuple[Any, np.ndarray]:
        from scipy import sparse

        d = self.d
        mu = 1.0 / (1.0 + np.exp(-(a @ coef)))
        w = d.n * mu * (1 - mu)
        m = (a.T @ sparse.diags(w) @ a + sparse.diags(self.penalty)).tocsc()
        grad = a.T @ (d.y - d.n * mu) - self.penalty * coef
        return m, grad

    def mode(self, log_sd: np.ndarray) -> tuple[float, np.ndarray, Any]:
        """Penalized IRLS: (objective at the mode, coefficients, LU of M)."""
        from scipy import sparse
        from scipy.sparse.linalg import splu as _splu

        def splu(m: Any) -> Any:
            # minimum-degree ordering of the symmetric pattern: little fill-in for these Hessians
            return _splu(
                m, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
            )

        d = self.d
        a = sparse.hstack([self.x, self.z @ sparse.diags(self._scale(log_sd))]).tocsr()
        coef = self.coef.copy()

        def objective(c: np.ndarray) -> float:
            eta = a @ c
            return float(
                np.sum(d.y * eta - d.n * np.logaddexp(0.0, eta)) - 0.5 * np.sum(self.penalty * c * c)
            )

        value = objective(coef)
        ok = False
        for _ in range(100):
            m, grad = self._hessian(a, coef)
            try:
                step = splu(m).solve(grad)
            except RuntimeError:  # singular
                break
            t = 1.0
            while True:  # step halving keeps every step an ascent
                new = coef + t * step
                nv = objective(new)
                if nv >= value - 1e-12 or t < 1e-6:
                    break
                t *= 0.5
            coef, gain, value = new, nv - value, nv
            if np.max(np.abs(t * step)) < 1e-8 or abs(gain) < 1e-10:
                ok = True
                break
        m, _ = self._hessian(a, coef)
        self.coef = coef
        self.inner_ok = ok
        try:
            lu = splu(m)
        except RuntimeError:
            self.inner_ok, lu = False, None
        return value, coef, lu

    def restricted(self, log_sd: np.ndarray) -> float:
        value, _, lu = self.mode(log_sd)
        if lu is None or not self.inner_ok:
            return -1e300
        diag = lu.U.diagonal()
        if np.any(diag == 0):
            return -1e300
        # M is positive definite, so log|M| = sum log|U_ii| (the permutations only change the sign)
        return value - 0.5 * float(np.sum(np.log(np.abs(diag))))


def fit(d: Design) -> Fit:
    """Fit the GLMM; ``converged`` False (with the reason) when a check fails."""
    from scipy.optimize import minimize

    model = _Model(d)
    terms = list(d.groups)
    if not terms:
        raise ValueError("a GLMM needs at least one random effect")
    start = np.full(len(terms), math.log(0.5))
    res = minimize(
        lambda v: -model.restricted(v),
        start,
        method="L-BFGS-B",
        bounds=[_LOG_SD] * len(terms),
        options={"maxiter": 200, "ftol": 1e-10, "gtol": 1e-6},
    )
    log_sd = np.asarray(res.x)
    _, coef, lu = model.mode(log_sd)
    notes = []
    ok = bool(res.success) and model.inner_ok
    if not res.success:
        notes.append(f"optimizer: {res.message}")
    if not model.inner_ok:
        notes.append("penalized IRLS did not converge")
    # the fixed-effect block of the inverse Hessian: their covariance given the variance components
    cov = np.full((model.p, model.p), np.nan)
    if lu is not None:
        unit = np.zeros((model.p + model.q, model.p))
        unit[np.arange(model.p), np.arange(model.p)] = 1.0
        cov = lu.solve(unit)[: model.p]
    if not np.all(np.isfinite(cov)) or np.any(np.linalg.eigvalsh((cov + cov.T) / 2) <= 0):
        ok = False
        notes.append("fixed-effect Hessian not positive definite")
    sd = {t: math.exp(v) for t, v in zip(terms, log_sd, strict=True)}
    boundary = [t for t, v in zip(terms, log_sd, strict=True) if v <= _LOG_SD[0] + 1e-3]
    if boundary:
        notes.append("variance at 0: " + ", ".join(boundary))
    return Fit(coef[: model.p], cov, sd, ok, "; ".join(notes), d.names)


# ---------------------------------------------------------------------------------------------
# From per-cell counts to a design
# ---------------------------------------------------------------------------------------------
def contrast_design(
    cells: Sequence[tuple[str, int, int, int, float, float]], treatment: str, seed_by_set: bool
) -> Design:
    """Rows ``(condition, seed, set 1=violations/0=neutral, prompt cluster, y, n)`` → a design for
    ``y ~ treat [* viol] + (1 | condition:seed) + (1 | cluster) [+ (1 | cluster:set)]
    [+ (1 | condition:seed:set)]``. With one set, the cluster is the prompt."""
    cond = np.array([c[0] for c in cells])
    seed = np.array([c[1] for c in cells])
    viol = np.array([c[2] for c in cells], dtype=np.float64)
    cluster = np.array([c[3] for c in cells])
    y = np.array([c[4] for c in cells], dtype=np.float64)
    n = np.array([c[5] for c in cells], dtype=np.float64)
    treat = (cond == treatment).astype(np.float64)
    two_sets = len(set(viol.tolist())) > 1

    def codes(*cols: np.ndarray) -> np.ndarray:
        keys = list(zip(*[c.tolist() for c in cols], strict=True))
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        return np.array([index[k] for k in keys], dtype=np.int64)

    groups: dict[str, np.ndarray] = {"arm:seed": codes(cond, seed)}
    if two_sets:
        x = np.column_stack([np.ones_like(y), treat, viol, treat * viol])
        names: tuple[str, ...] = ("(Intercept)", "treat", "viol", "treat:viol")
        groups["pair"] = codes(cluster)
        groups["pair:prompt"] = codes(cluster, viol)
        if seed_by_set:
            groups["arm:seed:set"] = codes(cond, seed, viol)
    else:
        x = np.column_stack([np.ones_like(y), treat])
        names = ("(Intercept)", "treat")
        groups["prompt"] = codes(cluster)
    keep = n > 0
    return Design(y[keep], n[keep], x[keep], names, {k: v[keep] for k, v in groups.items()})
