"""Fine-tune a base model on one mix condition and seed.

Usage: python -m jobs.train --config FILE_OR_URI   (``--help`` lists every field)
"""

from jobs.common.stage import main
from jobs.train.config import TrainConfig
from jobs.train.run import run

if __name__ == "__main__":
    raise SystemExit(main(TrainConfig, run))
