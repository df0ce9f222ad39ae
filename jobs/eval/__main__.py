"""Evaluate one model on every eval set.

python -m jobs.eval --config FILE_OR_URI      (--help lists every field)
"""

from jobs.common.stage import main
from jobs.eval.config import EvalConfig
from jobs.eval.run import run

if __name__ == "__main__":
    raise SystemExit(main(EvalConfig, run))
