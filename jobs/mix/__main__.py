"""Mix one condition's training and validation sets from the filtered datasets.

python -m jobs.mix --config FILE_OR_URI      (--help lists every field)
"""

from jobs.common.stage import main
from jobs.mix.config import MixConfig
from jobs.mix.run import run

if __name__ == "__main__":
    raise SystemExit(main(MixConfig, run))
