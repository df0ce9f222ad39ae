"""The teacher manipulation check of one value system: does the teacher, in its personas, object to
each violation item and help with its twin?

python -m jobs.check --config FILE_OR_URI      (--help lists every field)
"""

from jobs.check.config import CheckConfig
from jobs.check.run import run
from jobs.common.stage import main

if __name__ == "__main__":
    raise SystemExit(main(CheckConfig, run))
