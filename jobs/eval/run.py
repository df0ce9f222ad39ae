"""The eval stage's wiring: load and check every set, generate with the shared engines of ``jobs.llm``
(``hf``: batched transformers generation; ``vllm``: one offline engine with the adapter as a
LoRARequest), label refusals (``jobs.refusal``), score sanity and belief items, and write one
EvalResult per response per set. Sets run one after another and each is written as soon as it is
done, with a record of what it was made from: a retried step (SIGTERM, a lost pod) keeps the sets
that are finished and starts at the first one that is not. Heavy imports (torch, transformers, vllm) stay inside functions so
that ``--help`` is instant."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.common import store
from jobs.common.errors import NotFoundError
from jobs.common.loaders import load_eval_items, read_records
from jobs.common.logs import get_logger
from jobs.common.manifest import upstream_fingerprint
from jobs.common.prompt_format import STOP_STRINGS, format_prompt
from jobs.common.records import JUDGED, EvalItem, EvalKind, EvalResult, Verdict, eval_kind
from jobs.common.stage import StepResult
from jobs.common.subset import stable_subset
from jobs.eval import core
from jobs.eval.config import EvalConfig
from jobs.llm import Completion, LLMClient, Sampling
from jobs.llm.progress import Progress
from jobs.refusal import LEARNED_VERSION, LEXICON_VERSION, make_classifier, probes


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


Generate = Callable[[Sequence[str]], tuple[list[list[Completion]], float]]


@contextlib.contextmanager
def generator(cfg: EvalConfig) -> Iterator[Generate]:
    """The configured engine, loaded once (on first use) for every set of the step: a callable from
    prompts to their completions and the seconds spent generating (model load excluded, so that the
    manifest's throughput is the engine's)."""
    closers: list[Callable[[], None]] = []
    loaded: dict[str, Any] = {}

    def generate(prompts: Sequence[str]) -> tuple[list[list[Completion]], float]:
        if cfg.engine == "vllm":
            if "engine" not in loaded:
                from jobs.llm.vllm import VLLMEngine

                loaded["engine"] = VLLMEngine(
                    cfg.model.path,
                    cfg.model.revision,
                    weights=cfg.weights,
                    seed=cfg.sample_seed,
                    dtype=cfg.dtype,
                )
                closers.append(loaded["engine"].close)
            t0 = time.monotonic()
            out = loaded["engine"].generate(prompts, sampling(cfg), samples=cfg.samples)
            return out, time.monotonic() - t0
        from jobs.llm import hf

        if "model" not in loaded:
            from jobs.llm.models import load_for_inference

            loaded["model"], loaded["tok"] = load_for_inference(
                cfg.model.path, cfg.model.revision, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype
            )
        t0 = time.monotonic()
        with Progress(len(prompts) * cfg.samples, what="eval", unit="resp") as bar:
            out = hf.generate(
                loaded["model"],
                loaded["tok"],
                prompts,
                sampling(cfg),
                samples=cfg.samples,
                batch_size=cfg.batch_size,
                on_batch=lambda done, _: bar.update(len(done)),
            )
        return out, time.monotonic() - t0

    try:
        yield generate
    finally:
        for close in closers:
            close()


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


def done_marker(cfg: EvalConfig, name: str) -> str:
    """Where a finished set is recorded, beside its output (``seed-0/sanity.jsonl`` ->
    ``seed-0/_done-sanity.json``): a retried step regenerates only the sets not recorded there."""
    out = cfg.outputs[name]
    folder, _, _ = out.rpartition("/")
    return f"{folder}/_done-{name}.json"


def set_fingerprint(cfg: EvalConfig, es: EvalSet, upstream: dict[str, str | None]) -> str:
    """What a finished set must match to be kept: the config (other sets aside), this set, and the
    fingerprints of what the step reads (the weights' manifest, the set's file)."""
    from jobs.common.manifest import config_hash

    others = {"evalsets", "outputs", "kinds", "upstream", "experiment", "step"}
    return config_hash(
        {
            "config": cfg.model_dump(mode="json", exclude=others),
            "set": {
                "name": es.name,
                "kind": es.kind.value,
                "uri": es.uri,
                "content": store.fingerprint(es.uri),
                "output": cfg.outputs[es.name],
            },
            "upstream": upstream,
        }
    )


@dataclass
class SetRun:
    """One set's results and what it cost (for a set kept from an earlier attempt: as recorded)."""

    results: list[EvalResult]
    responses: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    judge_errors: int = 0
    kept: bool = False


def run_set(cfg: EvalConfig, es: EvalSet, generate: Generate, classifier: Any) -> SetRun:
    """Generate, label and score one set."""
    log = get_logger()
    uses_judge = cfg.judge is not None and cfg.classifier in JUDGED
    judge_model = cfg.judge.model if uses_judge and cfg.judge is not None else None
    prompt_version = getattr(classifier, "prompt_version", None)
    log.info("eval.generate", evalset=es.name, engine=cfg.engine, prompts=len(es.items), samples=cfg.samples)
    completions, seconds = generate([format_prompt(item.text) for item in es.items])
    responses = [
        Response(es, item, s, c)
        for item, cs in zip(es.items, completions, strict=True)
        for s, c in enumerate(cs)
    ]
    stats = getattr(getattr(classifier, "judge", classifier), "stats", {})
    judge_errors_before = int(stats.get("errors", 0))
    verdicts: list[Verdict] = classifier.classify_many([(r.item.text, r.completion.text) for r in responses])
    correct, sanity_failed = score_sanity(cfg, responses)
    endorses, belief_failed = score_beliefs(cfg, responses)
    target = core.Target(model=cfg.model.name, condition=cfg.condition, seed=cfg.seed)
    results = [
        core.make_result(
            target,
            es.name,
            es.kind,
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
        for k, (r, v) in enumerate(zip(responses, verdicts, strict=True))
    ]
    judge_errors = int(stats.get("errors", 0)) - judge_errors_before + sanity_failed + belief_failed
    return SetRun(
        results=results,
        responses=len(responses),
        new_tokens=sum(r.completion.tokens for r in responses),
        seconds=seconds,
        judge_errors=judge_errors,
    )


def kept_set(cfg: EvalConfig, es: EvalSet, fingerprint: str) -> SetRun | None:
    """The results of a set that an earlier attempt of this step finished, or None."""
    if cfg.force:
        return None
    try:
        mark = store.read_json(done_marker(cfg, es.name))
    except NotFoundError:
        return None
    except json.JSONDecodeError:
        return None
    if not isinstance(mark, dict) or mark.get("fingerprint") != fingerprint:
        return None
    if store.fingerprint(cfg.outputs[es.name]) != mark.get("output"):
        return None  # the output was replaced since
    results = read_records(cfg.outputs[es.name], EvalResult)
    return SetRun(
        results=results,
        responses=int(mark.get("responses", len(results))),
        new_tokens=int(mark.get("new_tokens", 0)),
        seconds=float(mark.get("seconds", 0.0)),
        judge_errors=int(mark.get("judge_errors", 0)),
        kept=True,
    )


def run(cfg: EvalConfig) -> StepResult:
    log = get_logger()
    sets = load_sets(cfg)
    classifier = make_classifier(cfg.classifier, judge=cfg.judge, cache=cfg.cache)
    prompt_version = getattr(classifier, "prompt_version", None)
    upstream = {u: upstream_fingerprint(u) for u in cfg.upstream}

    # One set at a time, each written (and recorded as finished) as soon as it is done: a step stopped
    # by SIGTERM or a lost pod keeps its finished sets, and the retry starts at the first unfinished one.
    runs: dict[str, SetRun] = {}
    with generator(cfg) as generate:
        for es in sets:
            fingerprint = set_fingerprint(cfg, es, upstream)
            kept = kept_set(cfg, es, fingerprint)
            if kept is not None:
                runs[es.name] = kept
                log.info(
                    "eval.set_kept", evalset=es.name, results=len(kept.results), reason="finished earlier"
                )
                continue
            done = run_set(cfg, es, generate, classifier)
            n = store.write_jsonl(cfg.outputs[es.name], done.results)
            store.write_json(
                done_marker(cfg, es.name),
                {
                    "fingerprint": fingerprint,
                    "output": store.fingerprint(cfg.outputs[es.name]),
                    "responses": done.responses,
                    "new_tokens": done.new_tokens,
                    "seconds": round(done.seconds, 3),
                    "judge_errors": done.judge_errors,
                },
            )
            runs[es.name] = done
            log.info("eval.set_done", evalset=es.name, kind=es.kind, results=n)

    by_set = {name: r.results for name, r in runs.items()}
    counts, per_set = core.count_results(by_set)
    # One count of failed judge calls: those of the refusal judge (its unknown labels) and those of
    # the sanity and belief judges.
    counts["judge_errors"] = sum(r.judge_errors for r in runs.values())
    counts["sets_kept"] = sum(r.kept for r in runs.values())
    return StepResult(
        inputs=[es.uri for es in sets] + ([cfg.weights] if cfg.weights else []),
        outputs=[cfg.outputs[es.name] for es in sets],
        counts=counts,
        extra=_extra(cfg, sets, list(runs.values()), classifier, prompt_version, per_set),
    )


def _extra(
    cfg: EvalConfig,
    sets: list[EvalSet],
    runs: list[SetRun],
    classifier: Any,
    prompt_version: str | None,
    per_set: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's record of how the responses were made and labelled."""
    new_tokens = sum(r.new_tokens for r in runs)
    responses = sum(r.responses for r in runs)
    gen_seconds = sum(r.seconds for r in runs)
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
            "responses": responses,
            "responses_per_s": round(responses / gen_seconds, 3) if gen_seconds else None,
            "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / gen_seconds, 2) if gen_seconds else None,
        },
        "classifier": getattr(classifier, "name", cfg.classifier),
        "judge_model": cfg.judge.model if cfg.judge is not None else None,
        "prompt_versions": {
            "refusal": prompt_version,
            "lexicon": LEXICON_VERSION,
            "learned": LEARNED_VERSION if cfg.classifier == "learned" else None,
            "belief": probes.BELIEF_PROMPT_VERSION if judged and cfg.belief_judge else None,
            "sanity": probes.SANITY_PROMPT_VERSION if judged and cfg.sanity_judge else None,
        },
        "sets": per_set,
    }
