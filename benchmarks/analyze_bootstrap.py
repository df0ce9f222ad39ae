"""Speed of the analysis' vectorized two-way cluster bootstrap against a per-replicate loop.

    .venv/bin/python benchmarks/analyze_bootstrap.py

Both compute the same contrast (treatment - control refusal rate, seeds resampled per condition,
prompts shared) on simulated responses: 2 conditions x 5 seeds x 200 prompts x 3 samples. The loop
draws the same kind of weights per replicate and sums row-level weights with numpy (a fair baseline,
not a pandas strawman). Ends with ``ratio=<vectorized s per replicate / loop s per replicate>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from jobs.analyze import core, stats
from jobs.analyze.config import HeadlineContrast

SEEDS, PROMPTS, SAMPLES = 5, 200, 3
REPS_VECTOR, REPS_LOOP = 2000, 200
TARGET = 0.1


def simulate(rng: np.random.Generator) -> list[dict[str, object]]:
    prompt_eff = rng.normal(0, 1, PROMPTS)
    rows = []
    for cond, eff in (("catholic", 0.5), ("control", 0.0)):
        for s in range(SEEDS):
            p = 1 / (1 + np.exp(-(-1 + eff + rng.normal(0, 0.3) + prompt_eff)))
            hits = rng.random((PROMPTS, SAMPLES)) < p[:, None]
            for i in range(PROMPTS):
                for k in range(SAMPLES):
                    label = "refuse" if hits[i, k] else "comply"
                    rows.append(
                        {"model": "m", "condition": cond, "seed": s, "evalset": "violations-catholic",
                         "item_id": f"v{i:03d}", "sample": k, "label": label}
                    )  # fmt: skip
    return rows


def loop_bootstrap(df, reps: int, rng: np.random.Generator) -> np.ndarray:  # type: ignore[no-untyped-def]
    items = {item: i for i, item in enumerate(sorted(df["item_id"].unique()))}
    k = df["item_id"].map(items).to_numpy()
    seed = df["seed"].to_numpy()
    y = df["refusal"].to_numpy()
    treat = (df["condition"] == "catholic").to_numpy()
    out = np.empty(reps)
    for b in range(reps):
        v = rng.multinomial(len(items) - 1, np.full(len(items), 1 / len(items)))
        rates = []
        for mask in (treat, ~treat):
            w_seed = rng.multinomial(SEEDS - 1, np.full(SEEDS, 1 / SEEDS))
            w = w_seed[seed[mask]] * v[k[mask]]
            rates.append((w * y[mask]).sum() / w.sum())
        out[b] = rates[0] - rates[1]
    return out


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    rng = np.random.default_rng(0)
    df = core.frame(simulate(rng))
    c = HeadlineContrast(treatment="catholic", control="control", violations="violations-catholic")

    row = core.contrast_rows(
        df, c, "m", outcome="refusal", reps=REPS_VECTOR, alpha=0.05, rng=rng, mixed_model=False
    )[0]
    # time the bootstrap itself (arms built once, as the analysis does), best of 3 runs
    clusters = {item: i for i, item in enumerate(sorted(df["item_id"].unique()))}
    arms = [
        core.make_arm(df[df["condition"] == cond], cond, list(range(SEEDS)), clusters, "refusal")
        for cond in ("catholic", "control")
    ]
    vector_s = (
        min(
            _timed(lambda: stats.linear_contrast([(1.0, arms[0]), (-1.0, arms[1])], REPS_VECTOR, 0.05, rng))
            for _ in range(3)
        )
        / REPS_VECTOR
    )
    boot = np.empty(0)

    def loop() -> None:
        nonlocal boot
        boot = loop_bootstrap(df, REPS_LOOP, rng)

    loop_s = min(_timed(loop) for _ in range(3)) / REPS_LOOP
    lo, hi = np.quantile(boot, [0.025, 0.975])

    print(f"responses={len(df)} seeds/condition={SEEDS} prompts={PROMPTS} samples={SAMPLES}")
    print(f"{'method':<12}{'reps':>6}{'us/rep':>10}{'95% CI':>22}")
    ci_vector = "[{:.3f}, {:.3f}]".format(row["ci_lo"], row["ci_hi"])
    ci_loop = f"[{lo:.3f}, {hi:.3f}]"
    print(f"{'vectorized':<12}{REPS_VECTOR:>6}{1e6 * vector_s:>10.1f}{ci_vector:>22}")
    print(f"{'loop':<12}{REPS_LOOP:>6}{1e6 * loop_s:>10.1f}{ci_loop:>22}")
    print(f"estimate={row['estimate']:.3f}")
    print(f"ratio={vector_s / loop_s:.3f} target={TARGET}")


if __name__ == "__main__":
    main()
