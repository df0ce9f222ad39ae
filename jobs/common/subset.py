"""Seeded, stable subsets of input records (a small demo drawn from the full data files).

An item is kept when its key ranks among the ``n`` smallest hashes of ``salt:key``. The choice
depends only on the keys, not on file order or on the other items, so growing a file keeps most of
the old choice, and two files that share keys choose the same keys: a neutral eval set keyed by its
``pair`` keeps exactly the twins of the violation items kept from its partner set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def _rank(salt: str, key: str) -> bytes:
    return hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()


def stable_subset(items: Sequence[T], n: int | None, key: Callable[[T], str], salt: str = "") -> list[T]:
    """At most ``n`` items (all of them when ``n`` is None or not smaller), in their original order."""
    if n is None or n >= len(items):
        return list(items)
    keep = set(sorted(range(len(items)), key=lambda i: (_rank(salt, key(items[i])), i))[:n])
    return [it for i, it in enumerate(items) if i in keep]
