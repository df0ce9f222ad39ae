"""The train stage's wiring: read the mix, check it, fine-tune with TRL's ``SFTTrainer``, copy
checkpoints to the store as they are written, resume from the newest one, upload the result.

Heavy imports (torch, transformers, trl, peft) live inside functions so that ``--help`` is instant.

Precision: bf16 autocast on a GPU that supports it, fp32 on CPU. LoRA loads the frozen base in the
training dtype (bf16 on GPU); full fine-tuning keeps fp32 master weights under bf16 autocast.

Several GPUs: when more than one GPU is visible and the process is not already a distributed worker,
the job relaunches itself through ``accelerate launch`` (DDP; with ``fsdp: true`` the model is sharded
with FSDP full_shard instead, for models that do not fit one GPU). ``batch_size`` stays per device,
so the effective batch is ``batch_size x grad_accum x GPUs``. For 1B-8B bases on 80 GB cards:

- LoRA, 1B-3B: one GPU, bf16, batch_size 16-32 at max_seq_len 512-1024; no gradient checkpointing.
- LoRA, 7B-8B: one GPU, bf16, batch_size 8, gradient_checkpointing true if max_seq_len > 1024.
- Full fine-tuning, 1B-3B: one GPU (fp32 masters + Adam need ~16 bytes/parameter) or DDP.
- Full fine-tuning, 7B-8B: ``fsdp: true`` over 4-8 GPUs with gradient_checkpointing true.
- ``packing: true`` removes padding (higher tokens/s on short, uneven rows).

SIGTERM (preemption, eviction, node shutdown): training stops at the end of the current optimizer
step, saves a checkpoint to the store, and the job exits 75, so that Argo's retry resumes from it.
Kubernetes allows ``terminationGracePeriodSeconds`` (the workflow sets it from
``cluster.termination_grace_s``) for that; the periodic checkpoints (``save_steps``) are what a
SIGKILL falls back to.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.common import stage, store
from jobs.common.errors import CreedError, InputError, TransientError
from jobs.common.loaders import read_records
from jobs.common.logs import get_logger
from jobs.common.records import MixRow
from jobs.common.stage import StepResult
from jobs.llm import models
from jobs.train import core
from jobs.train.config import TrainConfig

METRICS = "metrics.json"
#: Store checkpoints kept while training (the newest is the one resumed from).
KEEP_CHECKPOINTS = 2


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def read_rows(uri: str, *, required: bool) -> list[MixRow]:
    if not uri or (not required and not store.exists(uri)):
        return []
    rows = core.check_rows(read_records(uri, MixRow, missing="run the mix step first"), uri)
    if required and not rows:
        raise InputError(f"{uri}: no training rows; the mix step wrote an empty file")
    return rows


def load_tokenizer(base: str, revision: str | None) -> Any:
    """The training tokenizer: right padding (the collator pads), a pad token."""
    try:
        return models.load_tokenizer(base, revision, padding_side="right")
    except (OSError, ValueError) as exc:  # no such hub repo/revision, no network, no tokenizer files
        raise InputError(
            f"model {base!r}: cannot load its tokenizer ({exc}); check the model path or hub id, the "
            "revision, HF_TOKEN for gated models, and HF_HUB_OFFLINE"
        ) from exc


def length_stats(tok: Any, examples: list[dict[str, str]], max_seq_len: int, source: str) -> dict[str, int]:
    prompts = tok([e["prompt"] for e in examples])["input_ids"]
    full = tok([e["prompt"] + e["completion"] for e in examples])["input_ids"]
    return core.check_lengths([len(p) for p in prompts], [len(f) + 1 for f in full], max_seq_len, source)


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------
def precision(cfg: TrainConfig) -> tuple[Any, bool, bool]:
    """(dtype to load the model in, bf16 autocast, fp16 autocast)."""
    import torch

    device = models.auto_device()
    dtype = models.torch_dtype(cfg.dtype, device)
    on_gpu = device == "cuda"
    bf16 = on_gpu and dtype == torch.bfloat16
    fp16 = on_gpu and dtype == torch.float16
    if cfg.method == "full" and on_gpu:
        return torch.float32, bf16, fp16  # fp32 master weights; autocast does the bf16 math
    return dtype, bf16, fp16


def build_trainer(
    cfg: TrainConfig,
    base: str,
    tok: Any,
    train_examples: list[dict[str, str]],
    val_examples: list[dict[str, str]],
    workdir: Path,
    callbacks: list[Any] | None = None,
) -> Any:
    """The ``SFTTrainer`` for this config: completion-only loss, EOS appended, LoRA or full."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(cfg.seed)
    dtype, bf16, fp16 = precision(cfg)
    revision = cfg.model.revision if base == cfg.model.path else None
    model = AutoModelForCausalLM.from_pretrained(base, revision=revision, dtype=dtype)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_targets,
            bias="none",
            task_type="CAUSAL_LM",
        )
    fsdp: dict[str, Any] = {}
    if cfg.fsdp and torch.cuda.device_count() > 1:
        fsdp = {"fsdp": "full_shard auto_wrap", "fsdp_config": {"use_orig_params": cfg.method == "lora"}}
    args = SFTConfig(
        output_dir=str(workdir / "trainer"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a fraction of the total steps
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_seq_len,
        packing=cfg.packing,
        completion_only_loss=True,
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not torch.cuda.is_available(),
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=KEEP_CHECKPOINTS,
        eval_strategy="steps" if val_examples else "no",
        eval_steps=cfg.save_steps,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_num_workers=0,
        **fsdp,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_examples),
        eval_dataset=Dataset.from_list(val_examples) if val_examples else None,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def fingerprint(cfg: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: everything that changes the training itself."""
    from jobs.common.manifest import config_hash

    ignore = {"experiment", "step", "manifest", "force", "keep_checkpoints", "logging_steps"}
    return config_hash(cfg.model_dump(mode="json", exclude=ignore))


def checkpoint_callback(prefix: str, mark: str) -> Any:
    """A callback that copies each checkpoint the trainer writes to ``prefix/checkpoint-N``.

    The completion mark (written last) holds ``mark``, the config fingerprint.
    """
    from transformers import TrainerCallback

    class CopyCheckpoints(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank has written its part (rng state, FSDP shards)
            if not state.is_world_process_zero or state.global_step >= state.max_steps:
                return  # the last step's model is uploaded as the result right after
            name = f"checkpoint-{state.global_step}"
            local = Path(args.output_dir) / name
            t0 = time.monotonic()
            target = store.join(prefix, name)
            n = store.upload_dir(local, target)
            store.write_text(store.join(target, core.COMPLETE_MARK), mark)  # last: the copy is whole
            names = {
                u[len(store.normalize(prefix).rstrip("/")) + 1 :].split("/")[0]
                for u in store.list_uris(prefix)
            }
            for old in core.stale_checkpoints(names, KEEP_CHECKPOINTS):
                store.delete(store.join(prefix, old, core.COMPLETE_MARK))  # first: never "complete" half
                store.delete_prefix(store.join(prefix, old))
            get_logger().info(
                "train.checkpoint_saved",
                step=state.global_step,
                uri=target,
                files=n,
                seconds=round(time.monotonic() - t0, 2),
            )

    return CopyCheckpoints()


def stop_callback() -> Any:
    """A callback that turns SIGTERM into "save a checkpoint, then stop" at the end of a step.

    Under DDP every rank must stop at the same step (a rank that steps on alone waits forever in its
    next all-reduce), so the ranks agree on the flag first."""
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if _any_rank(stage.stop_requested()):
                control.should_save = True
                control.should_training_stop = True
                if state.is_world_process_zero:
                    get_logger().warning("train.stopping", step=state.global_step, reason="SIGTERM")

    return StopOnSignal()


def _any_rank(flag: bool) -> bool:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def progress_callback() -> Any:
    """Training logs as structured ``train.progress`` events (the trainer prints Python dicts)."""
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            get_logger().info("train.progress", step=state.global_step, max_steps=state.max_steps, **logs)

    return LogProgress()


def fetch_checkpoint(prefix: str, workdir: Path, mark: str) -> tuple[int, Path] | None:
    """Download the newest complete checkpoint under ``prefix``; (step, local folder) or None.

    Checkpoints of a different config (a re-run with changed hyper-parameters) are deleted, not resumed.
    """
    if not prefix:
        return None
    found = core.newest_checkpoint(store.list_uris(prefix), store.normalize(prefix))
    if found is None:
        return None
    step, name = found
    theirs = store.read_text(store.join(prefix, name, core.COMPLETE_MARK))
    if theirs != mark:
        get_logger().warning("train.checkpoints_discarded", reason="config changed", step=step, uri=prefix)
        store.delete_prefix(prefix)
        return None
    local = workdir / "trainer" / name
    store.download_dir(store.join(prefix, name), local)
    (local / core.COMPLETE_MARK).unlink(missing_ok=True)
    return step, local


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------
# Multi-GPU relaunch
# ---------------------------------------------------------------------------------------------
def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def gpus_to_launch() -> int:
    """GPUs to relaunch over: 0 when already a distributed worker or with at most one GPU."""
    if "LOCAL_RANK" in os.environ or "ACCELERATE_PROCESS_ID" in os.environ:
        return 0
    import torch

    n = torch.cuda.device_count()
    return n if n > 1 else 0


def relaunch(cfg: TrainConfig, n_gpus: int, workdir: Path) -> dict[str, Any]:
    """Run this same job under ``accelerate launch`` on ``n_gpus`` GPUs; returns its metrics.

    The workers get the config without a manifest: the parent writes it once they are done.
    """
    child = cfg.model_dump(mode="json") | {"manifest": "", "force": True}
    cfg_path = workdir / "child-config.json"
    cfg_path.write_text(json.dumps(child))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n_gpus)]
    cmd += ["--num_machines", "1", "--dynamo_backend", "no"]  # precision: set by the trainer's args
    if not _cuda():
        cmd += ["--cpu"]  # (only the tests relaunch without GPUs)
    cmd += ["-m", "jobs.train", "--config", str(cfg_path)]
    get_logger().info("train.relaunch", gpus=n_gpus, fsdp=cfg.fsdp, cmd=" ".join(cmd))
    # SIGTERM is passed on to the launcher (and through it to the workers, which checkpoint and exit
    # 75); the parent waits for them rather than leaving them to be killed.
    with stage.deferred_stop():
        proc = subprocess.Popen(cmd)
        forwarded = False
        while (rc := proc.poll()) is None:
            if stage.stop_requested() and not forwarded:
                proc.send_signal(signal.SIGTERM)
                forwarded = True
            time.sleep(0.2)
    if stage.stop_requested():
        raise stage.Terminated(f"stopped by SIGTERM (workers exited {rc}); the newest checkpoint is kept")
    if rc == InputError.exit_code:
        raise InputError("the distributed workers rejected the config or data (see their log above)")
    if rc == TransientError.exit_code:
        raise TransientError("a distributed worker failed transiently; retry")
    if rc != 0:
        raise CreedError(f"accelerate launch exited with {rc}")
    metrics: dict[str, Any] = store.read_json(store.join(cfg.output, METRICS))
    return metrics


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
def run(cfg: TrainConfig) -> StepResult:
    log = get_logger()
    t_start = time.monotonic()
    train_rows = read_rows(cfg.train_data, required=True)
    val_rows = read_rows(cfg.val_data, required=False)
    train_examples = [core.to_example(r) for r in train_rows]
    val_examples = [core.to_example(r) for r in val_rows]

    base = models.resolve_model(cfg.model.path, cfg.model.revision)
    tok = load_tokenizer(base, cfg.model.revision if base == cfg.model.path else None)
    stats = length_stats(tok, train_examples, cfg.max_seq_len, cfg.train_data)
    log.info("train.data", val_rows=len(val_rows), **stats)

    inputs = [cfg.train_data] + ([cfg.val_data] if cfg.val_data else [])
    counts = {"train_rows": len(train_rows), "val_rows": len(val_rows)}
    workroot = os.environ.get("CREED_WORK_DIR") or None
    with tempfile.TemporaryDirectory(prefix="creed-train-", dir=workroot) as tmp:
        workdir = Path(tmp)
        n_gpus = gpus_to_launch()
        if n_gpus:
            metrics = relaunch(cfg, n_gpus, workdir)
        else:
            metrics = train(cfg, base, tok, train_examples, val_examples, workdir, stats, t_start)
    counts |= {"steps": int(metrics["global_step"]), "tokens_seen": int(metrics["tokens_seen"])}
    extra = {k: metrics[k] for k in ("final_loss", "val_loss", "tokens_per_second", "resumed_from_step")}
    return StepResult(inputs=inputs, outputs=[cfg.output], counts=counts, extra=extra)


def train(
    cfg: TrainConfig,
    base: str,
    tok: Any,
    train_examples: list[dict[str, str]],
    val_examples: list[dict[str, str]],
    workdir: Path,
    stats: dict[str, int],
    t_start: float,
) -> dict[str, Any]:
    """Train (resuming when the store has a checkpoint), upload the result; returns metrics."""
    import torch

    log = get_logger()
    mark = fingerprint(cfg)
    resumed = fetch_checkpoint(cfg.checkpoints, workdir, mark)
    if resumed:
        log.info("train.resume", step=resumed[0], checkpoint=str(resumed[1]))
    callbacks = [checkpoint_callback(cfg.checkpoints, mark)] if cfg.checkpoints else []
    callbacks.append(stop_callback())
    trainer = build_trainer(cfg, base, tok, train_examples, val_examples, workdir, callbacks)
    if not sys.stderr.isatty():  # containers: one JSON line per log step instead of printed dicts
        import datasets
        import transformers
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(progress_callback())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    log.info(
        "train.start",
        method=cfg.method,
        steps=core.expected_steps(
            len(train_examples),
            cfg.batch_size,
            cfg.grad_accum,
            cfg.epochs,
            cfg.max_steps,
            trainer.args.world_size,
        ),
        trainable_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    )
    t0 = time.monotonic()
    with stage.deferred_stop():  # SIGTERM: finish the step, save a checkpoint, then stop
        trainer.train(resume_from_checkpoint=str(resumed[1]) if resumed else None)
    train_seconds = time.monotonic() - t0
    if stage.stop_requested():
        where = f"checkpoint-{trainer.state.global_step} in {cfg.checkpoints}" if cfg.checkpoints else "none"
        shutil.rmtree(workdir / "trainer", ignore_errors=True)
        raise stage.Terminated(f"stopped by SIGTERM at step {trainer.state.global_step}; checkpoint: {where}")
    if val_examples:
        trainer.evaluate()
    state = trainer.state
    session_tokens = state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0)
    metrics = core.summarize(
        state.log_history,
        tokens_seen=int(state.num_input_tokens_seen),
        session_tokens=int(session_tokens),
        train_seconds=train_seconds,
        wall_seconds=time.monotonic() - t_start,
        peak_memory_bytes=peak_memory_bytes(),
        global_step=int(state.global_step),
        resumed_from=resumed[0] if resumed else None,
        extra={
            "method": cfg.method,
            "model": cfg.model.model_dump(),
            "condition": cfg.condition,
            "seed": cfg.seed,
            "device": str(trainer.args.device),
            "world_size": trainer.args.world_size,
            "precision": "bf16" if trainer.args.bf16 else ("fp16" if trainer.args.fp16 else "fp32"),
            "data": stats,
        },
    )
    if trainer.is_world_process_zero():
        final = workdir / "final"
        trainer.save_model(str(final))
        tok.save_pretrained(str(final))
        (final / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        n = store.upload_dir(final, cfg.output)
        if cfg.checkpoints and not cfg.keep_checkpoints:
            store.delete_prefix(cfg.checkpoints)  # only a resume needs them, and the run is done
        log.info(
            "train.done",
            output=cfg.output,
            files=n,
            steps=metrics["global_step"],
            final_loss=metrics["final_loss"],
            val_loss=metrics["val_loss"],
            tokens_per_second=metrics["tokens_per_second"],
        )
    shutil.rmtree(workdir / "trainer", ignore_errors=True)
    return metrics
