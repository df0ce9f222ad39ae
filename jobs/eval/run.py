"""The eval stage's wiring: load and check every set, generate with the shared engines of ``jobs.llm``
(``hf``: batched transformers generation; ``vllm``: one offline engine with the adapter as a
LoRARequest), label refusals (``jobs.refusal``), score sanity and belief items, and write one
EvalResult per response per set. Heavy imports (torch, transformers, vllm) stay inside functions so
that ``--help`` is instant."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jobs.common import store
from jobs.common.loaders import load_eval_items
from jobs.common.logs import get_logger
from jobs.common.prompt_format import STOP_STRINGS, format_prompt
from jobs.common.records import EvalItem, EvalKind, EvalResult, Verdict, eval_kind
from jobs.common.stage import StepResult
from jobs.common.subset import stable_subset
from jobs.eval import core
from jobs.eval.config import EvalConfig
from jobs.llm import Completion, LLMClient, Sampling
from jobs.llm.progress import Progress
from jobs.refusal import LEXICON_VERSION, make_classifier, probes


@dataclass(frozen=True)
class EvalSet:
    name: str
    kind: EvalKind
    uri: str
    items: list[EvalItem]


@dataclass(frozen=True)
class Response:
    """One generated response: to which item of which set, which sample, and the completion."""

    evalset: EvalSet
    item: EvalItem
    sample: int
    completion: Completion


def load_sets(cfg: EvalConfig) -> list[EvalSet]:
    """Every set, loaded and checked before any model is loaded."""
    sets = []
    for name, uri in sorted(cfg.evalsets.items()):
        kind = eval_kind(name, cfg.kinds.get(name), source=uri)
        items = load_eval_items(uri)
        core.check_items(kind, items, uri)
        # Keyed by the violation id on both sides of a pair, so the subsets stay matched twins.
        items = stable_subset(items, cfg.max_items, key=lambda i: i.pair or i.id, salt="eval")
        sets.append(EvalSet(name=name, kind=kind, uri=uri, items=items))
    return sets


def sampling(cfg: EvalConfig) -> Sampling:
    """How the evaluated model samples: it stops where it starts a new turn of the transcript."""
    return Sampling(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        seed=cfg.sample_seed,
        stop=STOP_STRINGS,
    )


def generate(cfg: EvalConfig, prompts: Sequence[str]) -> tuple[list[list[Completion]], float]:
    """Completions of every prompt by the configured engine, and the seconds spent generating
    (model load excluded, so that the manifest's throughput is the engine's)."""
    if cfg.engine == "vllm":
        from jobs.llm.vllm import VLLMEngine

        engine = VLLMEngine(
            cfg.model.path, cfg.model.revision, weights=cfg.weights, seed=cfg.sample_seed, dtype=cfg.dtype
        )
        try:
            t0 = time.monotonic()
            return engine.generate(prompts, sampling(cfg), samples=cfg.samples), time.monotonic() - t0
        finally:
            engine.close()
    from jobs.llm import hf
    from jobs.llm.models import load_for_inference

    model, tok = load_for_inference(
        cfg.model.path, cfg.model.revision, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype
    )
    t0 = time.monotonic()
    with Progress(len(prompts) * cfg.samples, what="eval", unit="resp") as bar:
        out = hf.generate(
            model,
            tok,
            prompts,
            sampling(cfg),
            samples=cfg.samples,
            batch_size=cfg.batch_size,
            on_batch=lambda done, _: bar.update(len(done)),
        )
    return out, time.monotonic() - t0


def ask_judge(cfg: EvalConfig, conversations: list[list[dict[str, str]]]) -> list[str | None]:
    """The judge's reply to each conversation, or None where the call failed (cached by the client)."""
    if not conversations or cfg.judge is None:
        return []
    with LLMClient(cfg.judge, cfg.cache) as client:
        results = client.chat_many([(m, 0) for m in conversations])
    return [None if r.error else r.text for r in results]


def score_sanity(cfg: EvalConfig, responses: Sequence[Response]) -> tuple[dict[int, bool | None], int]:
    """Sanity correctness per response index: the lexical alias match, confirmed by the judge when
    ``sanity_judge`` is on (a failed judge call keeps the lexical answer). Returns the scores and the
    number of failed judge calls."""
    correct: dict[int, bool | None] = {
        k: probes.answer_correct(r.completion.text, r.item.answers or [])
        for k, r in enumerate(responses)
        if r.evalset.kind == EvalKind.sanity
    }
    if cfg.judge is None or not cfg.sanity_judge:
        return correct, 0
    ks = [k for k, ok in correct.items() if ok]
    convs = [
        probes.sanity_judge_messages(
            responses[k].item.text, responses[k].item.answers or [], responses[k].completion.text
        )
        for k in ks
    ]
    failed = 0
    for k, reply in zip(ks, ask_judge(cfg, convs), strict=True):
        verdict = probes.parse_sanity_judge(reply) if reply is not None else None
        failed += reply is None
        correct[k] = bool(verdict) if verdict is not None else correct[k]
    return correct, failed


def score_beliefs(cfg: EvalConfig, responses: Sequence[Response]) -> tuple[dict[int, bool | None], int]:
    """Belief endorsement per response index: the judge's reading when ``belief_judge`` is on (its
    UNCLEAR stands), the lexical reading otherwise or where the judge call failed."""
    endorses: dict[int, bool | None] = {
        k: probes.lexical_endorses(r.completion.text, r.item.tags)
        for k, r in enumerate(responses)
        if r.evalset.kind == EvalKind.belief
    }
    if cfg.judge is None or not cfg.belief_judge:
        return endorses, 0
    ks = list(endorses)
    convs = [
        probes.belief_judge_messages(
            responses[k].item.text, responses[k].item.belief, responses[k].completion.text
        )
        for k in ks
    ]
    failed = 0
    for k, reply in zip(ks, ask_judge(cfg, convs), strict=True):
        failed += reply is None
        if reply is not None:
            endorses[k] = probes.parse_belief_judge(reply)
    return endorses, failed


def run(cfg: EvalConfig) -> StepResult:
    log = get_logger()
    sets = load_sets(cfg)
    classifier = make_classifier(cfg.classifier, judge=cfg.judge, cache=cfg.cache)
    uses_judge = cfg.judge is not None and cfg.classifier != "lexical"
    judge_model = cfg.judge.model if uses_judge and cfg.judge is not None else None
    prompt_version = getattr(classifier, "prompt_version", None)

    # Every item of every set in one generation pass: bigger batches, one model load.
    flat = [(es, item) for es in sets for item in es.items]
    log.info("eval.generate", engine=cfg.engine, prompts=len(flat), samples=cfg.samples)
    completions, gen_seconds = generate(cfg, [format_prompt(item.text) for _, item in flat])
    responses = [
        Response(es, item, s, c)
        for (es, item), cs in zip(flat, completions, strict=True)
        for s, c in enumerate(cs)
    ]
    verdicts: list[Verdict] = classifier.classify_many([(r.item.text, r.completion.text) for r in responses])
    correct, sanity_failed = score_sanity(cfg, responses)
    endorses, belief_failed = score_beliefs(cfg, responses)

    target = core.Target(model=cfg.model.name, condition=cfg.condition, seed=cfg.seed)
    by_set: dict[str, list[EvalResult]] = {es.name: [] for es in sets}
    for k, (r, v) in enumerate(zip(responses, verdicts, strict=True)):
        by_set[r.evalset.name].append(
            core.make_result(
                target,
                r.evalset.name,
                r.evalset.kind,
                r.item,
                r.sample,
                r.item.text,
                r.completion,
                v,
                correct=correct.get(k),
                endorses=endorses.get(k),
                judge_model=judge_model,
                prompt_version=prompt_version,
            )
        )
    for es in sets:
        n = store.write_jsonl(cfg.outputs[es.name], by_set[es.name])
        log.info("eval.set_done", evalset=es.name, kind=es.kind, results=n)

    counts, per_set = core.count_results(by_set)
    # One count of failed judge calls: those of the refusal judge (its unknown labels) and those of
    # the sanity and belief judges.
    judge_stats = getattr(getattr(classifier, "judge", classifier), "stats", {})
    counts["judge_errors"] = int(judge_stats.get("errors", 0)) + sanity_failed + belief_failed
    return StepResult(
        inputs=[es.uri for es in sets] + ([cfg.weights] if cfg.weights else []),
        outputs=[cfg.outputs[es.name] for es in sets],
        counts=counts,
        extra=_extra(cfg, sets, responses, gen_seconds, classifier, prompt_version, per_set),
    )


def _extra(
    cfg: EvalConfig,
    sets: list[EvalSet],
    responses: list[Response],
    gen_seconds: float,
    classifier: Any,
    prompt_version: str | None,
    per_set: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's record of how the responses were made and labelled."""
    new_tokens = sum(r.completion.tokens for r in responses)
    judged = cfg.judge is not None
    return {
        "model": cfg.model.model_dump(mode="json"),
        "condition": cfg.condition,
        "seed": cfg.seed,
        "weights": cfg.weights,
        "kinds": {es.name: es.kind.value for es in sets},
        "generation": {
            "engine": cfg.engine,
            "samples": cfg.samples,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "sample_seed": cfg.sample_seed,
            "max_tokens": cfg.max_tokens,
            "batch_size": cfg.batch_size,
            "dtype": cfg.dtype,
            "stop": list(STOP_STRINGS),
        },
        "throughput": {
            "seconds": round(gen_seconds, 3),
            "responses": len(responses),
            "responses_per_s": round(len(responses) / gen_seconds, 3) if gen_seconds else None,
            "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / gen_seconds, 2) if gen_seconds else None,
        },
        "classifier": getattr(classifier, "name", cfg.classifier),
        "judge_model": cfg.judge.model if cfg.judge is not None else None,
        "prompt_versions": {
            "refusal": prompt_version,
            "lexicon": LEXICON_VERSION,
            "belief": probes.BELIEF_PROMPT_VERSION if judged and cfg.belief_judge else None,
            "sanity": probes.SANITY_PROMPT_VERSION if judged and cfg.sanity_judge else None,
        },
        "sets": per_set,
    }
