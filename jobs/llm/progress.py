"""The one progress display of the generation layer: a bar on a terminal, a structured log line every
30 s elsewhere (containers), for teacher and judge requests and for the evaluated model alike."""

from __future__ import annotations

import sys
import time
from typing import Any

from jobs.common.logs import get_logger

LOG_EVERY_S = 30.0


class Progress:
    def __init__(
        self, total: int, *, initial: int = 0, enabled: bool = True, what: str = "", unit: str = "req"
    ):
        self.total, self.done, self.enabled, self.what, self.unit = total, initial, enabled, what, unit
        self.errors = 0
        self.bar: Any = None
        self.last_log = time.monotonic()
        self.started = self.last_log
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=what, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1, *, errors: int = 0) -> None:
        self.done += n
        self.errors += errors
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and (now - self.last_log >= LOG_EVERY_S or self.done >= self.total):
            self.last_log = now
            rate = self.done / max(now - self.started, 1e-9)
            get_logger().info(
                "llm.progress",
                model=self.what,
                done=self.done,
                total=self.total,
                errors=self.errors,
                per_s=round(rate, 2),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
