"""Analyze stage: every EvalResult of an experiment → results.csv, contrasts.csv, figures and a report.

Public API: ``from jobs.analyze import contrasts`` — the pre-registered refusal contrasts of a
DataFrame of EvalResults, exactly as the stage computes them (see :func:`jobs.analyze.core.contrasts`).
Importing this package is light (``workflows/spec.py`` imports its config); numpy, pandas and scipy
load on first use of ``contrasts``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["contrasts"]


def __getattr__(name: str) -> Any:
    if name == "contrasts":
        from jobs.analyze.core import contrasts

        return contrasts
    raise AttributeError(f"module 'jobs.analyze' has no attribute {name!r}")
