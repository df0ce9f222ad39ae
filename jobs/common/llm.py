"""The LLM client shared by generate (teacher), filter and eval (judge): many chat requests in, one
``ChatResult`` per request out, in order.

Providers (``LLMConfig.provider``):

- ``openai``: the official ``openai.AsyncOpenAI`` client against OpenAI or any OpenAI-compatible server
  (vLLM, llama.cpp, a gateway) at ``base_url``. ``concurrency`` requests in flight; a per-request
  timeout; our own retries (the client's are off, so every attempt is counted) with exponential
  backoff that honours ``Retry-After`` on 429, 408/409, 5xx, timeouts and connection errors.
  401/403 (bad key) and 404 (unknown model or wrong URL) stop at once with an ``InputError``
  (exit 2): retrying thousands of requests cannot fix them. A malformed body, or a request still
  failing after its retries, is an error *result* (``error`` set), never an exception.
- ``hf``: a local transformers chat model, the tokenizer's chat template, batched generation with
  left padding (``concurrency`` is the batch size), on GPU when there is one.
- ``vllm``: offline ``vllm.LLM`` (needs the ``vllm`` extra).
- ``mock``: deterministic offline text derived from the request hash (CI and demo smoke tests).

Responses are cached in the store, one small JSON object per request under
``{cache}/{hash[:2]}/{hash}.json``, keyed by ``request_hash`` (provider, model, revision, messages,
sampling parameters, sample index). Each answer is written the moment it arrives, so the cache is
also the crash-safe progress of a stage: after ``kill -9`` a rerun re-asks only what was in flight.
Errors are never cached.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from jobs.common import store
from jobs.common.errors import InputError, NotFoundError, TransientError
from jobs.common.llm_config import LLMConfig
from jobs.common.logs import get_logger
from jobs.common.models import eos_token_ids
from jobs.common.records import Usage, utcnow

Messages = list[dict[str, str]]
T = TypeVar("T")

#: Bump when the meaning of a cached answer changes; old entries then stop matching.
HASH_VERSION = 1
#: HTTP statuses worth retrying (as the openai client itself treats them).
RETRY_STATUSES = frozenset({408, 409, 429})
#: A server asking for a longer wait than this is capped (a stage must still finish).
MAX_RETRY_AFTER_S = 120.0
PROGRESS_LOG_EVERY_S = 30.0
#: The openai provider stops (TransientError) after max(this, 4 x concurrency) requests in a row
#: exhausted their retries: the endpoint is down, and every further request would only wait.
BREAKER_MIN = 50
#: Requests in flight per HTTP client (connection pool) of the openai provider.
CONNECTIONS_PER_CLIENT = 8


class ChatResult(BaseModel):
    """The answer to one request, or the reason there is none (``error``)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    finish_reason: str
    usage: Usage
    error: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    cached: bool = False
    request_hash: str
    created_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def sample_seed(cfg: LLMConfig, sample: int) -> int | None:
    """The sampler seed sent with a request: distinct per sample, so samples differ reproducibly."""
    return None if cfg.seed is None else cfg.seed + sample


def request_hash(cfg: LLMConfig, messages: Messages, sample: int = 0) -> str:
    """The identity of a request: everything that changes the answer, and nothing else (not the
    endpoint URL, the key, the timeout or the concurrency)."""
    payload = {
        "v": HASH_VERSION,
        "provider": cfg.provider,
        "model": cfg.model,
        "revision": cfg.revision,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_tokens": cfg.max_tokens,
        "seed": cfg.seed,
        "sample": sample,
    }
    if cfg.dtype != "auto":  # a local model's answers depend on its dtype ("auto" keeps old hashes)
        payload["dtype"] = cfg.dtype
    raw = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


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


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------
class ResponseCache:
    """Answered requests in the store, one JSON object per request hash."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._dirs: set[Path] = set()

    def uri(self, h: str) -> str:
        return store.join(self.prefix, h[:2], f"{h}.json")

    def get(self, h: str) -> ChatResult | None:
        try:
            data = store.read_json(self.uri(h))
        except NotFoundError:
            return None
        except json.JSONDecodeError:
            get_logger().warning("llm.cache_corrupt", uri=self.uri(h))
            return None
        try:
            result = ChatResult.model_validate({**data, "cached": True})
        except ValidationError:
            get_logger().warning("llm.cache_corrupt", uri=self.uri(h))
            return None
        return result if result.ok and result.request_hash == h else None

    def put(self, result: ChatResult) -> None:
        if not result.ok or result.cached:
            return
        uri = self.uri(result.request_hash)
        data = result.model_dump_json(exclude={"cached"}).encode("utf-8")
        path = store.local_path(uri)
        if path is None:
            store.write_bytes(uri, data)
            return
        # On disk: write and rename (atomic against a killed process) without the store's fsync,
        # which costs ~1 ms of CPU per entry. An entry torn by a power cut reads as a miss.
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        tmp = path.with_name(f"{store.TMP_MARK}{os.getpid()}-{threading.get_native_id()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Progress: a bar on a terminal, a log line every 30 s elsewhere
# ---------------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool, what: str) -> None:
        self.total, self.done, self.enabled, self.what = total, initial, enabled, what
        self.bar: Any = None
        self.last_log = time.monotonic()
        self.started = self.last_log
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=what, unit="req", dynamic_ncols=True)

    def update(self, errors: int) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.enabled and now - self.last_log >= PROGRESS_LOG_EVERY_S:
            self.last_log = now
            rate = self.done / max(now - self.started, 1e-9)
            get_logger().info(
                "llm.progress",
                model=self.what,
                done=self.done,
                total=self.total,
                errors=errors,
                per_s=round(rate, 2),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
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


def _words(text: str) -> int:
    return len(text.split())


_MOCK_OPENINGS = (
    "Here is a clear answer.",
    "Let me explain this step by step.",
    "In short, it depends on the details.",
    "That is a good question to ask.",
    "There are a few things worth knowing.",
)


def mock_text(h: str, messages: Messages, max_tokens: int) -> tuple[str, str]:
    """A deterministic reply (text, finish reason) for the ``mock`` provider."""
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    opening = _MOCK_OPENINGS[int(h[:8], 16) % len(_MOCK_OPENINGS)]
    words = f"{opening} You asked: {user.strip()} (mock answer {h[:8]})".split()
    if len(words) > max_tokens:
        return " ".join(words[:max_tokens]), "length"
    return " ".join(words), "stop"


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------
Deliver = Callable[[str, ChatResult], None]


class LLMClient:
    """Send many chat requests to one LLM endpoint, with caching, retries and bounded concurrency."""

    def __init__(
        self,
        cfg: LLMConfig,
        cache: str | None = None,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        cache_writers: int = 8,
    ) -> None:
        if cfg.provider != "mock" and not cfg.model.strip():
            raise InputError(f"LLM config: provider '{cfg.provider}' needs a model (set model: ...)")
        self.cfg = cfg
        self.cache = ResponseCache(cache) if cache else None
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        #: Totals over this client's life: requests sent, retries, errors, cache hits, tokens.
        self.stats: Counter[str] = Counter()
        self._writers = ThreadPoolExecutor(max_workers=cache_writers, thread_name_prefix="llm-cache")
        self._hf: tuple[Any, Any] | None = None
        self._vllm: Any = None

    @property
    def name(self) -> str:
        return f"{self.cfg.provider}:{self.cfg.model}" if self.cfg.model else self.cfg.provider

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        self._hf = None
        self._vllm = None

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(self, messages: Messages, sample: int = 0) -> ChatResult:
        return self.chat_many([(messages, sample)])[0]

    def chat_many(
        self,
        requests: list[tuple[Messages, int]],
        on_result: Callable[[int, ChatResult], None] | None = None,
        progress: bool = False,
    ) -> list[ChatResult]:
        """One result per request, in order. ``on_result(index, result)`` is called as each arrives
        (cache hits first). Identical requests are sent once. Raises ``InputError`` on an auth or
        unknown-model error; every other failure is a result with ``error`` set."""
        hashes = [request_hash(self.cfg, m, s) for m, s in requests]
        results: list[ChatResult | None] = [None] * len(requests)
        wanted: dict[str, list[int]] = {}
        for i, h in enumerate(hashes):
            wanted.setdefault(h, []).append(i)
        hits = self._lookup(list(wanted))
        self.stats["cached"] += sum(len(wanted[h]) for h in hits)
        for h, hit in hits.items():
            for i in wanted[h]:
                results[i] = hit
                if on_result is not None:
                    on_result(i, hit)
        pending = [
            (h, requests[idx[0]][0], requests[idx[0]][1]) for h, idx in wanted.items() if h not in hits
        ]
        bar = _Progress(
            len(requests), len(requests) - sum(len(wanted[h]) for h, _, _ in pending), progress, self.name
        )
        writes: list[Future[None]] = []

        def deliver(h: str, result: ChatResult) -> None:
            if result.ok:
                self.stats["prompt_tokens"] += result.usage.prompt_tokens
                self.stats["completion_tokens"] += result.usage.completion_tokens
                if self.cache is not None:
                    # In a thread: creating a file can take a millisecond, and the event loop must
                    # not wait for it (the write releases the GIL, so it overlaps with the loop).
                    writes.append(self._writers.submit(self.cache.put, result))
            else:
                self.stats["errors"] += 1
            for i in wanted[h]:
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
                bar.update(self.stats["errors"])

        try:
            if pending:
                self._dispatch(pending, deliver)
        finally:
            bar.close()
            futures_wait(writes)  # every answer received is persisted before we return or raise
        failed = next((e for e in (w.exception() for w in writes) if e is not None), None)
        if failed is not None:
            raise failed  # the cache (the store) is failing: progress is not being saved
        return [r for r in results if r is not None]

    def _lookup(self, hashes: list[str]) -> dict[str, ChatResult]:
        if self.cache is None or not hashes:
            return {}
        cache = self.cache
        if len(hashes) == 1:
            hit = cache.get(hashes[0])
            return {hashes[0]: hit} if hit else {}
        # Reads are small and latency-bound (S3): many at once.
        with ThreadPoolExecutor(max_workers=min(32, len(hashes))) as pool:
            found = list(pool.map(cache.get, hashes))
        return {h: r for h, r in zip(hashes, found, strict=True) if r is not None}

    def _dispatch(self, pending: list[tuple[str, Messages, int]], deliver: Deliver) -> None:
        provider = self.cfg.provider
        if provider == "openai":
            _run_coroutine(self._run_openai(pending, deliver))
        elif provider == "mock":
            self._run_mock(pending, deliver)
        elif provider == "hf":
            self._run_hf(pending, deliver)
        elif provider == "vllm":
            self._run_vllm(pending, deliver)
        else:  # pragma: no cover - LLMConfig's Literal already refuses it
            raise InputError(f"unknown LLM provider {provider!r}")

    # -- mock -----------------------------------------------------------------------------------
    def _run_mock(self, pending: list[tuple[str, Messages, int]], deliver: Deliver) -> None:
        for h, messages, _ in pending:
            text, finish = mock_text(h, messages, self.cfg.max_tokens)
            prompt_words = sum(_words(m["content"]) for m in messages)
            self.stats["requests"] += 1
            deliver(
                h,
                ChatResult(
                    text=text,
                    finish_reason=finish,
                    usage=Usage(prompt_tokens=prompt_words, completion_tokens=_words(text)),
                    request_hash=h,
                    created_at=utcnow(),
                ),
            )

    # -- openai ---------------------------------------------------------------------------------
    async def _run_openai(self, pending: list[tuple[str, Messages, int]], deliver: Deliver) -> None:
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
            for h, messages, sample in todo:
                result, gave_up = await self._ask_openai(client, h, messages, sample)
                streak = streak + 1 if gave_up else 0 if result.ok else streak
                deliver(h, result)
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

    async def _ask_openai(
        self, client: Any, h: str, messages: Messages, sample: int
    ) -> tuple[ChatResult, bool]:
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
                    f"{where}: HTTP {exc.status_code} {_message(exc)}: the endpoint refused the API key; "
                    f"set a valid key in ${cfg.api_key_env} (or api_key_env: to the variable that holds it)"
                ) from None
            except openai.NotFoundError as exc:
                raise InputError(
                    f"{where}: HTTP 404 {_message(exc)}: unknown model {cfg.model!r} or wrong base_url; "
                    "check model: and base_url: (an OpenAI-compatible base URL usually ends in /v1)"
                ) from None
            except openai.APIStatusError as exc:
                last = f"HTTP {exc.status_code}: {_message(exc)}"
                if exc.status_code not in RETRY_STATUSES and exc.status_code < 500:
                    return self._failed(h, last, attempt, t0), False  # e.g. 400 prompt too long
                wait = retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                last = f"timeout after {cfg.timeout_s:g} s"
            except openai.APIConnectionError as exc:
                last = f"connection error: {exc.__cause__ or exc}"
            except (ValueError, openai.APIResponseValidationError) as exc:
                return self._failed(h, f"malformed response body: {str(exc)[:200]}", attempt, t0), False
            else:
                parsed = _parse_completion(resp, h, attempt, t0)
                if parsed is None:
                    error = f"malformed response body (not a chat completion): {str(resp)[:160]}"
                    return self._failed(h, error, attempt, t0), False
                return parsed, False
            if attempt <= cfg.max_retries:
                self.stats["retries"] += 1
                await asyncio.sleep(wait if wait is not None else self._backoff(attempt))
        return self._failed(h, f"{last} (gave up after {attempts} attempts)", attempts, t0), True

    def _failed(self, h: str, error: str, attempts: int, t0: float) -> ChatResult:
        return ChatResult(
            text="",
            finish_reason="error",
            usage=Usage(),
            error=error,
            latency_s=round(time.monotonic() - t0, 4),
            attempts=attempts,
            request_hash=h,
        )

    # -- hf ---------------------------------------------------------------------------------------
    def _run_hf(self, pending: list[tuple[str, Messages, int]], deliver: Deliver) -> None:
        import torch

        from jobs.common.models import load_for_inference

        cfg = self.cfg
        if self._hf is None:
            self._hf = load_for_inference(cfg.model, cfg.revision, dtype=cfg.dtype)
        model, tok = self._hf
        if not getattr(tok, "chat_template", None):
            raise InputError(
                f"{cfg.model}: the tokenizer has no chat template; the hf provider needs a chat "
                "(instruct) model as teacher or judge"
            )
        texts = [
            tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for _, m, _ in pending
        ]
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        # Longest first: rows of a batch have similar lengths, so little padding.
        order = sorted(range(len(pending)), key=lambda k: -lengths[k])
        eos = eos_token_ids(model, tok)
        pad = tok.pad_token_id
        device = next(model.parameters()).device
        greedy = cfg.temperature == 0
        kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_tokens, "pad_token_id": pad}
        if greedy:
            kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        else:
            kwargs |= {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0}
        for start in range(0, len(order), cfg.concurrency):
            batch = order[start : start + cfg.concurrency]
            t0 = time.monotonic()
            enc = tok([texts[k] for k in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(device)
            width = enc["input_ids"].shape[1]
            if not greedy:
                # Seeded by the batch's first request, so a rerun of the same batch samples the same.
                torch.manual_seed(((cfg.seed or 0) * 1_000_003 + int(pending[batch[0]][0][:12], 16)) % 2**63)
            with torch.inference_mode():
                seqs = model.generate(**enc, **kwargs)
            per_row = (time.monotonic() - t0) / len(batch)
            for j, (k, row) in enumerate(zip(batch, seqs[:, width:].tolist(), strict=True)):
                # A finished row is filled with pad (which may be EOS): keep what came before it.
                n = next((p for p, t in enumerate(row) if t in eos or t == pad), len(row))
                h = pending[k][0]
                self.stats["requests"] += 1
                deliver(
                    h,
                    ChatResult(
                        text=tok.decode(row[:n], skip_special_tokens=True).strip(),
                        finish_reason="length" if n >= cfg.max_tokens else "stop",
                        usage=Usage(prompt_tokens=int(enc["attention_mask"][j].sum()), completion_tokens=n),
                        latency_s=round(per_row, 4),
                        request_hash=h,
                        created_at=utcnow(),
                    ),
                )

    # -- vllm -------------------------------------------------------------------------------------
    def _run_vllm(self, pending: list[tuple[str, Messages, int]], deliver: Deliver) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise InputError(
                "provider 'vllm' needs the vllm package: pip install 'creed[vllm]' (on a GPU machine), "
                "or use provider: hf"
            ) from None
        from jobs.common.models import resolve_model

        cfg = self.cfg
        if self._vllm is None:
            self._vllm = LLM(
                model=resolve_model(cfg.model, cfg.revision), seed=cfg.seed or 0, dtype=cfg.dtype
            )
        # Chunks, so answers reach the cache (crash-safe progress) while the rest are generated.
        for start in range(0, len(pending), 1024):
            chunk = pending[start : start + 1024]
            params = [
                SamplingParams(
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    max_tokens=cfg.max_tokens,
                    seed=sample_seed(cfg, s),
                )
                for _, _, s in chunk
            ]
            t0 = time.monotonic()
            outs = self._vllm.chat([m for _, m, _ in chunk], sampling_params=params, use_tqdm=False)
            per_row = (time.monotonic() - t0) / max(len(chunk), 1)
            for (h, _, _), out in zip(chunk, outs, strict=True):
                o = out.outputs[0]
                self.stats["requests"] += 1
                deliver(
                    h,
                    ChatResult(
                        text=o.text.strip(),
                        finish_reason=o.finish_reason or "stop",
                        usage=Usage(
                            prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(o.token_ids)
                        ),
                        latency_s=round(per_row, 4),
                        request_hash=h,
                        created_at=utcnow(),
                    ),
                )


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]


def _parse_completion(resp: Any, h: str, attempts: int, t0: float) -> ChatResult | None:
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


def estimate_cost(prices: dict[str, float], prompt_tokens: int, completion_tokens: int) -> float:
    """USD for these tokens at ``prices`` (USD per 1M tokens, keys ``input`` and ``output``)."""
    return (prompt_tokens * prices.get("input", 0.0) + completion_tokens * prices.get("output", 0.0)) / 1e6
