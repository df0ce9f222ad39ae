"""The eval stage's wiring: load and check every set, generate with ``hf`` (batched, left padded)
or ``vllm`` (offline engine + LoRARequest), label refusals, score sanity and belief items, write
one EvalResult per response per set. Heavy imports (torch, transformers, vllm) stay inside
functions so that ``--help`` is instant."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.loaders import load_eval_items
from jobs.common.logs import get_logger
from jobs.common.models import eos_token_ids
from jobs.common.prompt_format import STOP_STRINGS, format_prompt
from jobs.common.records import EvalItem, EvalResult
from jobs.common.stage import StepResult
from jobs.common.subset import stable_subset
from jobs.eval import core
from jobs.eval.config import EvalConfig, SetKind

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class EvalSet:
    name: str
    kind: SetKind
    uri: str
    items: list[EvalItem]


def load_sets(cfg: EvalConfig) -> list[EvalSet]:
    """Every set, loaded and checked before any model is loaded."""
    sets = []
    for name, uri in sorted(cfg.evalsets.items()):
        kind = core.infer_kind(name, cfg.kinds.get(name), source=uri)
        items = load_eval_items(uri)
        core.check_items(kind, items, uri)
        # Keyed by the violation id on both sides of a pair, so the subsets stay matched twins.
        items = stable_subset(items, cfg.max_items, key=lambda i: i.pair or i.id, salt="eval")
        sets.append(EvalSet(name=name, kind=kind, uri=uri, items=items))
    return sets


# ---------------------------------------------------------------------------------------------
# Generation: hf
# ---------------------------------------------------------------------------------------------
def stop_criteria(tokenizer: Any, prompt_len: int) -> Any:
    """A StoppingCriteria that ends a row once its generated text starts a new turn.

    Only the generated part is read (the prompt itself ends in ``Assistant:``), and only its last
    few tokens, so the check costs the same at every step."""
    import torch
    from transformers import StoppingCriteria

    class StopOnNewTurn(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
            tail = input_ids[:, prompt_len:][:, -core.STOP_WINDOW_TOKENS :].tolist()
            texts = tokenizer.batch_decode(tail, skip_special_tokens=True)
            hits = [core.hits_stop(t) for t in texts]
            return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    return StopOnNewTurn()


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[core.Completion]]:
    """``samples`` completions per prompt, ``batch_size`` sequences at a time, left padded; greedy
    when ``temperature`` is 0. Rows are batched by length (less padding); greedy output does not
    depend on the batching."""
    import torch
    from transformers import StoppingCriteriaList

    if tokenizer.padding_side != "left":
        raise ValueError("batched generation needs a left-padding tokenizer (padding_side='left')")
    greedy = temperature == 0
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    # One sequence per (prompt, sample); longest first, so a batch's padding is small.
    order = sorted(
        ((i, s) for i in range(len(prompts)) for s in range(samples)), key=lambda p: -lengths[p[0]]
    )
    out: list[list[core.Completion | None]] = [[None] * samples for _ in prompts]
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad}
    if greedy:
        gen_kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    else:
        gen_kwargs |= {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    done = 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i, _ in batch], return_tensors="pt", padding=True).to(device)
        prompt_len = enc["input_ids"].shape[1]
        with torch.inference_mode():
            seqs = model.generate(
                **enc,
                stopping_criteria=StoppingCriteriaList([stop_criteria(tokenizer, prompt_len)]),
                **gen_kwargs,
            )
        for (i, s), row in zip(batch, seqs[:, prompt_len:].tolist(), strict=True):
            # A finished row is filled with pad (which may be EOS): keep what came before it.
            n = next((k for k, t in enumerate(row) if t in eos or t == pad), len(row))
            hit_eos = n < len(row) and row[n] in eos
            raw = tokenizer.decode(row[:n], skip_special_tokens=True)
            out[i][s] = core.finish(raw, hit_eos=hit_eos, tokens=n)
        done += len(batch)
        if progress is not None:
            progress(done, len(order))
    return [[c for c in row if c is not None] for row in out]


# ---------------------------------------------------------------------------------------------
# Generation: vllm
# ---------------------------------------------------------------------------------------------
def _local_weights(weights: str, tmp: str) -> Path:
    if store.is_s3(weights):
        store.download_dir(weights, tmp)
        return Path(tmp)
    local = Path(weights).expanduser()
    if not local.is_dir():
        raise InputError(f"{weights}: no such weights folder")
    return local


def generate_vllm(cfg: EvalConfig, prompts: Sequence[str]) -> tuple[list[list[core.Completion]], float]:
    """Offline vLLM: one engine on the base model, the trained adapter served through LoRARequest
    (or the full fine-tuned model loaded as the engine's model). Returns the completions and the
    seconds spent generating (engine start excluded)."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise InputError(
            "engine vllm: vLLM is not installed here; run in the eval GPU image "
            "(pip install 'creed[vllm]') or set eval.engine: hf"
        ) from exc
    from jobs.common.models import resolve_model

    base = resolve_model(cfg.model.path, cfg.model.revision)
    revision = cfg.model.revision if not Path(base).is_dir() else None
    with tempfile.TemporaryDirectory(prefix="creed-vllm-") as tmp:
        wdir = _local_weights(cfg.weights, tmp) if cfg.weights else None
        adapter = wdir is not None and (wdir / ADAPTER_CONFIG).is_file()
        engine_args: dict[str, Any] = {"seed": cfg.sample_seed, "dtype": cfg.dtype}
        lora = None
        if wdir is not None and adapter:
            rank = int(json.loads((wdir / ADAPTER_CONFIG).read_text()).get("r", 16))
            # vLLM accepts only these ranks as the engine's maximum
            max_rank = next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)
            engine_args |= {"enable_lora": True, "max_lora_rank": max_rank, "max_loras": 1}
            lora = LoRARequest("adapter", 1, str(wdir))
        model_dir = str(wdir) if wdir is not None and not adapter else base
        llm = LLM(model=model_dir, revision=revision if model_dir == base else None, **engine_args)
        greedy = cfg.temperature == 0
        params = SamplingParams(
            n=cfg.samples,
            temperature=cfg.temperature,
            top_p=1.0 if greedy else cfg.top_p,
            max_tokens=cfg.max_new_tokens,
            stop=list(STOP_STRINGS),
            seed=cfg.sample_seed,
        )
        t0 = time.monotonic()
        outs = llm.generate(list(prompts), params, lora_request=lora)
        seconds = time.monotonic() - t0
    # vLLM reports "stop" for EOS and for a stop string (already removed from the text).
    return [
        [core.finish(c.text, hit_eos=c.finish_reason == "stop", tokens=len(c.token_ids)) for c in o.outputs]
        for o in outs
    ], seconds


def generate(cfg: EvalConfig, prompts: Sequence[str]) -> tuple[list[list[core.Completion]], float]:
    """Completions of every prompt by the configured engine, and the seconds spent generating
    (model load excluded, so that the manifest's throughput is the engine's)."""
    log = get_logger()
    if cfg.engine == "vllm":
        return generate_vllm(cfg, prompts)
    from jobs.common.models import load_for_inference

    model, tok = load_for_inference(
        cfg.model.path, cfg.model.revision, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype
    )
    last = [0.0]
    # A bar on a terminal; periodic structured lines otherwise (containers).
    bar = tqdm(total=len(prompts) * cfg.samples, desc="eval", unit="resp") if sys.stderr.isatty() else None

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)
            return
        now = time.monotonic()
        if now - last[0] > 10 or done == total:
            last[0] = now
            log.info("eval.progress", done=done, total=total)

    t0 = time.monotonic()
    out = generate_hf(
        model,
        tok,
        prompts,
        samples=cfg.samples,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=cfg.sample_seed,
        progress=progress,
    )
    if bar is not None:
        bar.close()
    return out, time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# Judge calls for sanity and belief items (cached by the LLM client)
# ---------------------------------------------------------------------------------------------
def _ask_judge(cfg: EvalConfig, conversations: list[list[dict[str, str]]]) -> list[str | None]:
    """The judge's reply to each conversation, or None where the call failed."""
    if not conversations or cfg.judge is None:
        return []
    from jobs.common.llm import LLMClient

    with LLMClient(cfg.judge, cfg.cache) as client:
        results = client.chat_many([(m, 0) for m in conversations])
    return [None if r.error else r.text for r in results]


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------
def run(cfg: EvalConfig) -> StepResult:
    log = get_logger()
    sets = load_sets(cfg)
    from jobs.common.classify import make_classifier

    classifier = make_classifier(cfg.classifier, judge=cfg.judge, cache=cfg.cache)
    uses_judge = cfg.judge is not None and cfg.classifier != "lexical"
    judge_model = cfg.judge.model if uses_judge and cfg.judge is not None else None
    prompt_version = getattr(classifier, "prompt_version", None)

    # Every item of every set in one generation pass: bigger batches, one model load.
    flat = [(es, item) for es in sets for item in es.items]
    prompts = [format_prompt(item.text) for _, item in flat]
    log.info("eval.generate", engine=cfg.engine, prompts=len(prompts), samples=cfg.samples)
    completions, gen_seconds = generate(cfg, prompts)

    rows = [
        (es, item, s, c) for (es, item), cs in zip(flat, completions, strict=True) for s, c in enumerate(cs)
    ]
    verdicts = classifier.classify_many([(item.text, c.text) for _, item, _, c in rows])

    # Sanity: lexical match, optionally confirmed by the judge; beliefs: judge, lexical fallback.
    correct: dict[int, bool | None] = {}
    endorses: dict[int, bool | None] = {}
    for k, (es, item, _, c) in enumerate(rows):
        if es.kind == "sanity":
            correct[k] = core.answer_correct(c.text, item.answers or [])
        elif es.kind == "belief":
            endorses[k] = core.lexical_endorses(c.text, item.tags)
    judge_errors = 0
    if cfg.judge is not None and cfg.sanity_judge:
        ks = [k for k, ok in correct.items() if ok]
        convs = [
            core.sanity_judge_messages(rows[k][1].text, rows[k][1].answers or [], rows[k][3].text) for k in ks
        ]
        for k, reply in zip(ks, _ask_judge(cfg, convs), strict=True):
            verdict = core.parse_sanity_judge(reply) if reply is not None else None
            judge_errors += verdict is None
            correct[k] = bool(verdict) if verdict is not None else correct[k]
    if cfg.judge is not None and cfg.belief_judge:
        ks = list(endorses)
        convs = [core.belief_judge_messages(rows[k][1].text, rows[k][1].belief, rows[k][3].text) for k in ks]
        for k, reply in zip(ks, _ask_judge(cfg, convs), strict=True):
            verdict = core.parse_belief_judge(reply) if reply is not None else None
            judge_errors += reply is None
            # the judge's UNCLEAR stands; the lexical guess is kept only when the call failed
            endorses[k] = verdict if reply is not None else endorses[k]

    target = core.Target(model=cfg.model.name, condition=cfg.condition, seed=cfg.seed)
    by_set: dict[str, list[EvalResult]] = {es.name: [] for es in sets}
    for k, ((es, item, s, c), v) in enumerate(zip(rows, verdicts, strict=True)):
        by_set[es.name].append(
            core.make_result(
                target,
                es.name,
                es.kind,
                item,
                s,
                item.text,
                c,
                v,
                correct=correct.get(k),
                endorses=endorses.get(k),
                judge_model=judge_model,
                prompt_version=prompt_version,
            )
        )
    for es in sets:
        n = store.write_jsonl(cfg.outputs[es.name], (r.model_dump(mode="json") for r in by_set[es.name]))
        log.info("eval.set_done", evalset=es.name, kind=es.kind, results=n)

    counts, per_set = core.count_results(by_set)
    counts["judge_errors"] = judge_errors
    new_tokens = sum(c.tokens for _, _, _, c in rows)
    extra = {
        "model": cfg.model.model_dump(mode="json"),
        "condition": cfg.condition,
        "seed": cfg.seed,
        "weights": cfg.weights,
        "kinds": {es.name: es.kind for es in sets},
        "generation": {
            "engine": cfg.engine,
            "samples": cfg.samples,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "sample_seed": cfg.sample_seed,
            "max_new_tokens": cfg.max_new_tokens,
            "batch_size": cfg.batch_size,
            "dtype": cfg.dtype,
            "stop": list(STOP_STRINGS),
        },
        "throughput": {
            "seconds": round(gen_seconds, 3),
            "responses": len(rows),
            "responses_per_s": round(len(rows) / gen_seconds, 3) if gen_seconds else None,
            "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / gen_seconds, 2) if gen_seconds else None,
        },
        "classifier": getattr(classifier, "name", cfg.classifier),
        "judge_model": cfg.judge.model if cfg.judge is not None else None,
        "prompt_versions": {
            "refusal": prompt_version,
            "belief": core.BELIEF_PROMPT_VERSION if cfg.judge is not None and cfg.belief_judge else None,
            "sanity": core.SANITY_PROMPT_VERSION if cfg.judge is not None and cfg.sanity_judge else None,
        },
        "sets": per_set,
    }
    inputs = [es.uri for es in sets] + ([cfg.weights] if cfg.weights else [])
    return StepResult(
        inputs=inputs, outputs=[cfg.outputs[es.name] for es in sets], counts=counts, extra=extra
    )
