"""The body every ``jobs/<stage>/__main__.py`` shares: parse config, configure logging, log the
config, skip if already complete, run, write the manifest last, return an exit code.

It is a function, not a base class: each stage's logic stays in its own ``core.py`` / ``run.py``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobs.common import logs, manifest
from jobs.common.config import StageConfig, parse_args
from jobs.common.errors import EXIT_OK, CreedError
from jobs.common.records import utcnow

C = TypeVar("C", bound=StageConfig)


@dataclass
class StepResult:
    """What a stage reports back for its manifest."""

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def main(cls: type[C], run: Callable[[C], StepResult], argv: list[str] | None = None) -> int:
    prog = cls.__module__.rsplit(".", 1)[0]
    try:
        parsed = parse_args(cls, argv, prog)
    except CreedError as exc:
        logs.configure(stage=cls.stage).error("config.invalid", error=str(exc))
        return exc.exit_code
    if parsed is None:
        return EXIT_OK
    cfg, raw = parsed
    log = logs.configure(experiment=cfg.experiment, stage=cls.stage, step=cfg.step or None)
    log.info(f"{cls.stage}.config", config=manifest.canonical_config(cfg))
    # The hash is of the mapping the plan wrote, so the local backend can tell "done" without a subprocess.
    cfg_hash = manifest.config_hash(raw)
    if cfg.manifest and not cfg.force and manifest.is_complete(cfg.manifest, cfg_hash, cfg.upstream):
        log.info(f"{cls.stage}.skipped", reason="complete", manifest=cfg.manifest)
        return EXIT_OK
    started = utcnow()
    # What this run consumes, fingerprinted before it starts (a change during the run shows as stale).
    upstream = {u: manifest.upstream_fingerprint(u) for u in cfg.upstream}
    try:
        result = run(cfg)
    except CreedError as exc:
        log.error(f"{cls.stage}.failed", error=str(exc), exit_code=exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error(f"{cls.stage}.interrupted")
        return 130
    except Exception as exc:  # a bug: keep the traceback in the log, exit non-retryable-but-not-2
        log.error(f"{cls.stage}.crashed", error=repr(exc), traceback=traceback.format_exc())
        return 1
    if cfg.manifest:
        manifest.write(
            cfg.manifest,
            step=cfg.step,
            stage=cls.stage,
            experiment=cfg.experiment,
            cfg=raw,
            started=started,
            finished=utcnow(),
            inputs=result.inputs,
            outputs=result.outputs,
            counts=result.counts,
            extra=result.extra,
            upstream=upstream,
        )
    log.info(
        f"{cls.stage}.done", counts=result.counts, seconds=round((utcnow() - started).total_seconds(), 2)
    )
    return EXIT_OK
