"""The body every ``jobs/<stage>/__main__.py`` shares: parse config, configure logging, log the
config, skip if already complete, run, write the manifest last, return an exit code.

It is a function, not a base class: each stage's logic stays in its own ``core.py`` / ``run.py``.

SIGTERM (Kubernetes deleting, evicting or preempting the pod; a node shutting down) ends the step
with exit 75 (transient: Argo retries it) after a clean stop: the handler raises :class:`Terminated`
in the main thread, so ``finally`` blocks run (caches flushed, temporary files removed) and no
manifest is written. Code that can stop better on its own (training saves a checkpoint first)
runs inside :func:`deferred_stop`, where SIGTERM only sets :func:`stop_requested`.

On Argo, ``CREED_OUTPUTS_DIR`` names a folder for the step's outputs as Argo sees them: a copy of
the manifest (``manifest.json``, an output artifact the UI links) and its output digest (``digest``,
an output parameter, which memoization needs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jobs.common import logs, manifest, store
from jobs.common.config import StageConfig, parse_args
from jobs.common.errors import EXIT_OK, CreedError, TransientError
from jobs.common.records import utcnow

C = TypeVar("C", bound=StageConfig)
#: Where the Argo backend collects a step's outputs (see the module docstring).
OUTPUTS_DIR_ENV = "CREED_OUTPUTS_DIR"


@dataclass
class StepResult:
    """What a stage reports back for its manifest."""

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# SIGTERM
# ---------------------------------------------------------------------------------------------
class Terminated(TransientError):
    """The step was asked to stop (SIGTERM): its pod is going away; a retry continues the work."""


_stop = threading.Event()
_deferred = 0


def stop_requested() -> bool:
    """True once SIGTERM has arrived."""
    return _stop.is_set()


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """Inside this block SIGTERM does not interrupt: it only sets :func:`stop_requested`, and the code
    polls it and stops itself (raising :class:`Terminated` once it has saved what it can)."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


def _on_sigterm(signum: int, frame: Any) -> None:
    first = not _stop.is_set()
    _stop.set()
    if first and _deferred == 0:
        raise Terminated("SIGTERM: the pod is being stopped; nothing was lost that a retry cannot redo")


@contextlib.contextmanager
def _sigterm_handler() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # in-process callers (tests)
        yield
        return
    _stop.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# The stage body
# ---------------------------------------------------------------------------------------------
def write_argo_outputs(manifest_uri: str) -> None:
    """Copy the step's manifest (and its output digest) to ``$CREED_OUTPUTS_DIR`` for Argo."""
    folder = os.environ.get(OUTPUTS_DIR_ENV, "")
    if not folder or not manifest_uri:
        return
    text = store.read_text(manifest_uri)
    m = manifest.read(manifest_uri)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(text, encoding="utf-8")
    (out / "digest").write_text(m.digest if m is not None else "", encoding="utf-8")


def main(cls: type[C], run: Callable[[C], StepResult], argv: list[str] | None = None) -> int:
    with _sigterm_handler():
        return _main(cls, run, argv)


def _main(cls: type[C], run: Callable[[C], StepResult], argv: list[str] | None) -> int:
    prog = cls.__module__.rsplit(".", 1)[0]
    try:
        parsed = parse_args(cls, argv, prog)
    except CreedError as exc:
        logs.configure(stage=cls.stage).error("config.invalid", error=str(exc), exit_code=exc.exit_code)
        return exc.exit_code
    if parsed is None:
        return EXIT_OK
    cfg, raw = parsed
    log = logs.configure(experiment=cfg.experiment, stage=cls.stage, step=cfg.step or None)
    log.info(f"{cls.stage}.config", config=manifest.canonical_config(cfg))
    # The hash is of the mapping the plan wrote, so the local backend can tell "done" without a subprocess.
    cfg_hash = manifest.config_hash(raw)
    started = utcnow()
    try:
        # Every store read here can meet a store that is briefly down: it raises TransientError (75).
        if cfg.manifest and not cfg.force and manifest.is_complete(cfg.manifest, cfg_hash, cfg.upstream):
            log.info(f"{cls.stage}.skipped", reason="complete", manifest=cfg.manifest)
            write_argo_outputs(cfg.manifest)
            return EXIT_OK
        # What this run consumes, fingerprinted before it starts (a change during the run shows as stale).
        upstream = {u: manifest.upstream_fingerprint(u) for u in cfg.upstream}
        result = run(cfg)
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
            write_argo_outputs(cfg.manifest)
    except Terminated as exc:
        log.warning(f"{cls.stage}.terminated", error=str(exc), exit_code=exc.exit_code)
        return exc.exit_code
    except CreedError as exc:
        log.error(f"{cls.stage}.failed", error=str(exc), exit_code=exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error(f"{cls.stage}.interrupted")
        return 130
    except Exception as exc:  # a bug: keep the traceback in the log, exit non-retryable-but-not-2
        log.error(f"{cls.stage}.crashed", error=repr(exc), traceback=traceback.format_exc())
        return 1
    log.info(
        f"{cls.stage}.done", counts=result.counts, seconds=round((utcnow() - started).total_seconds(), 2)
    )
    return EXIT_OK
