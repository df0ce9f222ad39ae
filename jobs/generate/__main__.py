"""Generate one shard of a persona × prompt dataset with a teacher LLM.

python -m jobs.generate --config FILE_OR_URI      (--help lists every field)
"""

from jobs.common.stage import main
from jobs.generate.config import GenerateConfig
from jobs.generate.run import run

if __name__ == "__main__":
    raise SystemExit(main(GenerateConfig, run))
