"""structlog, configured once per process: JSON lines in containers, a readable console on a terminal.

Every event passes through a redaction processor, so that an API key or AWS secret never reaches a
log even when it sits inside a config value or an exception message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Key names that hold secrets. `token` only as a whole word: `prompt_tokens` and `tokens_seen` are counts.
_SECRET_KEY_NAMES = re.compile(
    r"(api[_-]?key|secret|(^|[_-])token($|[_-])|password|authorization|credential)", re.I
)
_SECRET_VALUES = [
    re.compile(r"sk-[A-Za-z0-9_\-]{12,}"),  # OpenAI-style keys
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),  # AWS secret access keys
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-]{8,}"),
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face tokens
]
REDACTED = "***"


def redact_text(text: str) -> str:
    for pat in _SECRET_VALUES:
        text = pat.sub(REDACTED, text)
    return text


def _redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY_NAMES.search(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event_dict):
        event_dict[k] = _redact(event_dict[k], k if k != "event" else "")
    return event_dict


class _StderrLogger:
    """Writes each line to the *current* ``sys.stderr`` (tests and tools swap it out)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_factory(*_: Any) -> _StderrLogger:
    return _StderrLogger()


def configure(*, json: bool | None = None, level: str | None = None, **bind: Any) -> structlog.BoundLogger:
    """Configure logging for this process and bind context (``experiment``, ``stage``, ``step``)."""
    if json is None:
        fmt = os.environ.get("CREED_LOG_FORMAT", "")
        json = fmt == "json" or (fmt != "console" and not sys.stderr.isatty())
    lvl = getattr(logging, (level or os.environ.get("CREED_LOG_LEVEL", "INFO")).upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_factory,
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**{k: v for k, v in bind.items() if v is not None})
    return structlog.get_logger()


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger().bind(**bind)
