"""Speed of the analysis' vectorized prompt-cluster bootstrap against a per-replicate loop.

    .venv/bin/python benchmarks/analyze_bootstrap.py

Both compute the prompt part of the same contrast's variance (treatment - control refusal rate,
seeds held fixed, prompts resampled once per replicate for both arms) on simulated responses:
2 conditions x 5 seeds x 200 prompts x 3 samples. The loop draws the same kind of weights per
replicate and sums row-level weights with numpy (a fair baseline, not a pandas strawman). Ends with
``ratio=<vectorized s per replicate / loop s per replicate>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from jobs.analyze import core, stats

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
        means = []
        for mask in (treat, ~treat):
            w = v[k[mask]]
            # each seed's reweighted rate, then their mean (seeds are fixed in this component)
            num = np.bincount(seed[mask], weights=w * y[mask], minlength=SEEDS)
            den = np.bincount(seed[mask], weights=w, minlength=SEEDS)
            means.append((num / den).mean())
        out[b] = means[0] - means[1]
    return out


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    rng = np.random.default_rng(0)
    df = core.frame(simulate(rng))
    clusters = {item: i for i, item in enumerate(sorted(df["item_id"].unique()))}
    arms = [
        core.make_arm(df[df["condition"] == cond], cond, list(range(SEEDS)), clusters, "refusal")
        for cond in ("catholic", "control")
    ]
    terms = [(1.0, arms[0]), (-1.0, arms[1])]
    iv = stats.seed_contrast(terms, reps=REPS_VECTOR, alpha=0.05, rng=rng)
    # time the whole contrast (seed part, bootstrap, cell-noise term), best of 3 runs
    vector_s = (
        min(
            _timed(lambda: stats.seed_contrast(terms, reps=REPS_VECTOR, alpha=0.05, rng=rng))
            for _ in range(3)
        )
        / REPS_VECTOR
    )
    boot = np.empty(0)

    def loop() -> None:
        nonlocal boot
        boot = loop_bootstrap(df, REPS_LOOP, rng)

    loop_s = min(_timed(loop) for _ in range(3)) / REPS_LOOP

    print(f"responses={len(df)} seeds/condition={SEEDS} prompts={PROMPTS} samples={SAMPLES}")
    print(f"{'method':<12}{'reps':>6}{'us/rep':>10}")
    print(f"{'vectorized':<12}{REPS_VECTOR:>6}{1e6 * vector_s:>10.1f}")
    print(f"{'loop':<12}{REPS_LOOP:>6}{1e6 * loop_s:>10.1f}")
    print(
        f"raw prompt-bootstrap SD of the loop: {100 * boot.std(ddof=1):.2f} points (before the cell-noise term)"
    )
    print(
        f"estimate={iv.estimate:.3f} se={iv.se:.3f} df={iv.df:g} prompt part of the variance={iv.var_prompt:.2e}"
    )
    print(f"ratio={vector_s / loop_s:.3f} target={TARGET}")


if __name__ == "__main__":
    main()
