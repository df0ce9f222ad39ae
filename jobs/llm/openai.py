"""The ``openai`` provider: the official ``openai.AsyncOpenAI`` client against OpenAI or any
OpenAI-compatible server (vLLM, llama.cpp, a gateway) at ``base_url``.

``concurrency`` requests in flight; a per-request timeout; our own retries (the client's are off, so
every attempt is counted) with exponential backoff that honours ``Retry-After`` on 429, 408/409, 5xx,
timeouts and connection errors. 401/403 (bad key) and 404 (unknown model or wrong URL) stop at once
with an ``InputError`` (exit 2): retrying thousands of requests cannot fix them. A malformed body, or a
request still failing after its retries, is an error *result* (``error`` set), never an exception.
Before the first request the server's model list (``GET /models``, where it has one) is checked,
since some servers answer any model name. A dead endpoint trips a circuit breaker (``_Breaker``:
``TransientError``, exit 75) instead of burning every retry; timeouts shrink the requests in flight
(``_Gate``) so a saturated server is not piled onto.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import os
import random
import re
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any, TypeVar

from jobs.common.errors import InputError, TransientError
from jobs.common.records import Usage, utcnow
from jobs.llm.config import LLMConfig
from jobs.llm.request import ChatResult, Deliver, Pending, sample_seed

T = TypeVar("T")

#: HTTP statuses worth retrying (as the openai client itself treats them).
RETRY_STATUSES = frozenset({408, 409, 429})
#: A server asking for a longer wait than this is capped (a stage must still finish).
MAX_RETRY_AFTER_S = 120.0
#: The circuit breaker (``_Breaker``): connection failures in a row of one request, with no response
#: from the server in between, that mean the server is down...
CONNECT_FAILS = 3
#: ...and the recent requests (at least this many, or 2 x concurrency) of which a share of
#: BREAKER_SHARE gave up after every retry, for a server that answers but only with errors. Not
#: lower: a block of requests that fail on their own (one topic a gateway refuses) must not trip it.
BREAKER_WINDOW = 32
BREAKER_SHARE = 0.75
#: After a timeout the in-flight limit may rise again by one per this many x limit answers (``_Gate``).
PROBE_AFTER = 8
#: How long the model-list check before the first request may take.
MODELS_TIMEOUT_S = 10.0
#: Requests in flight per HTTP client (connection pool).
CONNECTIONS_PER_CLIENT = 8


_ERROR_CODE = re.compile(r"^Error code: \d+ - ")


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The TLS context of every client of this process: the HTTP library's default, loaded once
    (openai 3 is built on httpx2, openai 1 and 2 on httpx)."""
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http  # type: ignore[no-redef]

    return http.create_ssl_context()


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


class _Gate:
    """How many requests may be in flight: ``concurrency``, until one times out. A timeout means the
    server queues more than it serves in time, and a server like llama.cpp (one request at a time)
    still generates every answer that nobody waits for any more; so more requests in flight only
    waste it. Then the limit halves (once per round trip), and it grows back by one after each
    ``limit`` answers, but only up to just below the number in flight when the timeout came; that
    ceiling itself rises by one after ``PROBE_AFTER`` x ``ceiling`` answers without a timeout. A
    timed-out request keeps its slot ``timeout_s`` longer: the server is still busy with it."""

    def __init__(self, concurrency: int) -> None:
        self.most = self.limit = self.ceiling = concurrency
        self.in_flight = 0
        self._answers = self._quiet = 0
        self._cut_at = 0.0
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self) -> float:
        """Take a slot; returns when (monotonic), for ``timed_out``."""
        while self.in_flight >= self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        self.in_flight += 1
        return time.monotonic()

    def release(self, after: float = 0.0) -> None:
        """Free a slot, now or ``after`` seconds."""
        if after > 0:
            asyncio.get_running_loop().call_later(after, self.release)
            return
        self.in_flight -= 1
        self._wake()

    def answered(self) -> None:
        self._answers += 1
        self._quiet += 1
        if self.ceiling < self.most and self._quiet >= PROBE_AFTER * self.ceiling:
            self.ceiling, self._quiet = self.ceiling + 1, 0
        if self._answers >= self.limit and self.limit < self.ceiling:
            self.limit, self._answers = self.limit + 1, 0
            self._wake()

    def timed_out(self, started: float) -> None:
        self._quiet = 0
        if started >= self._cut_at:  # a request sent before the last cut says nothing new
            self.ceiling = max(1, min(self.ceiling, self.in_flight - 1))
            self.limit, self._answers = max(1, min(self.limit // 2, self.ceiling)), 0
            self._cut_at = time.monotonic()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        while free > 0 and self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                free -= 1


class _Breaker:
    """Stops a step whose endpoint is down (``TransientError``, exit 75: answers so far are cached, a
    rerun resumes) instead of spending every request's retries on it:

    - **unreachable**: one request failed to connect ``CONNECT_FAILS`` times in a row (a closed port,
      a dead server; about 1.5 s with the default backoff) and no response of any kind came back in
      the meantime;
    - **failing**: ``BREAKER_SHARE`` of the last ``max(BREAKER_WINDOW, 2 x concurrency)`` requests
      gave up after all their retries (a server that answers, but only with errors)."""

    def __init__(self, concurrency: int) -> None:
        self.recent: deque[bool] = deque(maxlen=max(BREAKER_WINDOW, 2 * concurrency))
        self.last_response = 0.0

    def responded(self) -> None:
        self.last_response = time.monotonic()

    def connect_failed(self, first_failure: float, fails_in_a_row: int) -> bool:
        return fails_in_a_row >= CONNECT_FAILS and self.last_response < first_failure

    def finished(self, gave_up: bool) -> bool:
        self.recent.append(gave_up)
        return len(self.recent) == self.recent.maxlen and sum(self.recent) >= BREAKER_SHARE * len(self.recent)


class OpenAIProvider:
    def __init__(
        self, cfg: LLMConfig, stats: Counter[str], *, backoff_s: float = 0.5, max_backoff_s: float = 30.0
    ) -> None:
        self.cfg, self.stats = cfg, stats
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.where = cfg.base_url or "https://api.openai.com/v1"
        self._model_checked = False
        self._timeouts_in_a_row = 0

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
        # request, a noticeable share of the CPU per request at 64+ connections. They share one TLS
        # context: each would otherwise load the CA bundle (~20 ms), even for http://.
        clients = [
            openai.AsyncOpenAI(
                api_key=key,
                base_url=cfg.base_url,
                max_retries=0,
                timeout=cfg.timeout_s,
                http_client=openai.DefaultAsyncHttpxClient(verify=ssl_context()),
            )
            for _ in range(-(-workers // CONNECTIONS_PER_CLIENT))
        ]
        todo = iter(pending)
        gate, breaker = _Gate(cfg.concurrency), _Breaker(cfg.concurrency)

        async def worker(client: Any) -> None:
            for p in todo:
                result, gave_up = await self._ask(client, gate, breaker, p)
                deliver(p.hash, result)
                if breaker.finished(gave_up):
                    n = len(breaker.recent)
                    raise TransientError(
                        f"{self.where}: {sum(breaker.recent)} of the last {n} requests failed after "
                        f"{cfg.max_retries} retries each (last: {result.error}); stopping. Answers so far "
                        "are cached; rerun when the endpoint is healthy"
                    )

        try:
            if not self._model_checked:
                await self._check_model(clients[0])
                self._model_checked = True
            async with asyncio.TaskGroup() as tg:
                for w in range(workers):
                    tg.create_task(worker(clients[w // CONNECTIONS_PER_CLIENT]))
        except BaseExceptionGroup as group:
            # One fatal error (401, unknown model, a dead endpoint) cancels the rest; raise it as itself.
            raise group.exceptions[0] from None
        finally:
            for client in clients:
                await client.close()

    async def _check_model(self, client: Any) -> None:
        """Exit 2 before the first request if the server lists its models and ``model`` is not one.
        Some servers (llama.cpp) answer any model name with the one they serve and echo the name
        back, so the chat requests themselves would never say the name is wrong. A gateway whose
        list leaves out names it routes (Azure deployments) can skip it: CREED_NO_MODEL_CHECK=1."""
        import openai

        if os.environ.get("CREED_NO_MODEL_CHECK", "").lower() in {"1", "true", "yes"}:
            return
        try:
            listed = await client.get("/models", cast_to=dict, options={"timeout": MODELS_TIMEOUT_S})
        except (openai.APIError, ValueError):
            return  # no model list here (or no server: the requests will say so)
        data = listed.get("data") if isinstance(listed, dict) else None
        served = sorted({m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)})
        if served and self.cfg.model not in served:
            raise InputError(
                f"{self.where}: unknown model {self.cfg.model!r}: the server serves {served}; "
                "set model: to one of them (or CREED_NO_MODEL_CHECK=1 if the server routes names it "
                "does not list)"
            )

    def _backoff(self, attempt: int, base: float | None = None) -> float:
        first = self.backoff_s if base is None else base
        return min(self.max_backoff_s, first * 2 ** (attempt - 1)) * (0.75 + 0.25 * random.random())

    async def _ask(self, client: Any, gate: _Gate, breaker: _Breaker, p: Pending) -> tuple[ChatResult, bool]:
        """The result, and whether it is an error that survived every retry."""
        import openai

        cfg, h = self.cfg, p.hash
        params: dict[str, Any] = {
            "model": cfg.model,
            "messages": p.messages,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
        }
        seed = sample_seed(cfg, p.sample)
        if seed is not None:
            params["seed"] = seed
        t0 = time.monotonic()
        last = ""
        attempts = 0
        connect_fails, first_connect_fail = 0, 0.0
        for attempt in range(1, cfg.max_retries + 2):
            attempts = attempt
            wait: float | None = None
            hold = 0.0
            sent = await gate.acquire()
            self.stats["requests"] += 1
            try:
                # The client's generic ``post`` (its documented way to call any endpoint) rather than
                # ``chat.completions.create``: the same transport, errors and parsing, without the
                # recursive TypedDict transform of the request (~0.5 ms of CPU per call).
                resp = await client.post("/chat/completions", cast_to=dict, body=params)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise InputError(
                    f"{self.where}: HTTP {exc.status_code} {error_message(exc)}: the endpoint refused the API "
                    f"key; set a valid key in ${cfg.api_key_env} (or api_key_env: to the variable that holds it)"
                ) from None
            except openai.NotFoundError as exc:
                raise InputError(
                    f"{self.where}: HTTP 404 {error_message(exc)}: unknown model {cfg.model!r} or wrong "
                    "base_url; check model: and base_url: (an OpenAI-compatible base URL usually ends in /v1)"
                ) from None
            except openai.APIStatusError as exc:
                breaker.responded()
                last = f"HTTP {exc.status_code}: {error_message(exc)}"
                if exc.status_code not in RETRY_STATUSES and exc.status_code < 500:
                    return failed(h, last, attempt, t0), False  # e.g. 400 prompt too long
                wait = retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                last = f"timeout after {cfg.timeout_s:g} s"
                gate.timed_out(sent)
                hold = cfg.timeout_s
                self._timeouts_in_a_row += 1
                # The server is saturated: the more timeouts in a row, the longer the retry waits.
                wait = self._backoff(self._timeouts_in_a_row, base=cfg.timeout_s)
            except openai.APIConnectionError as exc:
                last = f"connection error: {exc.__cause__ or exc}"
                if connect_fails == 0:
                    first_connect_fail = time.monotonic()
                connect_fails += 1
                if breaker.connect_failed(first_connect_fail, connect_fails):
                    raise TransientError(
                        f"{self.where}: cannot connect ({last}; {connect_fails} tries in a row, no answer "
                        "from the server since); is the server up? Answers so far are cached; rerun when "
                        "it is"
                    ) from None
            except (ValueError, openai.APIResponseValidationError) as exc:
                breaker.responded()
                return failed(h, f"malformed response body: {str(exc)[:200]}", attempt, t0), False
            else:
                breaker.responded()
                gate.answered()
                self._timeouts_in_a_row = 0
                parsed = parse_completion(resp, h, attempt, t0)
                if parsed is None:
                    error = f"malformed response body (not a chat completion): {str(resp)[:160]}"
                    return failed(h, error, attempt, t0), False
                return parsed, False
            finally:
                gate.release(after=hold)
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
    """The server's reason for an HTTP error, from an OpenAI-style ``{"error": {"message": ...}}``,
    a FastAPI-style ``{"detail": ...}`` (llama.cpp's Python server, many gateways) or a plain body."""
    found = body_message(getattr(exc, "body", None))
    if found:
        return found[:300]
    # The openai client's own text, less its "Error code: 404 - " (the caller prints the status).
    return _ERROR_CODE.sub("", str(getattr(exc, "message", exc)))[:300]


def body_message(body: Any) -> str | None:
    if isinstance(body, str):
        return body.strip() or None
    if not isinstance(body, dict):
        return None
    for key in ("message", "error", "detail"):
        value = body.get(key)
        if isinstance(value, dict):
            value = body_message(value)
        elif isinstance(value, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
            value = "; ".join(str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


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
