"""The configuration of an LLM endpoint (teacher or judge), declared once: the spec's `teacher:` and
`judge:` sections and the stages' configs are this class."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LLMConfig(BaseModel):
    """An LLM endpoint: the teacher that writes training data, or the judge that labels refusals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["openai", "hf", "vllm", "mock"] = Field(
        "openai",
        description="openai: any OpenAI-compatible server; hf/vllm: a local model; mock: offline echo",
    )
    model: str = Field("", description="model id (hub id, local folder, or the server's model name)")
    revision: str | None = Field(None, description="pinned model revision (hf/vllm)")
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://localhost:8000/v1"
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable that holds the API key")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    concurrency: int = Field(8, ge=1, description="requests in flight at once (batch size for hf)")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(5, ge=0, description="retries of a transient failure (429, 5xx, timeout)")
    seed: int | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="weights dtype of a local model (hf/vllm); bfloat16 is about 2x faster on CPUs with AVX512-BF16",
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="USD per 1M tokens: {'input': x, 'output': y}, for the cost estimate",
    )
