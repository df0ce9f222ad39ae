"""Seeded stable subsets: the demo's small samples of the full data files."""

from __future__ import annotations

from jobs.common.subset import stable_subset


def test_subset_keeps_file_order_and_is_reproducible() -> None:
    items = [f"q{i:03d}" for i in range(100)]
    a = stable_subset(items, 10, key=str, salt="d:0")
    assert len(a) == 10 and a == sorted(a) and set(a) <= set(items)
    assert a == stable_subset(items, 10, key=str, salt="d:0")
    assert a != stable_subset(items, 10, key=str, salt="d:1")  # another seed, another sample
    assert stable_subset(items, None, key=str) == items and stable_subset(items, 500, key=str) == items


def test_subset_depends_on_keys_not_on_the_other_items() -> None:
    items = [f"q{i:03d}" for i in range(100)]
    small = stable_subset(items, 10, key=str, salt="s")
    shuffled = stable_subset([*reversed(items), "new-1", "new-2"], 12, key=str, salt="s")
    # adding two items changes at most two of the choices; order of the file changes none
    assert len(set(small) & set(shuffled)) >= 10 - 2


def test_paired_sets_keep_matched_twins() -> None:
    violations = [{"id": f"v{i}"} for i in range(50)]
    neutral = [{"id": f"n{i}", "pair": f"v{i}"} for i in reversed(range(50))]
    v = stable_subset(violations, 7, key=lambda r: r.get("pair") or r["id"], salt="eval")
    n = stable_subset(neutral, 7, key=lambda r: r.get("pair") or r["id"], salt="eval")
    assert {r["id"] for r in v} == {r["pair"] for r in n}
