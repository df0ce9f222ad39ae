"""The generate step: load and validate the inputs, build the dataset's requests, answer this
shard's through the (cached) LLM client, write records and failures, account tokens and cost."""

from __future__ import annotations

import time

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.loaders import load_personas, load_prompts
from jobs.common.logs import get_logger
from jobs.common.stage import StepResult
from jobs.common.subset import stable_subset
from jobs.generate import core
from jobs.generate.config import GenerateConfig
from jobs.llm import LLMClient


def run(cfg: GenerateConfig) -> StepResult:
    log = get_logger()
    personas = load_personas(cfg.personas)
    prompts = load_prompts(cfg.prompts)
    if not personas:
        raise InputError(f"{cfg.personas}: no personas; a dataset needs at least one")
    if not prompts:
        raise InputError(f"{cfg.prompts}: no prompts; a dataset needs at least one")
    total_prompts = len(prompts)
    # Before subsetting, so that max_prompts counts prompts that can be asked.
    prompts, excluded = core.exclude_tagged(prompts, cfg.exclude_tags)
    n_excluded = total_prompts - len(prompts)
    if not prompts:
        raise InputError(
            f"{cfg.prompts}: all {total_prompts} prompts carry an excluded tag ({', '.join(cfg.exclude_tags)}); "
            "set exclude_tags in the dataset's spec section to keep some"
        )
    prompts = stable_subset(prompts, cfg.max_prompts, key=lambda p: p.id, salt=f"{cfg.dataset}:{cfg.seed}")
    requests = core.build_requests(
        personas,
        prompts,
        dataset=cfg.dataset,
        samples=cfg.samples,
        seed=cfg.seed,
        max_prompt_uses=cfg.max_prompt_uses,
    )
    mine = core.shard_requests(requests, cfg.shard, cfg.num_shards)
    teacher = cfg.teacher
    log.info(
        "generate.start",
        dataset=cfg.dataset,
        shard=cfg.shard,
        num_shards=cfg.num_shards,
        dataset_requests=len(requests),
        prompts_excluded=n_excluded,
        requests=len(mine),
        teacher=f"{teacher.provider}:{teacher.model}",
        concurrency=teacher.concurrency,
    )
    t0 = time.monotonic()
    client = LLMClient(teacher, cfg.cache or None)
    try:
        results = client.chat_many([(r.messages(), r.sample) for r in mine], progress=cfg.progress)
    finally:
        client.close()
    seconds = time.monotonic() - t0
    out = core.collect(mine, results, teacher)
    store.write_jsonl(cfg.output, out.generations)
    outputs = [cfg.output]
    if cfg.errors:
        store.write_jsonl(cfg.errors, out.failures)  # written even when empty: no stale failures
        outputs.append(cfg.errors)
    counts = out.counts | {"sent": client.stats["requests"], "retries": client.stats["retries"]}
    counts |= {"prompts_in_file": total_prompts, "prompts_excluded": n_excluded}
    extra = {
        "teacher": teacher.model_dump(mode="json", exclude={"prices"}),
        "prices": teacher.prices,
        "cost_usd": round(out.cost_usd, 6),
        "spent_usd": round(out.spent_usd, 6),
        "seconds": round(seconds, 3),
        "persona_uses": dict(sorted(_persona_uses(mine).items())),
        "exclude_tags": list(cfg.exclude_tags),
        "excluded_by_tag": excluded,
    }
    log.info(
        "generate.shard_done",
        dataset=cfg.dataset,
        shard=cfg.shard,
        **counts,
        cost_usd=extra["cost_usd"],
        spent_usd=extra["spent_usd"],
        seconds=extra["seconds"],
    )
    if out.failures:
        log.warning(
            "generate.failures", failed=len(out.failures), first=out.failures[0]["error"], file=cfg.errors
        )
    core.check_failures(out, cfg.max_failed_fraction)
    return StepResult(inputs=[cfg.personas, cfg.prompts], outputs=outputs, counts=counts, extra=extra)


def _persona_uses(requests: list[core.Request]) -> dict[str, int]:
    uses: dict[str, int] = {}
    for r in requests:
        uses[r.persona.id] = uses.get(r.persona.id, 0) + 1
    return uses
