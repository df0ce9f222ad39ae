"""Analyze stage: every EvalResult of an experiment → results.csv, contrasts.csv, figures, report.

Usage: python -m jobs.analyze --config FILE_OR_URI   (--help lists every field)
"""

from jobs.analyze.config import AnalyzeConfig
from jobs.analyze.run import run
from jobs.common.stage import main

if __name__ == "__main__":
    raise SystemExit(main(AnalyzeConfig, run))
