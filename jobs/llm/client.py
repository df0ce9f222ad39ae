"""The one client of the generation layer: many chat requests in, one ``ChatResult`` per request out,
in order, for the teacher (generate), the judge (filter, eval) and any other role.

It does what every provider needs once: identical requests are sent once; answers come from the
response cache when they can (``jobs.llm.cache``) and go into it as they arrive; one progress display;
token totals. The providers (``openai``, ``hf``, ``vllm``, ``mock``, one module each) only answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from jobs.common.errors import InputError
from jobs.llm.cache import CacheWriter, ResponseCache
from jobs.llm.config import LLMConfig
from jobs.llm.progress import Progress
from jobs.llm.request import ChatResult, Messages, Pending, Provider, request_hash


def make_provider(
    cfg: LLMConfig, stats: Counter[str], *, backoff_s: float = 0.5, max_backoff_s: float = 30.0
) -> Provider:
    if cfg.provider == "openai":
        from jobs.llm.openai import OpenAIProvider

        return OpenAIProvider(cfg, stats, backoff_s=backoff_s, max_backoff_s=max_backoff_s)
    if cfg.provider == "mock":
        from jobs.llm.mock import MockProvider

        return MockProvider(cfg, stats)
    if cfg.provider == "hf":
        from jobs.llm.hf import HFProvider

        return HFProvider(cfg, stats)
    if cfg.provider == "vllm":
        from jobs.llm.vllm import VLLMProvider

        return VLLMProvider(cfg, stats)
    raise InputError(f"unknown LLM provider {cfg.provider!r}")  # LLMConfig's Literal already refuses it


class LLMClient:
    """Send many chat requests to one LLM endpoint, with caching, retries and bounded concurrency."""

    def __init__(
        self,
        cfg: LLMConfig,
        cache: str | None = None,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        if cfg.provider != "mock" and not cfg.model.strip():
            raise InputError(f"LLM config: provider '{cfg.provider}' needs a model (set model: ...)")
        self.cfg = cfg
        self.cache = ResponseCache(cache) if cache else None
        #: Totals over this client's life: requests sent, retries, errors, cache hits, tokens.
        self.stats: Counter[str] = Counter()
        self.provider = make_provider(cfg, self.stats, backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        self._writer: CacheWriter | None = None

    @property
    def name(self) -> str:
        return f"{self.cfg.provider}:{self.cfg.model}" if self.cfg.model else self.cfg.provider

    def close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        finally:
            self.provider.close()

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
            Pending(h, requests[idx[0]][0], requests[idx[0]][1]) for h, idx in wanted.items() if h not in hits
        ]
        answered = len(requests) - sum(len(wanted[p.hash]) for p in pending)
        bar = Progress(len(requests), initial=answered, enabled=progress, what=self.name)
        if self.cache is not None and pending and self._writer is None:
            self._writer = self.cache.writer()
        writer = self._writer

        def deliver(h: str, result: ChatResult) -> None:
            if result.ok:
                self.stats["prompt_tokens"] += result.usage.prompt_tokens
                self.stats["completion_tokens"] += result.usage.completion_tokens
                if writer is not None:
                    writer.put(result)  # an append (local) or a queued PUT (S3): never blocks long
            else:
                self.stats["errors"] += 1
            for i in wanted[h]:
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
            bar.update(len(wanted[h]), errors=0 if result.ok else 1)

        try:
            if pending:
                self.provider.answer(pending, deliver)
        finally:
            bar.close()
            if writer is not None:
                writer.flush()  # every answer received is persisted before we return (or raise)
        return [r for r in results if r is not None]

    def _lookup(self, hashes: list[str]) -> dict[str, ChatResult]:
        if self.cache is None or not hashes:
            return {}
        return self.cache.get_many(hashes)
