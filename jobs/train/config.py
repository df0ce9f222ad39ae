"""The train stage's settings, declared once: ``TrainParams`` (the hyper-parameters; the spec's
``train:`` section is these plus the models, seeds and arm size) and ``TrainConfig``, one step's
config (written by ``workflows/plan.py``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from jobs.common.config import Params, StageConfig
from jobs.common.records import ModelRef


class TrainParams(Params):
    """How every arm is trained (the same for every arm and seed)."""

    method: Literal["lora", "full"] = Field("lora", description="LoRA adapter or full fine-tuning")
    epochs: float = Field(1.0, gt=0, description="passes over the train rows (max_steps wins when > 0)")
    max_steps: int = Field(-1, description="optimizer steps; -1: from epochs")
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="fraction of steps with a linear warmup")
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1, description="rows per device per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_seq_len: int = Field(
        512, ge=2, description="tokens per row (prompt + completion + EOS); longer rows are cut"
    )
    packing: bool = Field(False, description="pack rows into max_seq_len sequences (no padding)")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations (less memory, ~30% slower)"
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: list[str] | str = Field(
        "all-linear", description="modules LoRA adapts: 'all-linear' or a list such as [q_proj, v_proj]"
    )
    save_steps: int = Field(200, ge=1, description="checkpoint (and copy to the store) every N steps")
    keep_checkpoints: bool = Field(False, description="keep store checkpoints after a successful run")
    logging_steps: int = Field(10, ge=1, description="steps between loss-curve points")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, fp32 on CPU"
    )
    fsdp: bool = Field(False, description="with several GPUs: shard the model (FSDP) instead of DDP")

    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("max_steps must be -1 (train for `epochs`) or a positive number of steps")
        return v

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, v: list[str] | str) -> list[str] | str:
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ValueError(
                "lora_targets is empty: use 'all-linear' or name modules such as [q_proj, v_proj]"
            )
        return v


class TrainConfig(StageConfig, TrainParams):  # type: ignore[misc]
    """Fine-tune a base model on a mix's prompt/completion rows (TRL SFT; loss on the completion only),
    with LoRA or full fine-tuning; checkpoints go to the store and a restarted job resumes from them."""

    stage: ClassVar[str] = "train"

    model: ModelRef
    condition: str = Field(description="the arm (mix condition) being trained; recorded in metrics")
    seed: int = Field(0, description="training seed (the unit of replication)")
    train_data: str = Field(description="URI of the mix's train.jsonl (MixRow per line)")
    val_data: str = Field("", description="URI of the mix's val.jsonl; empty or an empty file: no val loss")
    output: str = Field(description="the step folder: adapter or model, tokenizer and metrics.json go here")
    checkpoints: str = Field("", description="URI prefix for checkpoints; empty: no store checkpoints")

    @model_validator(mode="after")
    def _paths(self) -> TrainConfig:
        if not self.train_data.strip():
            raise ValueError("train_data is empty: give the URI of the mix's train.jsonl")
        if not self.output.strip():
            raise ValueError("output is empty: give the step folder URI")
        return self
