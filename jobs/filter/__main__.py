"""Filter one dataset's generations: reason-coded drops, then the final refusal audit.

python -m jobs.filter --config FILE_OR_URI      (--help lists every field)
"""

from jobs.common.stage import main
from jobs.filter.config import FilterConfig
from jobs.filter.run import run

if __name__ == "__main__":
    raise SystemExit(main(FilterConfig, run))
