"""The ``openai`` provider: the official ``openai.AsyncOpenAI`` client against OpenAI or any
OpenAI-compatible server (vLLM, llama.cpp, a gateway) at ``base_url``.

``concurrency`` requests in flight; a per-request timeout; our own retries (the client's are off, so
every attempt is counted) with exponential backoff that honours ``Retry-After`` on 429, 408/409, 5xx,
timeouts and connection errors. 401/403 (bad key) and 404 (unknown model or wrong URL) stop at once
with an ``InputError`` (exit 2): retrying thousands of requests cannot fix them. A malformed body, or a
request still failing after its retries, is an error *result* (``error`` set), never an exception.
A dead endpoint trips a circuit breaker (``TransientError``, exit 75) instead of burning every retry.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

from jobs.common.errors import InputError, TransientError
from jobs.common.records import Usage, utcnow
from jobs.llm.config import LLMConfig
from jobs.llm.request import ChatResult, Deliver, Messages, Pending, sample_seed

T = TypeVar("T")

#: HTTP statuses worth retrying (as the openai client itself treats them).
RETRY_STATUSES = frozenset({408, 409, 429})
#: A server asking for a longer wait than this is capped (a stage must still finish).
MAX_RETRY_AFTER_S = 120.0
#: The provider stops (TransientError) after max(this, 4 x concurrency) requests in a row exhausted
#: their retries: the endpoint is down, and every further request would only wait.
BREAKER_MIN = 50
#: Requests in flight per HTTP client (connection pool).
CONNECTIONS_PER_CLIENT = 8


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds a server asks us to wait (``retry-after-ms``, ``Retry-After`` seconds or HTTP date)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, min(float(value) / divisor, MAX_RETRY_AFTER_S))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER_S))
    return None


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, also from code that already runs inside an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class OpenAIProvider:
    def __init__(
        self, cfg: LLMConfig, stats: Counter[str], *, backoff_s: float = 0.5, max_backoff_s: float = 30.0
    ) -> None:
        self.cfg, self.stats = cfg, stats
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s

    def answer(self, pending: list[Pending], deliver: Deliver) -> None:
        run_coroutine(self._run(pending, deliver))

    def close(self) -> None:
        pass

    async def _run(self, pending: list[Pending], deliver: Deliver) -> None:
        import openai

        cfg = self.cfg
        # Local servers ignore the key, but the client insists on one.
        key = os.environ.get(cfg.api_key_env) or "not-needed"
        workers = min(cfg.concurrency, len(pending))
        # Several small clients rather than one: the HTTP pool scans all its connections for every
        # request, a noticeable share of the CPU per request at 64+ connections.
        clients = [
            openai.AsyncOpenAI(api_key=key, base_url=cfg.base_url, max_retries=0, timeout=cfg.timeout_s)
            for _ in range(-(-workers // CONNECTIONS_PER_CLIENT))
        ]
        todo = iter(pending)
        # A dead endpoint would otherwise burn every request's retries (minutes to hours): after this
        # many requests in a row gave up with no answer in between, stop and let the step be retried.
        give_up_after = max(BREAKER_MIN, 4 * cfg.concurrency)
        streak = 0

        async def worker(client: Any) -> None:
            nonlocal streak
            for p in todo:
                result, gave_up = await self._ask(client, p.hash, p.messages, p.sample)
                streak = streak + 1 if gave_up else 0 if result.ok else streak
                deliver(p.hash, result)
                if streak >= give_up_after:
                    raise TransientError(
                        f"{cfg.base_url or 'api.openai.com'}: {streak} requests in a row failed after "
                        f"{cfg.max_retries} retries each (last: {result.error}); stopping. Answers so far are "
                        "cached; rerun when the endpoint is healthy"
                    )

        try:
            async with asyncio.TaskGroup() as tg:
                for w in range(workers):
                    tg.create_task(worker(clients[w // CONNECTIONS_PER_CLIENT]))
        except BaseExceptionGroup as group:
            # One fatal error (401, unknown model) cancels the rest; raise it as itself.
            raise group.exceptions[0] from None
        finally:
            for client in clients:
                await client.close()

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.75 + 0.25 * random.random())

    async def _ask(self, client: Any, h: str, messages: Messages, sample: int) -> tuple[ChatResult, bool]:
        """The result, and whether it is an error that survived every retry."""
        import openai

        cfg = self.cfg
        where = cfg.base_url or "https://api.openai.com/v1"
        params: dict[str, Any] = {
            "model": cfg.model,
            "messages": messages,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
        }
        seed = sample_seed(cfg, sample)
        if seed is not None:
            params["seed"] = seed
        t0 = time.monotonic()
        last = ""
        attempts = 0
        for attempt in range(1, cfg.max_retries + 2):
            attempts = attempt
            self.stats["requests"] += 1
            wait: float | None = None
            try:
                # The client's generic ``post`` (its documented way to call any endpoint) rather than
                # ``chat.completions.create``: the same transport, errors and parsing, without the
                # recursive TypedDict transform of the request (~0.5 ms of CPU per call).
                resp = await client.post("/chat/completions", cast_to=dict, body=params)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise InputError(
                    f"{where}: HTTP {exc.status_code} {error_message(exc)}: the endpoint refused the API key; "
                    f"set a valid key in ${cfg.api_key_env} (or api_key_env: to the variable that holds it)"
                ) from None
            except openai.NotFoundError as exc:
                raise InputError(
                    f"{where}: HTTP 404 {error_message(exc)}: unknown model {cfg.model!r} or wrong base_url; "
                    "check model: and base_url: (an OpenAI-compatible base URL usually ends in /v1)"
                ) from None
            except openai.APIStatusError as exc:
                last = f"HTTP {exc.status_code}: {error_message(exc)}"
                if exc.status_code not in RETRY_STATUSES and exc.status_code < 500:
                    return failed(h, last, attempt, t0), False  # e.g. 400 prompt too long
                wait = retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                last = f"timeout after {cfg.timeout_s:g} s"
            except openai.APIConnectionError as exc:
                last = f"connection error: {exc.__cause__ or exc}"
            except (ValueError, openai.APIResponseValidationError) as exc:
                return failed(h, f"malformed response body: {str(exc)[:200]}", attempt, t0), False
            else:
                parsed = parse_completion(resp, h, attempt, t0)
                if parsed is None:
                    error = f"malformed response body (not a chat completion): {str(resp)[:160]}"
                    return failed(h, error, attempt, t0), False
                return parsed, False
            if attempt <= cfg.max_retries:
                self.stats["retries"] += 1
                await asyncio.sleep(wait if wait is not None else self._backoff(attempt))
        return failed(h, f"{last} (gave up after {attempts} attempts)", attempts, t0), True


def failed(h: str, error: str, attempts: int, t0: float) -> ChatResult:
    return ChatResult(
        text="",
        finish_reason="error",
        usage=Usage(),
        error=error,
        latency_s=round(time.monotonic() - t0, 4),
        attempts=attempts,
        request_hash=h,
    )


def error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]


def parse_completion(resp: Any, h: str, attempts: int, t0: float) -> ChatResult | None:
    """A ChatResult from a chat-completion body, or None if the body is not one."""
    try:
        choice = resp["choices"][0]
        text = choice["message"].get("content")
        finish = choice.get("finish_reason")
        usage = resp.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (AttributeError, IndexError, TypeError, KeyError, ValueError):
        return None
    if text is None:  # e.g. a tool call or a content filter: no text
        text = ""
    if not isinstance(text, str):
        return None
    return ChatResult(
        text=text,
        finish_reason=str(finish or "unknown"),
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        latency_s=round(time.monotonic() - t0, 4),
        attempts=attempts,
        request_hash=h,
        created_at=utcnow(),
    )
