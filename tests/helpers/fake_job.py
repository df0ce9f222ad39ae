"""A test-only stage for the local backend: writes its output, or fails, or sleeps, as configured.

python -m tests.helpers.fake_job --config FILE
"""

from __future__ import annotations

import os
import time
from typing import ClassVar

from pydantic import Field

from jobs.common import store
from jobs.common.config import StageConfig
from jobs.common.stage import StepResult, main


class FakeConfig(StageConfig):
    """A step that copies its inputs' line counts into one output line."""

    stage: ClassVar[str] = "fake"
    inputs: list[str] = Field(default_factory=list)
    output: str = ""
    exit_code: int = 0
    sleep_s: float = 0.0
    tag: str = ""


def run(cfg: FakeConfig) -> StepResult:
    time.sleep(cfg.sleep_s)
    if cfg.exit_code:
        raise SystemExit(cfg.exit_code)
    total = sum(len(store.read_text(u).splitlines()) for u in cfg.inputs)
    store.write_text(cfg.output, f"{cfg.step} saw {total}{cfg.tag}\n" * (total + 1))
    return StepResult(
        inputs=cfg.inputs,
        outputs=[cfg.output],
        counts={"lines": total + 1},
        extra={"omp_threads": os.environ.get("OMP_NUM_THREADS")},
    )


if __name__ == "__main__":
    raise SystemExit(main(FakeConfig, run))
