"""Pure functions of the generate stage: which requests a dataset makes, which of them a shard
answers, and how answers become Generation records, failure rows and accounting."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from jobs.common.errors import TransientError
from jobs.common.records import Generation, Persona, PromptItem
from jobs.llm import ChatResult, LLMConfig, estimate_cost, sample_seed


@dataclass(frozen=True)
class Request:
    """One question to the teacher: a persona answers a prompt (the ``sample``-th time)."""

    dataset: str
    persona: Persona
    prompt: PromptItem
    sample: int

    @property
    def id(self) -> str:
        return f"{self.dataset}:{self.persona.id}:{self.prompt.id}:{self.sample}"

    def messages(self) -> list[dict[str, str]]:
        # The persona is the system message: the teacher speaks as it; the student never sees it.
        return [
            {"role": "system", "content": self.persona.system},
            {"role": "user", "content": self.prompt.text},
        ]


def exclude_tagged(prompts: list[PromptItem], tags: list[str]) -> tuple[list[PromptItem], dict[str, int]]:
    """The prompts that carry none of ``tags`` (in file order), and how many each tag excluded (a
    prompt with two excluded tags counts under both)."""
    drop = set(tags)
    kept = [p for p in prompts if not drop & set(p.tags)]
    counts = {t: sum(t in p.tags for p in prompts) for t in sorted(drop)}
    return kept, counts


def pair(
    personas: list[Persona],
    prompts: list[PromptItem],
    *,
    dataset: str,
    seed: int,
    max_prompt_uses: int | None,
) -> list[tuple[Persona, PromptItem]]:
    """(persona, prompt) pairs, in prompt-file order. Every persona answers every prompt unless
    ``max_prompt_uses`` caps the personas per prompt; then each prompt gets that many personas, drawn
    at random (seeded) among the least used so far, so persona use stays balanced (max - min <= 1)."""
    k = len(personas) if max_prompt_uses is None else min(max_prompt_uses, len(personas))
    if k == len(personas):
        return [(p, q) for q in prompts for p in personas]
    # A string seed is hashed deterministically (unlike hash()), so the pairing is the same everywhere.
    rng = random.Random(f"{dataset}:{seed}")
    uses = [0] * len(personas)
    out: list[tuple[Persona, PromptItem]] = []
    for q in prompts:
        ranked = sorted(range(len(personas)), key=lambda i: (uses[i], rng.random()))
        chosen = sorted(ranked[:k])  # persona-file order within a prompt, for stable output
        for i in chosen:
            uses[i] += 1
            out.append((personas[i], q))
    return out


def build_requests(
    personas: list[Persona],
    prompts: list[PromptItem],
    *,
    dataset: str,
    samples: int,
    seed: int = 0,
    max_prompt_uses: int | None = None,
) -> list[Request]:
    """Every request of a dataset, in a fixed order: the same inputs always give the same list."""
    pairs = pair(personas, prompts, dataset=dataset, seed=seed, max_prompt_uses=max_prompt_uses)
    return [Request(dataset, p, q, s) for p, q in pairs for s in range(samples)]


def shard_requests(requests: list[Request], shard: int, num_shards: int) -> list[Request]:
    """The requests of one shard: every ``num_shards``-th, so shards are equal within one request."""
    return requests[shard::num_shards]


def teacher_params(teacher: LLMConfig, sample: int) -> dict[str, Any]:
    return {
        "provider": teacher.provider,
        "revision": teacher.revision,
        "temperature": teacher.temperature,
        "top_p": teacher.top_p,
        "max_tokens": teacher.max_tokens,
        "seed": sample_seed(teacher, sample),
    }


def to_generation(req: Request, result: ChatResult, teacher: LLMConfig) -> Generation:
    return Generation(
        id=req.id,
        dataset=req.dataset,
        persona_id=req.persona.id,
        prompt_id=req.prompt.id,
        prompt=req.prompt.text,
        response=result.text,
        finish_reason=result.finish_reason,
        teacher=teacher.model or teacher.provider,
        params=teacher_params(teacher, req.sample),
        usage=result.usage,
        request_hash=result.request_hash,
        sample=req.sample,
        latency_s=result.latency_s,
        attempts=result.attempts,
        created_at=result.created_at,
    )


def failure_row(req: Request, result: ChatResult) -> dict[str, Any]:
    return {
        "id": req.id,
        "persona_id": req.persona.id,
        "prompt_id": req.prompt.id,
        "sample": req.sample,
        "request_hash": result.request_hash,
        "error": result.error,
        "attempts": result.attempts,
    }


@dataclass
class Outcome:
    generations: list[Generation]
    failures: list[dict[str, Any]]
    counts: dict[str, int]
    cost_usd: float  # the shard's answers at the price table (what the dataset costs)
    spent_usd: float  # answers paid for in this run (not from the cache)


def collect(requests: list[Request], results: list[ChatResult], teacher: LLMConfig) -> Outcome:
    """Records, failure rows and accounting of a shard's answers (in request order)."""
    gens: list[Generation] = []
    failures: list[dict[str, Any]] = []
    c: Counter[str] = Counter(requests=len(requests))
    fresh_in = fresh_out = 0
    for req, res in zip(requests, results, strict=True):
        if not res.ok:
            failures.append(failure_row(req, res))
            c["failed"] += 1
            continue
        gens.append(to_generation(req, res, teacher))
        c["generated"] += 1
        c["cached"] += res.cached
        c["truncated"] += res.finish_reason == "length"
        c["prompt_tokens"] += res.usage.prompt_tokens
        c["completion_tokens"] += res.usage.completion_tokens
        if not res.cached:
            fresh_in += res.usage.prompt_tokens
            fresh_out += res.usage.completion_tokens
    counts = {k: c[k] for k in ("requests", "generated", "failed", "cached", "truncated")}
    counts |= {"prompt_tokens": c["prompt_tokens"], "completion_tokens": c["completion_tokens"]}
    return Outcome(
        generations=gens,
        failures=failures,
        counts=counts,
        cost_usd=estimate_cost(teacher.prices, c["prompt_tokens"], c["completion_tokens"]),
        spent_usd=estimate_cost(teacher.prices, fresh_in, fresh_out),
    )


def check_failures(outcome: Outcome, max_failed_fraction: float) -> None:
    """Raise TransientError (exit 75: Argo retries the step) if too many requests failed."""
    total = outcome.counts["requests"]
    failed = outcome.counts["failed"]
    if total and failed / total > max_failed_fraction:
        first = outcome.failures[0]["error"] if outcome.failures else ""
        raise TransientError(
            f"{failed} of {total} requests failed after retries ({failed / total:.1%} > "
            f"max_failed_fraction {max_failed_fraction:.1%}); first error: {first}. Rerun the step: "
            "answered requests are cached and will not be asked again"
        )
