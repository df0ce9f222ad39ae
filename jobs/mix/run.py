"""The mix step's wiring: read the kept rows, check there are enough, sample, write."""

from __future__ import annotations

import json

from pydantic import ValidationError

from jobs.common import store
from jobs.common.errors import InputError, StoreError
from jobs.common.logs import get_logger
from jobs.common.records import Generation
from jobs.common.stage import StepResult
from jobs.mix import core
from jobs.mix.config import MixConfig


def read_kept(uri: str) -> list[Generation]:
    try:
        text = store.read_text(uri)
    except StoreError as exc:
        raise InputError(
            f"{uri}: cannot read the filtered dataset ({exc}); run its filter step first"
        ) from exc
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append(Generation.model_validate(json.loads(line)))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise InputError(
                    f"{uri}:{lineno}: not a Generation record ({str(exc).splitlines()[0]})"
                ) from exc
    return out


def run(cfg: MixConfig) -> StepResult:
    log = get_logger()
    rows = {ds: read_kept(src.uri) for ds, src in sorted(cfg.sources.items())}
    plan = core.needs(
        cfg.examples,
        cfg.val_fraction,
        {ds: s.fraction for ds, s in cfg.sources.items()},
        {ds: len(r) for ds, r in rows.items()},
    )
    short = core.shortfalls(plan)
    if short:
        raise InputError(
            f"mix {cfg.condition}: not enough data for {cfg.examples} examples "
            f"(+{round(cfg.examples * cfg.val_fraction)} val):\n  "
            + "\n  ".join(short)
            + "\n  generate more (more prompts, personas or samples) or lower train.examples"
        )
    train, val, comp = core.mix(rows, plan, cfg.seed, cfg.condition)
    store.write_jsonl(cfg.train, train)
    store.write_jsonl(cfg.val, val)
    for ds, c in comp.items():
        log.info("mix.source", dataset=ds, fraction=cfg.sources[ds].fraction, **c)
    return StepResult(
        inputs=[s.uri for _, s in sorted(cfg.sources.items())],
        outputs=[cfg.train, cfg.val],
        counts={"train": len(train), "val": len(val)} | {f"train.{ds}": c["train"] for ds, c in comp.items()},
        extra={
            "condition": cfg.condition,
            "composition": {
                ds: {"fraction": cfg.sources[ds].fraction, "uri": cfg.sources[ds].uri} | c
                for ds, c in comp.items()
            },
            "seed": cfg.seed,
        },
    )
