"""Errors with exit codes, so that every stage maps a failure to the contract in DESIGN.md.

0 done; 2 bad config or input (never retried); 75 transient, safe to retry; anything else is a bug.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TRANSIENT = 75


class CreedError(Exception):
    """Base for errors that carry their exit code and a message written for the user."""

    exit_code = 1


class InputError(CreedError):
    """Bad config or input data: retrying will not help; the message says what to fix."""

    exit_code = EXIT_BAD_INPUT


class TransientError(CreedError):
    """A failure that may go away on retry (network, rate limit, unreachable endpoint)."""

    exit_code = EXIT_TRANSIENT


class StoreError(CreedError):
    """The store could not be used; the message names the URI and what to set."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.exit_code = EXIT_TRANSIENT if transient else EXIT_BAD_INPUT


class NotFoundError(StoreError):
    """The object does not exist."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"{uri}: no such object")
        self.uri = uri
