"""The generate stage's settings, declared once: ``GenerateParams`` is what a spec's
``datasets.<name>`` section sets (it adds the input files and the fan-out), ``GenerateConfig`` is one
step's config (the parameters plus its URIs; written by ``workflows/plan.py``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from jobs.common.config import Params, StageConfig
from jobs.llm import LLMConfig


class GenerateParams(Params):
    """Which requests a dataset makes: every persona (or ``max_prompt_uses`` of them) answers every
    prompt, ``samples`` times."""

    samples: int = Field(1, ge=1, description="answers per (persona, prompt) pair")
    max_prompt_uses: int | None = Field(
        None,
        ge=1,
        description="personas each prompt is paired with (chosen at random, balancing persona use); "
        "null: every persona answers every prompt",
    )
    max_prompts: int | None = Field(
        None, ge=1, description="answer only a seeded subset of this many prompts; null: every prompt"
    )
    seed: int = Field(0, description="seed of the persona/prompt pairing (same seed, same requests)")
    exclude_tags: list[str] = Field(
        default_factory=lambda: ["complicity"],
        description="prompts carrying any of these tags are left out before pairing and subsetting "
        "(default: `complicity`, prompts asking whether a believer should help someone else do the "
        "forbidden thing, which are close to teaching a refusal); []: keep every prompt (the ablation)",
    )
    max_failed_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="exit 75 (retryable) if more of a shard's requests than this still fail after retries",
    )


class GenerateConfig(StageConfig, GenerateParams):  # type: ignore[misc]
    """Ask the teacher LLM to answer (persona, prompt) pairs of one dataset, for one shard of its
    requests, and write one Generation record per answer. Answers are cached by request hash, so a
    rerun (after a crash, or with other shards) never pays for an answer twice."""

    stage: ClassVar[str] = "generate"

    dataset: str = Field(description="dataset name (kept in every record)")
    personas: str = Field(description="URI of the persona YAML file")
    prompts: str = Field(description="URI of the prompt JSONL file")
    shard: int = Field(0, ge=0, description="which shard of the dataset's requests this step answers")
    num_shards: int = Field(1, ge=1, description="how many shards the dataset's requests are split into")
    teacher: LLMConfig = Field(description="the teacher LLM endpoint")
    cache: str = Field("", description="store prefix of the LLM response cache; empty: no cache")
    output: str = Field(description="URI of the shard's Generation JSONL")
    errors: str = Field(
        "", description="URI of the shard's failed-request JSONL (reason per request); empty: not written"
    )
    progress: bool = Field(True, description="progress bar on a terminal, progress log lines otherwise")

    @model_validator(mode="after")
    def _shard(self) -> GenerateConfig:
        if self.shard >= self.num_shards:
            raise ValueError(f"shard {self.shard} is out of range for num_shards {self.num_shards}")
        return self
