"""The mix step's wiring: read the kept rows, check there are enough, sample, write."""

from __future__ import annotations

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.loaders import read_records
from jobs.common.logs import get_logger
from jobs.common.records import Generation
from jobs.common.stage import StepResult
from jobs.mix import core
from jobs.mix.config import MixConfig


def run(cfg: MixConfig) -> StepResult:
    log = get_logger()
    rows = {
        ds: read_records(src.uri, Generation, missing="run its filter step first")
        for ds, src in sorted(cfg.sources.items())
    }
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
            + "\n  generate more (more prompts, personas or samples), or train on fewer examples per arm"
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
