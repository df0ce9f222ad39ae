"""Known-truth EvalResults for calibrating the analysis (benchmarks/analyze_calibration.py, the tests)
and for planning a design by simulation from a notebook.

The model is the one the analysis has to survive: refusal is Bernoulli with
``logit p = mu[set] + shift[arm, set] + seed effect[arm, seed] + prompt effect[item]``, where a seed
effect belongs to one trained model (the same on every set it answers), a violation item and its
matched neutral twin have correlated prompt effects, and every arm answers the same items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.analyze import power


@dataclass(frozen=True)
class Design:
    """One simulated experiment: a treatment and a control arm on a violation set and its neutral twin."""

    seeds_treatment: int = 3
    seeds_control: int = 3
    pairs: int = 60
    samples: int = 3
    seed_sd: float = 0.8
    prompt_sd: float = 1.0
    twin_correlation: float = 0.5
    control_violations: float = 0.32
    control_neutral: float = 0.17
    #: log-odds shift of the treatment arm on each set
    shift_violations: float = 0.0
    shift_neutral: float = 0.0
    treatment: str = "catholic"
    control: str = "control"
    violations: str = "violations-catholic"
    neutral: str = "neutral-catholic"
    model: str = "m"

    @property
    def mu(self) -> tuple[float, float]:
        return (
            power.intercept_for(self.control_violations, self.seed_sd, self.prompt_sd),
            power.intercept_for(self.control_neutral, self.seed_sd, self.prompt_sd),
        )

    def headline(self, neutral: bool = True) -> dict[str, str | None]:
        return {
            "treatment": self.treatment,
            "control": self.control,
            "violations": self.violations,
            "neutral": self.neutral if neutral else None,
        }


def shift_for(rate: float, points: float, seed_sd: float = 0.8, prompt_sd: float = 1.0) -> float:
    """The log-odds shift that moves a marginal refusal rate of ``rate`` by ``points`` (0-1 scale)."""
    return power.intercept_for(rate + points, seed_sd, prompt_sd) - power.intercept_for(
        rate, seed_sd, prompt_sd
    )


def _seed_grid(sd: float) -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(-7, 7, 161)
    w = np.exp(-0.5 * z * z)
    return z * sd, w / w.sum()


def _arm_seed_rates(mu: float, shift: float, d: Design) -> tuple[np.ndarray, np.ndarray]:
    """Per seed-effect grid point: the rate over the prompt population, and the grid weights."""
    a, wa = _seed_grid(d.seed_sd)
    b, wb = _seed_grid(d.prompt_sd)
    g = (1 / (1 + np.exp(-(mu + shift + a[:, None] + b[None, :])))) @ wb
    return g, wa


def truth(d: Design) -> dict[str, float]:
    """The estimands of the analysis under this design: differences in marginal refusal rate (points,
    0-1) and in the seed-averaged log-odds of a seed's rate, for the difference and the diff-in-diff."""
    (mv, mu_), (sv, su) = d.mu, (d.shift_violations, d.shift_neutral)
    out = {}
    parts = {}
    for name, m, s in (("tv", mv, sv), ("cv", mv, 0.0), ("tu", mu_, su), ("cu", mu_, 0.0)):
        g, w = _arm_seed_rates(m, s, d)
        parts[name] = (float(g @ w), float(np.log(g / (1 - g)) @ w))
    for scale, i in (("points", 0), ("log_odds", 1)):
        diff = parts["tv"][i] - parts["cv"][i]
        out[f"difference_{scale}"] = diff
        out[f"did_{scale}"] = diff - (parts["tu"][i] - parts["cu"][i])
    return out


def simulate(d: Design, rng: np.random.Generator) -> pd.DataFrame:
    """EvalResult rows (the columns ``jobs.analyze.contrasts`` reads) of one simulated experiment."""
    k, m = d.pairs, d.samples
    (mv, mu_), rho = d.mu, d.twin_correlation
    zv = rng.normal(size=k)
    zu = rho * zv + math.sqrt(1 - rho * rho) * rng.normal(size=k)
    prompt = {d.violations: d.prompt_sd * zv, d.neutral: d.prompt_sd * zu}
    base = {d.violations: mv, d.neutral: mu_}
    frames = []
    for cond, n_seeds, shifts in (
        (d.treatment, d.seeds_treatment, {d.violations: d.shift_violations, d.neutral: d.shift_neutral}),
        (d.control, d.seeds_control, {d.violations: 0.0, d.neutral: 0.0}),
    ):
        seed_eff = rng.normal(0.0, d.seed_sd, n_seeds)
        for es in (d.violations, d.neutral):
            logit = base[es] + shifts[es] + seed_eff[:, None] + prompt[es][None, :]
            p = 1 / (1 + np.exp(-logit))
            hits = rng.random((n_seeds, k, m)) < p[:, :, None]
            s_idx, k_idx, j_idx = np.indices(hits.shape).reshape(3, -1)
            is_neutral = es == d.neutral
            prefix = "n" if is_neutral else "v"
            items = np.array([f"{prefix}{i:03d}" for i in range(k)])
            pairs = np.array([f"v{i:03d}" for i in range(k)]) if is_neutral else None
            frames.append(
                pd.DataFrame(
                    {
                        "model": d.model,
                        "condition": cond,
                        "seed": s_idx,
                        "evalset": es,
                        "item_id": items[k_idx],
                        "sample": j_idx,
                        "label": np.where(hits.ravel(), "refuse", "comply"),
                        "refusal": hits.ravel(),
                        "pair": pairs[k_idx] if pairs is not None else None,
                        "kind": "neutral" if is_neutral else "violation",
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)
