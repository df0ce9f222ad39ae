"""The Hugging Face engine: batched generation with a transformers model, for the teacher and the
judge (``provider: hf``, chat models through their chat template) and for the evaluated base model
(the eval stage, raw prompts in creed's base-model format, stopping at a new turn).

Rows are batched by length (longest first, left padded, little padding); greedy decoding when the
temperature is 0, whose output does not depend on the batching; a finished row is cut at its EOS (or
pad) and at the first stop string.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from jobs.common.errors import InputError
from jobs.common.prompt_format import cut_at_stop
from jobs.common.records import Usage, utcnow
from jobs.llm.config import LLMConfig
from jobs.llm.models import eos_token_ids, load_for_inference
from jobs.llm.request import ChatResult, Completion, Deliver, Pending, Sampling

#: (prompt index, sample index, completion) of every row of a finished batch, and the batch's seconds.
OnBatch = Callable[[list[tuple[int, int, Completion]], float], None]


def _stop_window(stop: Sequence[str]) -> int:
    # Tokens are at least one byte, so the tail of this many tokens always holds a whole stop string.
    return max((len(s.encode()) for s in stop), default=0) + 2


def stop_criteria(tokenizer: Any, prompt_len: int, stop: Sequence[str]) -> Any:
    """A StoppingCriteria that ends a row once its generated text contains a stop string.

    Only the generated part is read, and only its last few tokens, so the check costs the same at
    every step."""
    import torch
    from transformers import StoppingCriteria

    window = _stop_window(stop)

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
            tail = input_ids[:, prompt_len:][:, -window:].tolist()
            texts = tokenizer.batch_decode(tail, skip_special_tokens=True)
            hits = [any(s in t for s in stop) for t in texts]
            return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    return StopOnStrings()


def finish(raw: str, *, hit_eos: bool, tokens: int, prompt_tokens: int, stop: Sequence[str]) -> Completion:
    """A completion cut at its first stop string; ``stop`` when EOS or a stop string ended it."""
    text, cut = cut_at_stop(raw, stop) if stop else (raw.strip(), False)
    return Completion(
        text=text,
        finish_reason="stop" if (cut or hit_eos) else "length",
        prompt_tokens=prompt_tokens,
        tokens=tokens,
    )


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    sampling: Sampling,
    *,
    samples: int = 1,
    batch_size: int = 16,
    add_special_tokens: bool = True,
    on_batch: OnBatch | None = None,
) -> list[list[Completion]]:
    """``samples`` completions per prompt, ``batch_size`` sequences at a time."""
    import torch
    from transformers import StoppingCriteriaList

    if tokenizer.padding_side != "left":
        raise ValueError("batched generation needs a left-padding tokenizer (padding_side='left')")
    greedy = sampling.temperature == 0
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    lengths = [
        len(ids) for ids in tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    ]
    # One sequence per (prompt, sample); longest first, so a batch's padding is small.
    order = sorted(
        ((i, s) for i in range(len(prompts)) for s in range(samples)), key=lambda p: -lengths[p[0]]
    )
    out: list[list[Completion | None]] = [[None] * samples for _ in prompts]
    kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": pad}
    if greedy:
        kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    else:
        kwargs |= {
            "do_sample": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": 0,
        }
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        t0 = time.monotonic()
        enc = tokenizer(
            [prompts[i] for i, _ in batch],
            return_tensors="pt",
            padding=True,
            add_special_tokens=add_special_tokens,
        ).to(device)
        width = enc["input_ids"].shape[1]
        extra: dict[str, Any] = {}
        if sampling.stop:
            extra["stopping_criteria"] = StoppingCriteriaList(
                [stop_criteria(tokenizer, width, sampling.stop)]
            )
        with torch.inference_mode():
            seqs = model.generate(**enc, **kwargs, **extra)
        done: list[tuple[int, int, Completion]] = []
        for j, ((i, s), row) in enumerate(zip(batch, seqs[:, width:].tolist(), strict=True)):
            # A finished row is filled with pad (which may be EOS): keep what came before it.
            n = next((k for k, t in enumerate(row) if t in eos or t == pad), len(row))
            hit_eos = n < len(row) and row[n] in eos
            raw = tokenizer.decode(row[:n], skip_special_tokens=True)
            c = finish(
                raw,
                hit_eos=hit_eos,
                tokens=n,
                prompt_tokens=int(enc["attention_mask"][j].sum()),
                stop=sampling.stop,
            )
            out[i][s] = c
            done.append((i, s, c))
        if on_batch is not None:
            on_batch(done, time.monotonic() - t0)
    return [[c for c in row if c is not None] for row in out]


class HFProvider:
    """``provider: hf``: a local chat model (teacher or judge) through its chat template."""

    def __init__(self, cfg: LLMConfig, stats: Counter[str]) -> None:
        self.cfg, self.stats = cfg, stats
        self._loaded: tuple[Any, Any] | None = None

    def answer(self, pending: list[Pending], deliver: Deliver) -> None:
        cfg = self.cfg
        if self._loaded is None:
            self._loaded = load_for_inference(cfg.model, cfg.revision, dtype=cfg.dtype)
        model, tok = self._loaded
        if not getattr(tok, "chat_template", None):
            raise InputError(
                f"{cfg.model}: the tokenizer has no chat template; the hf provider needs a chat "
                "(instruct) model as teacher or judge"
            )
        texts = [
            tok.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False) for p in pending
        ]

        def on_batch(done: list[tuple[int, int, Completion]], seconds: float) -> None:
            for i, _, c in done:
                h = pending[i].hash
                self.stats["requests"] += 1
                deliver(
                    h,
                    ChatResult(
                        text=c.text,
                        finish_reason=c.finish_reason,
                        usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.tokens),
                        latency_s=round(seconds / len(done), 4),
                        request_hash=h,
                        created_at=utcnow(),
                    ),
                )

        sampling = Sampling(
            temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed
        )
        # The chat template already holds the special tokens (BOS) the model expects.
        generate(
            model,
            tok,
            texts,
            sampling,
            batch_size=cfg.concurrency,
            add_special_tokens=False,
            on_batch=on_batch,
        )

    def close(self) -> None:
        self._loaded = None
