"""Calibration of the analysis: known-truth simulations pushed through ``jobs.analyze.contrasts``.

    .venv/bin/python benchmarks/analyze_calibration.py                # full size (~15-30 min, 2 cores)
    .venv/bin/python benchmarks/analyze_calibration.py --sims 100 --glmm 0   # a quick look

The design is the one a reviewer would try (jobs/analyze/simulate.py): a logistic model with a seed
effect SD 0.8 (per trained model, the same on both sets), prompt effect SD 1.0, violation/neutral
twin correlation 0.5, 60 matched pairs, 3 samples per item, control refusal ~32% on violations and
~17% on neutral requests, alpha 0.05. Cases: no effect at 3 vs 3 and 5 vs 5 seeds; +15 points on
violations only at 3 and 5 seeds; "general moralizing" (the same log-odds rise on violation and
neutral requests: the diff-in-diff is 0 on the log-odds scale, not in points); one seed (1 vs 1,
3 vs 1), where no claim may be made; and the GLMM's coverage (``--glmm`` datasets per case).

Every rate comes with its exact (Clopper-Pearson) 95% binomial interval. Truths are computed by
quadrature (``simulate.truth``). The last line is ``ratio=<0.05 / observed null rejection rate of the
headline difference at 3 vs 3 seeds> target=1`` (>= 1: the test holds its level).
"""

from __future__ import annotations

import os

# one BLAS thread: the bootstrap's small products gain nothing from threads on a shared machine
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm

from jobs.analyze import contrasts, core
from jobs.analyze import simulate as sim
from jobs.analyze.config import HeadlineContrast

ALPHA = 0.05
BOOTSTRAP = 400  # 2 tests (difference + diff-in-diff): the floor is 80; more only smooths the prompt term


def rate(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(method="exact")
    return f"{100 * k / n:5.1f}% [{100 * ci.low:4.1f}, {100 * ci.high:4.1f}]"


def run_case(d: sim.Design, sims: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for i in range(sims):
        out = contrasts(sim.simulate(d, rng), [d.headline()], bootstrap=BOOTSTRAP, alpha=ALPHA, seed=i)
        rows.append(out.assign(sim=i))
    return pd.concat(rows, ignore_index=True)


def covered(out: pd.DataFrame, truth: float, scale: str) -> pd.Series:
    lo, hi = ("ci_lo", "ci_hi") if scale == "points" else ("log_odds_lo", "log_odds_hi")
    return (out[lo] <= truth) & (truth <= out[hi])


def rejects(out: pd.DataFrame, scale: str) -> pd.Series:
    return (out["p_value"] if scale == "points" else out["log_odds_p"]) < ALPHA


def table_case(name: str, d: sim.Design, sims: int, rng: np.random.Generator) -> pd.DataFrame:
    t0 = time.perf_counter()
    out = run_case(d, sims, rng)
    truth = sim.truth(d)
    print(f"\n{name}  ({sims} datasets, {time.perf_counter() - t0:.0f} s)")
    print(
        f"  {'contrast':<13}{'scale':<9}{'truth':>8}{'reject 0':>26}{'coverage':>26}{'mean est':>10}{'SD est':>9}{'RMS SE':>9}"
    )
    for contrast, key in (("difference", "difference"), ("diff-in-diff", "did")):
        sub = out[out["contrast"] == contrast]
        for scale in ("points", "log_odds"):
            est = sub["estimate"] if scale == "points" else sub["log_odds"]
            se = sub["se"] if scale == "points" else sub["log_odds_se"]
            t = truth[f"{key}_{scale}"]
            k = 100.0 if scale == "points" else 1.0
            print(
                f"  {contrast:<13}{scale:<9}{k * t:8.2f}{rate(int(rejects(sub, scale).sum()), len(sub)):>26}"
                f"{rate(int(covered(sub, t, scale).sum()), len(sub)):>26}{k * est.mean():10.2f}"
                f"{k * est.std():9.2f}{k * math.sqrt(float((se**2).mean())):9.2f}"
            )
    return out


def no_claim_case(name: str, d: sim.Design, sims: int, rng: np.random.Generator) -> None:
    out = run_case(d, sims, rng)
    claims = int(out["p_value"].notna().sum() + out["ci_lo"].notna().sum() + out["significant"].sum())
    noted = int(out["note"].str.startswith("no claim").sum())
    print(
        f"\n{name}  ({sims} datasets): intervals, p-values or significance claimed: {claims}; rows "
        f"saying 'no claim': {noted} of {len(out)}"
    )


def glmm_case(name: str, d: sim.Design, sims: int, rng: np.random.Generator) -> None:
    t0 = time.perf_counter()
    h = HeadlineContrast(**d.headline())
    truth = {"difference": d.shift_violations, "diff-in-diff": d.shift_violations - d.shift_neutral}
    hits = {k: [0, 0, 0] for k in truth}  # covered, rejected 0, reported
    for _ in range(sims):
        df = core.frame(sim.simulate(d, rng))
        for r in core.mixed_model(df, h, d.model, alpha=ALPHA):
            if not math.isfinite(r["glmm_log_odds"]):
                continue
            c = hits[r["contrast"]]
            c[0] += r["glmm_lo"] <= truth[r["contrast"]] <= r["glmm_hi"]
            c[1] += r["glmm_lo"] > 0 or r["glmm_hi"] < 0
            c[2] += 1
    print(f"\n{name}  ({sims} datasets, {time.perf_counter() - t0:.0f} s): GLMM, conditional log-odds")
    for k, (cov, rej, n) in hits.items():
        if n:
            print(
                f"  {k:<13}truth {truth[k]:+.2f}  coverage {rate(cov, n)}  rejects 0 {rate(rej, n)}  "
                f"converged {n}/{sims}"
            )


def z_interval_null(out: pd.DataFrame) -> str:
    """What the same standard errors with a normal critical value would reject (large-sample method)."""
    sub = out[out["contrast"] == "difference"]
    k = int((sub["estimate"].abs() > norm.ppf(1 - ALPHA / 2) * sub["se"]).sum())
    return rate(k, len(sub))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=400, help="datasets per case (through contrasts)")
    ap.add_argument("--glmm", type=int, default=200, help="datasets per GLMM case (0: skip)")
    ap.add_argument("--seed", type=int, default=20260501)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    base = sim.Design()
    plus15 = sim.shift_for(base.control_violations, 0.15, base.seed_sd, base.prompt_sd)
    moralizing = sim.shift_for(base.control_violations, 0.15, base.seed_sd, base.prompt_sd)
    print(
        f"design: seed SD {base.seed_sd}, prompt SD {base.prompt_sd}, twin correlation "
        f"{base.twin_correlation}, {base.pairs} pairs x {base.samples} samples, control "
        f"{base.control_violations:.0%} / {base.control_neutral:.0%}, alpha {ALPHA}, bootstrap {BOOTSTRAP}"
    )
    cases: list[tuple[str, Callable[[], object]]] = []
    null3: dict[str, pd.DataFrame] = {}

    def null3_case() -> None:
        null3["out"] = table_case("no effect, 3 vs 3 seeds", base, args.sims, rng)
        print(f"  (the same SEs with a normal critical value would reject {z_interval_null(null3['out'])})")

    cases.append(("null3", null3_case))
    cases.append(
        (
            "null5",
            lambda: table_case(
                "no effect, 5 vs 5 seeds", replace(base, seeds_treatment=5, seeds_control=5), args.sims, rng
            ),
        )
    )
    cases.append(
        (
            "eff3",
            lambda: table_case(
                "+15 points on violations only, 3 vs 3 seeds",
                replace(base, shift_violations=plus15),
                args.sims,
                rng,
            ),
        )
    )
    cases.append(
        (
            "eff5",
            lambda: table_case(
                "+15 points on violations only, 5 vs 5 seeds",
                replace(base, seeds_treatment=5, seeds_control=5, shift_violations=plus15),
                args.sims,
                rng,
            ),
        )
    )

    def moral() -> None:
        d = replace(base, shift_violations=moralizing, shift_neutral=moralizing)
        out = table_case(
            "general moralizing (same log-odds rise on both sets), 3 vs 3 seeds", d, args.sims, rng
        )
        did = out[out["contrast"] == "diff-in-diff"]
        print(
            f"  'value-specific' (both scales significant, Holm): {rate(int(did['value_specific'].sum()), len(did))}"
        )

    cases.append(("moral", moral))
    cases.append(
        (
            "one",
            lambda: no_claim_case(
                "no effect, 1 vs 1 seed",
                replace(base, seeds_treatment=1, seeds_control=1),
                max(args.sims // 4, 20),
                rng,
            ),
        )
    )
    cases.append(
        (
            "threeone",
            lambda: no_claim_case(
                "no effect, 3 vs 1 seeds", replace(base, seeds_control=1), max(args.sims // 4, 20), rng
            ),
        )
    )
    if args.glmm:
        cases.append(("glmm0", lambda: glmm_case("no effect, 3 vs 3 seeds", base, args.glmm, rng)))
        cases.append(
            (
                "glmm15",
                lambda: glmm_case(
                    "+15 points on violations, 3 vs 3 seeds",
                    replace(base, shift_violations=plus15),
                    args.glmm,
                    rng,
                ),
            )
        )
    for _, fn in cases:
        fn()

    sub = null3["out"][null3["out"]["contrast"] == "difference"]
    observed = float(rejects(sub, "points").mean())
    ratio = ALPHA / observed if observed > 0 else math.inf
    print(
        f"\nnull rejection of the headline difference at 3 vs 3 seeds: {rate(int(rejects(sub, 'points').sum()), len(sub))}"
    )
    print(f"ratio={ratio:.3f} target=1")


if __name__ == "__main__":
    main()
