"""Pure pieces of the train stage: rows → prompt/completion examples, length checks, checkpoint
bookkeeping and the metrics summary. No torch, no I/O: ``run.py`` does the wiring."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from jobs.common.errors import InputError
from jobs.common.prompt_format import ASSISTANT, format_completion, format_prompt
from jobs.common.records import MixRow

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Written last into a store checkpoint folder: a checkpoint without it was cut short by a kill.
COMPLETE_MARK = "_complete"


def check_rows(rows: Sequence[MixRow], source: str) -> list[MixRow]:
    """Every row needs a prompt and a completion; errors name ``source`` and the row."""
    for i, row in enumerate(rows, 1):
        if not row.prompt.strip() or not row.completion.strip():
            raise InputError(f"{source}: row {i}: empty prompt or completion; regenerate the mix")
    return list(rows)


def to_example(row: MixRow) -> dict[str, str]:
    """The prompt/completion pair in the shared base-model format.

    Mix writes rows already formatted; raw user text (no trailing ``Assistant:``) is formatted here,
    so that train and eval always see the same template.
    """
    prompt = row.prompt if row.prompt.rstrip().endswith(ASSISTANT) else format_prompt(row.prompt)
    completion = row.completion if row.completion.startswith(" ") else format_completion(row.completion)
    return {"prompt": prompt.rstrip(), "completion": completion.rstrip()}


def check_lengths(
    prompt_lens: Sequence[int], total_lens: Sequence[int], max_seq_len: int, source: str
) -> dict[str, int]:
    """Count rows cut by ``max_seq_len``; fail when no row keeps a single completion token.

    ``total_lens`` include the EOS the trainer appends. A row whose prompt alone fills ``max_seq_len``
    contributes no loss (the trainer drops it).
    """
    if not total_lens:
        raise InputError(f"{source}: no training rows; check the mix step's output")
    kept = sum(1 for p in prompt_lens if p < max_seq_len)
    if kept == 0:
        raise InputError(
            f"{source}: max_seq_len={max_seq_len} is too small for any row (the shortest prompt has "
            f"{min(prompt_lens)} tokens); raise max_seq_len"
        )
    return {
        "rows": len(total_lens),
        "rows_truncated": sum(1 for t in total_lens if t > max_seq_len),
        "rows_without_completion": len(total_lens) - kept,
        "max_row_tokens": max(total_lens),
    }


def expected_steps(
    n_rows: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int, world_size: int = 1
) -> int:
    """Optimizer steps the run will take (unpacked data; as the HF Trainer counts them)."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(n_rows / (batch_size * world_size))
    per_epoch = max(batches // grad_accum, 1)
    return max(math.ceil(per_epoch * epochs), 1)


def checkpoint_step(name: str) -> int | None:
    m = CHECKPOINT_RE.match(name)
    return int(m.group(1)) if m else None


def newest_checkpoint(uris: Iterable[str], prefix: str) -> tuple[int, str] | None:
    """The newest complete checkpoint under ``prefix``: (step, folder name), or None.

    A checkpoint counts only when its completion mark is present: a job killed while copying one
    leaves a folder that must not be resumed from.
    """
    base = prefix.rstrip("/") + "/"
    complete: dict[int, str] = {}
    for u in uris:
        if not u.startswith(base):
            continue
        parts = u[len(base) :].split("/")
        if len(parts) == 2 and parts[1] == COMPLETE_MARK:
            step = checkpoint_step(parts[0])
            if step is not None:
                complete[step] = parts[0]
    if not complete:
        return None
    step = max(complete)
    return step, complete[step]


def stale_checkpoints(names: Iterable[str], keep: int) -> list[str]:
    """Checkpoint folder names to delete so that only the newest ``keep`` remain."""
    steps = sorted({s for n in names if (s := checkpoint_step(n)) is not None})
    return [f"checkpoint-{s}" for s in steps[: max(len(steps) - keep, 0)]]


def summarize(
    log_history: Sequence[dict[str, Any]],
    *,
    tokens_seen: int,
    session_tokens: int,
    train_seconds: float,
    wall_seconds: float,
    peak_memory_bytes: int,
    global_step: int,
    resumed_from: int | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json: the loss curve, val losses and throughput of one training run."""
    curve = [
        {
            "step": int(h["step"]),
            "loss": float(h["loss"]),
            "lr": h.get("learning_rate"),
            "epoch": h.get("epoch"),
        }
        for h in log_history
        if "loss" in h and "step" in h
    ]
    val = [{"step": int(h["step"]), "loss": float(h["eval_loss"])} for h in log_history if "eval_loss" in h]
    return {
        "global_step": global_step,
        "resumed_from_step": resumed_from,
        "loss_curve": curve,
        "first_loss": curve[0]["loss"] if curve else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "val_loss": val[-1]["loss"] if val else None,
        "val_curve": val,
        "tokens_seen": tokens_seen,
        "tokens_per_second": session_tokens / train_seconds if train_seconds > 0 else None,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "peak_memory_bytes": peak_memory_bytes,
        **(extra or {}),
    }
