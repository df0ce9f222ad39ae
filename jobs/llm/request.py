"""What a generation request is and what comes back: the request's identity (``request_hash``), the
answer to one chat request (``ChatResult``), the sampling settings and the raw completions of the
local engines (``Sampling``, ``Completion``), and the cost of tokens."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from jobs.common.records import Usage
from jobs.llm.config import LLMConfig

Messages = list[dict[str, str]]

#: Bump when the meaning of a cached answer changes; old entries then stop matching.
HASH_VERSION = 1


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


@dataclass(frozen=True)
class Pending:
    """A request still to be answered: its hash, its messages and its sample index."""

    hash: str
    messages: Messages
    sample: int


#: Called by a provider with each answer as it arrives (request hash, result).
Deliver = Callable[[str, ChatResult], None]


class Provider(Protocol):
    """One way of answering chat requests (openai, hf, vllm, mock): ``answer`` calls ``deliver`` once
    per pending request, as each answer arrives; it raises ``InputError`` only for failures that no
    retry can fix (a bad key, an unknown model) and delivers every other failure as an error result."""

    def answer(self, pending: list[Pending], deliver: Deliver) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Sampling:
    """How a local engine samples: greedy when ``temperature`` is 0; generation ends at EOS, after
    ``max_tokens`` new tokens, or where the text reaches one of ``stop`` (cut off there)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """One generated text of a local engine: ``finish_reason`` is ``stop`` (EOS or a stop string) or
    ``length`` (``max_tokens`` reached)."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    tokens: int = 0


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


def estimate_cost(prices: dict[str, float], prompt_tokens: int, completion_tokens: int) -> float:
    """USD for these tokens at ``prices`` (USD per 1M tokens, keys ``input`` and ``output``)."""
    return (prompt_tokens * prices.get("input", 0.0) + completion_tokens * prices.get("output", 0.0)) / 1e6
