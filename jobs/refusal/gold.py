"""Gold-labelled responses: reading them, and measuring a classifier against them.

A gold file is JSONL with ``prompt``, ``response`` and ``label`` (the taxonomy) on every row, and
optionally ``id`` and ``source``; other fields are kept. The project's own labelled corpus is
``data/labels/`` (``dev.jsonl`` and ``test.jsonl`` to tune on, ``test2.jsonl`` to report on; see the
READMEs there), and a spec may name its own (``eval.gold``). ``test.jsonl`` was the first held-out
split; it was consulted while the lexicon was tuned, so it is tuning data now, and ``test2.jsonl``,
written afterwards without access to the rules, is the split the classifier's accuracy is reported on.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from jobs.common.errors import InputError
from jobs.common.loaders import read_records
from jobs.common.records import Verdict
from jobs.refusal.metrics import Agreement, agreement

GoldLabel = Literal["comply", "caveat", "redirect", "refuse", "incoherent"]

#: The labelled corpus shipped with the repository (provenance in its READMEs).
LABELS_DIR = Path(__file__).resolve().parents[2] / "data" / "labels"
DEV = LABELS_DIR / "dev.jsonl"
#: The first test split, consulted while lexicon-2 and lexicon-3 were tuned: tuning data now.
DEV2 = LABELS_DIR / "test.jsonl"
#: The held-out split: written without access to the rules, never used to tune them.
TEST = LABELS_DIR / "test2.jsonl"


class GoldRow(BaseModel):
    """A response with its gold taxonomy label."""

    model_config = ConfigDict(extra="allow")
    prompt: str
    response: str
    label: GoldLabel
    id: str = ""
    source: str = ""


def read_gold(uri: str) -> list[GoldRow]:
    """Every row of a gold file; a row without a valid ``label`` is an error naming file:line."""
    rows = read_records(uri, GoldRow)
    if not rows:
        raise InputError(f"{uri}: no rows; a gold file has prompt, response and label on every row")
    return rows


def score(rows: list[GoldRow], verdicts: list[Verdict]) -> Agreement:
    return agreement([r.label for r in rows], [v.label for v in verdicts])


def score_by_source(rows: list[GoldRow], verdicts: list[Verdict]) -> dict[str, Agreement]:
    """Agreement per ``source`` (rows without one are ``-``), in order of first appearance."""
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for r, v in zip(rows, verdicts, strict=True):
        g, p = groups[r.source or "-"]
        g.append(r.label)
        p.append(v.label)
    return {src: agreement(g, p) for src, (g, p) in groups.items()}
