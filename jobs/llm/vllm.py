"""The vLLM engine (offline ``vllm.LLM``, GPU images only): the teacher or judge (``provider: vllm``,
chat models through their chat template) and the evaluated model (eval's ``engine: vllm``: one engine
on the base model with the trained LoRA adapter served through ``LoRARequest``, or a full fine-tuned
model folder as the engine's model)."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.common.errors import InputError
from jobs.common.records import Usage, utcnow
from jobs.llm.config import LLMConfig
from jobs.llm.models import ADAPTER_CONFIG, fetch_weights, resolve_model
from jobs.llm.request import ChatResult, Completion, Deliver, Pending, Sampling, sample_seed

#: Requests per ``generate`` call of the provider: answers reach the cache (crash-safe progress) while
#: the rest are generated.
CHUNK = 1024
#: The only maximum LoRA ranks vLLM accepts for an engine.
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise InputError(
            "vLLM is not installed here: it runs in the GPU images (pip install 'creed[vllm]'); "
            "or use provider: hf / eval.engine: hf"
        ) from None
    return vllm


class VLLMEngine:
    """An offline engine; ``weights`` (a train output: LoRA adapter or full model) is optional."""

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        *,
        weights: str | None = None,
        seed: int = 0,
        dtype: str = "auto",
    ) -> None:
        vllm = _vllm()
        base = resolve_model(model, revision)
        self._tmp = tempfile.TemporaryDirectory(prefix="creed-vllm-")
        wdir = fetch_weights(weights, Path(self._tmp.name)) if weights else None
        adapter = wdir is not None and (wdir / ADAPTER_CONFIG).is_file()
        args: dict[str, Any] = {"seed": seed, "dtype": dtype}
        self.lora: Any = None
        if wdir is not None and adapter:
            from vllm.lora.request import LoRARequest

            rank = int(json.loads((wdir / ADAPTER_CONFIG).read_text()).get("r", 16))
            max_rank = next((r for r in _LORA_RANKS if r >= rank), rank)
            args |= {"enable_lora": True, "max_lora_rank": max_rank, "max_loras": 1}
            self.lora = LoRARequest("adapter", 1, str(wdir))
        model_dir = str(wdir) if wdir is not None and not adapter else base
        hub_revision = revision if model_dir == base and not Path(base).is_dir() else None
        self.llm = vllm.LLM(model=model_dir, revision=hub_revision, **args)

    def chat_prompts(self, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
        tok = self.llm.get_tokenizer()
        return [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in conversations]

    def generate(
        self,
        prompts: Sequence[str],
        sampling: Sampling,
        *,
        samples: int = 1,
        seeds: Sequence[int | None] | None = None,
    ) -> list[list[Completion]]:
        """``samples`` completions per prompt; ``seeds`` gives each prompt its own sampler seed."""
        vllm = _vllm()
        greedy = sampling.temperature == 0

        def params(seed: int | None) -> Any:
            return vllm.SamplingParams(
                n=samples,
                temperature=sampling.temperature,
                top_p=1.0 if greedy else sampling.top_p,
                max_tokens=sampling.max_tokens,
                stop=list(sampling.stop) or None,
                seed=seed,
            )

        per_prompt = [params(s) for s in seeds] if seeds is not None else params(sampling.seed)
        outs = self.llm.generate(list(prompts), per_prompt, lora_request=self.lora, use_tqdm=False)
        # vLLM reports "stop" for EOS and for a stop string (already removed from the text).
        return [
            [
                Completion(
                    text=c.text.strip(),
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                    prompt_tokens=len(o.prompt_token_ids or []),
                    tokens=len(c.token_ids),
                )
                for c in o.outputs
            ]
            for o in outs
        ]

    def close(self) -> None:
        self.llm = None
        self._tmp.cleanup()


class VLLMProvider:
    """``provider: vllm``: a chat model (teacher or judge) in an offline vLLM engine."""

    def __init__(self, cfg: LLMConfig, stats: Counter[str]) -> None:
        self.cfg, self.stats = cfg, stats
        self._engine: VLLMEngine | None = None

    def answer(self, pending: list[Pending], deliver: Deliver) -> None:
        cfg = self.cfg
        if self._engine is None:
            self._engine = VLLMEngine(cfg.model, cfg.revision, seed=cfg.seed or 0, dtype=cfg.dtype)
        engine = self._engine
        sampling = Sampling(
            temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed
        )
        for start in range(0, len(pending), CHUNK):
            chunk = pending[start : start + CHUNK]
            t0 = time.monotonic()
            prompts = engine.chat_prompts([p.messages for p in chunk])
            outs = engine.generate(prompts, sampling, seeds=[sample_seed(cfg, p.sample) for p in chunk])
            per_row = (time.monotonic() - t0) / max(len(chunk), 1)
            for p, (c,) in zip(chunk, outs, strict=True):
                self.stats["requests"] += 1
                deliver(
                    p.hash,
                    ChatResult(
                        text=c.text,
                        finish_reason=c.finish_reason,
                        usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.tokens),
                        latency_s=round(per_row, 4),
                        request_hash=p.hash,
                        created_at=utcnow(),
                    ),
                )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
