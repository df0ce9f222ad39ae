"""Exact, seeded, prompt-spread sampling of training rows from filtered datasets.

- ``apportion``: integer counts with exactly the requested total (largest remainder), so every
  condition has the same number of examples and proportions are exact to one row.
- ``spread_order``: a seeded order of a dataset's rows that visits prompts round-robin, so no prompt
  is over-represented (a prompt appears at most ``ceil(n / prompts)`` times in the first ``n`` rows).
  The order depends on the dataset and the seed only, not on the condition: arms that share a
  dataset draw the same rows from it, and differ only in their other half (DESIGN.md rule 3).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jobs.common.prompt_format import format_completion, format_prompt
from jobs.common.records import Generation, MixRow


def apportion(total: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Counts per key summing to exactly ``total``; remainders go to the largest fractional parts
    (ties by name, so the result is deterministic)."""
    raw = {k: total * f for k, f in fractions.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    left = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:left]:
        counts[k] += 1
    return counts


def spread_order(rows: Sequence[Generation], seed: int, dataset: str) -> list[Generation]:
    rng = random.Random(f"{seed}:{dataset}")
    groups: dict[str, list[Generation]] = {}
    for g in sorted(rows, key=lambda g: g.id):
        groups.setdefault(g.prompt_id, []).append(g)
    prompts = sorted(groups)
    rng.shuffle(prompts)
    for p in prompts:
        rng.shuffle(groups[p])
    out: list[Generation] = []
    depth = 0
    while len(out) < len(rows):
        for p in prompts:
            if depth < len(groups[p]):
                out.append(groups[p][depth])
        depth += 1
    return out


def to_row(g: Generation) -> MixRow:
    return MixRow(
        prompt=format_prompt(g.prompt), completion=format_completion(g.response), source=g.dataset, id=g.id
    )


@dataclass
class Need:
    dataset: str
    train: int
    val: int
    available: int

    @property
    def total(self) -> int:
        return self.train + self.val


def budget(examples: int, val_fraction: float, fractions: Mapping[str, float]) -> dict[str, tuple[int, int]]:
    """The one computation of an arm's budget: (train rows, val rows) drawn from each dataset. The plan
    uses it for the filter's ``min_kept``, the mix step to draw exactly that many."""
    train = apportion(examples, fractions)
    val = apportion(round(examples * val_fraction), fractions)
    return {ds: (train[ds], val[ds]) for ds in sorted(fractions)}


def needs(
    examples: int, val_fraction: float, fractions: Mapping[str, float], available: Mapping[str, int]
) -> list[Need]:
    return [
        Need(ds, n_train, n_val, available.get(ds, 0))
        for ds, (n_train, n_val) in budget(examples, val_fraction, fractions).items()
    ]


def shortfalls(plan: Sequence[Need]) -> list[str]:
    return [
        f"dataset '{n.dataset}' has {n.available} kept rows; the mix needs {n.total} "
        f"({n.train} train + {n.val} val)"
        for n in plan
        if n.available < n.total
    ]


def mix(
    rows: Mapping[str, Sequence[Generation]], plan: Sequence[Need], seed: int, condition: str
) -> tuple[list[MixRow], list[MixRow], dict[str, dict[str, int]]]:
    """(train rows, val rows, composition per dataset). Train and val rows are disjoint."""
    train: list[MixRow] = []
    val: list[MixRow] = []
    comp: dict[str, dict[str, int]] = {}
    for n in plan:
        order = spread_order(rows[n.dataset], seed, n.dataset)
        picked = order[: n.train]
        held = order[n.train : n.total]
        train += [to_row(g) for g in picked]
        val += [to_row(g) for g in held]
        per_prompt: dict[str, int] = {}
        for g in picked:
            per_prompt[g.prompt_id] = per_prompt.get(g.prompt_id, 0) + 1
        comp[n.dataset] = {
            "train": len(picked),
            "val": len(held),
            "available": n.available,
            "prompts": len({g.prompt_id for g in rows[n.dataset]}),
            "prompts_used": len(per_prompt),
            "max_per_prompt": max(per_prompt.values(), default=0),
        }
    rng = random.Random(f"{seed}:{condition}:order")
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val, comp
