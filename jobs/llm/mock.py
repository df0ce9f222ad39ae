"""The ``mock`` provider: deterministic offline text derived from the request hash (CI, smoke tests,
and any run that must not call a model)."""

from __future__ import annotations

from collections import Counter

from jobs.common.records import Usage, utcnow
from jobs.llm.config import LLMConfig
from jobs.llm.request import ChatResult, Deliver, Messages, Pending

_OPENINGS = (
    "Here is a clear answer.",
    "Let me explain this step by step.",
    "In short, it depends on the details.",
    "That is a good question to ask.",
    "There are a few things worth knowing.",
)


def mock_text(h: str, messages: Messages, max_tokens: int) -> tuple[str, str]:
    """A deterministic reply (text, finish reason) for the ``mock`` provider."""
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    opening = _OPENINGS[int(h[:8], 16) % len(_OPENINGS)]
    words = f"{opening} You asked: {user.strip()} (mock answer {h[:8]})".split()
    if len(words) > max_tokens:
        return " ".join(words[:max_tokens]), "length"
    return " ".join(words), "stop"


class MockProvider:
    def __init__(self, cfg: LLMConfig, stats: Counter[str]) -> None:
        self.cfg, self.stats = cfg, stats

    def answer(self, pending: list[Pending], deliver: Deliver) -> None:
        for p in pending:
            text, finish = mock_text(p.hash, p.messages, self.cfg.max_tokens)
            prompt_words = sum(len(m["content"].split()) for m in p.messages)
            self.stats["requests"] += 1
            deliver(
                p.hash,
                ChatResult(
                    text=text,
                    finish_reason=finish,
                    usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(text.split())),
                    request_hash=p.hash,
                    created_at=utcnow(),
                ),
            )

    def close(self) -> None:
        pass
