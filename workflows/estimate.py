"""Rough costs of an experiment before it runs: teacher and judge tokens and dollars, GPU-hours of
training and evaluation, and the smallest effect the design can detect. ``creed plan`` prints them;
the assumptions are the spec's ``estimate:`` section, and every figure says what it rests on. These
are planning numbers, not measurements.

Counts come from the input files (prompts, personas, eval items), so an estimate of a spec whose
inputs live only in ``s3://`` reads them from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jobs.analyze.power import planned_mde
from jobs.common.loaders import load_eval_items, load_personas, load_prompts
from jobs.common.records import JUDGED
from workflows.plan import Plan, source_of
from workflows.spec import ExperimentSpec, ModelSpec

CHARS_PER_TOKEN = 4.0
#: "Qwen2.5-1.5B", "gemma-3-270m", "Llama-3.2-1B": a size in the model's name or path.
_SIZE = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def params_billions(m: ModelSpec) -> float | None:
    """The model's size: ``params_b`` from the spec, else read from its name or path."""
    if m.params_b:
        return m.params_b
    for text in (m.path, m.name):
        hit = _SIZE.search(text)
        if hit:
            n = float(hit.group(1))
            return n if hit.group(2).lower() == "b" else n / 1000
    return None


@dataclass
class Estimate:
    teacher_requests: int = 0
    teacher_tokens_in: int = 0
    teacher_tokens_out: int = 0
    teacher_usd: float | None = None
    judge_requests: int = 0
    judge_usd: float | None = None
    train_runs: int = 0
    train_tokens: int = 0
    train_gpu_hours: float | None = None
    eval_runs: int = 0
    eval_responses: int = 0
    eval_gpu_hours: float = 0.0
    #: violation set -> (items evaluated, MDE at alpha per test, MDE at Holm's strictest alpha / m)
    mde: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    tests: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float | None:
        return None if self.train_gpu_hours is None else self.train_gpu_hours + self.eval_gpu_hours


def _tokens(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def _usd(prices: dict[str, float], tokens_in: float, tokens_out: float) -> float | None:
    if not prices:
        return None
    return (prices.get("input", 0.0) * tokens_in + prices.get("output", 0.0) * tokens_out) / 1e6


def estimate(spec: ExperimentSpec, plan: Plan) -> Estimate:
    a = spec.estimate
    est = Estimate()
    rows_generated = 0
    row_tokens: list[float] = []  # prompt + answer tokens of a training row, per dataset
    teacher_usd: list[float | None] = []
    for d in spec.datasets.values():
        teacher = d.teacher or spec.teacher
        personas = load_personas(source_of(spec, d.personas))
        prompts = [
            q for q in load_prompts(source_of(spec, d.prompts)) if not set(d.exclude_tags) & set(q.tags)
        ]
        n_prompts = min(len(prompts), d.max_prompts or len(prompts))
        per_prompt = min(d.max_prompt_uses or len(personas), len(personas))
        n = n_prompts * per_prompt * d.samples
        system = sum(_tokens(p.system) for p in personas) / max(len(personas), 1)
        prompt = sum(_tokens(q.text) for q in prompts) / max(len(prompts), 1)
        answer = teacher.max_tokens * a.output_fill
        tokens_in, tokens_out = round(n * (system + prompt + 10)), round(n * answer)
        est.teacher_requests += n
        est.teacher_tokens_in += tokens_in
        est.teacher_tokens_out += tokens_out
        teacher_usd.append(_usd(teacher.prices, tokens_in, tokens_out))
        rows_generated += n
        row_tokens.append(min(prompt + answer + 8, spec.train.max_seq_len))
    for c in spec.checks.values():  # the manipulation check: every persona, each item and its twin
        teacher = c.teacher or spec.teacher
        personas = load_personas(source_of(spec, c.personas))
        k = min(c.max_personas or len(personas), len(personas))
        system = sum(_tokens(p.system) for p in personas) / max(len(personas), 1)
        asked = 0
        for v in c.sets:
            n_items = len(load_eval_items(source_of(spec, spec.evals[v])))
            asked += 2 * k * min(n_items, c.max_items or n_items)
        tokens_in = round(asked * (system + 30))
        tokens_out = round(asked * teacher.max_tokens * a.output_fill)
        est.teacher_requests += asked
        est.teacher_tokens_in += tokens_in
        est.teacher_tokens_out += tokens_out
        teacher_usd.append(_usd(teacher.prices, tokens_in, tokens_out))
    priced = [x for x in teacher_usd if x is not None]
    est.teacher_usd = sum(priced) if priced else None
    teachers = [spec.teacher]
    teachers += [d.teacher for d in spec.datasets.values() if d.teacher is not None]
    teachers += [c.teacher for c in spec.checks.values() if c.teacher is not None]
    if any(t.provider == "openai" and not t.prices for t in teachers):
        est.notes.append("a teacher's prices are not set: its requests are not in the dollar figure")

    items = 0
    for uri in (source_of(spec, path) for path in spec.evals.values()):
        n = len(load_eval_items(uri))
        items += min(n, spec.eval.max_items or n)
    est.eval_runs = len([s for s in plan.steps if s.stage == "eval"])
    est.eval_responses = est.eval_runs * items * spec.eval.samples
    gen_tokens = est.eval_responses * spec.eval.max_tokens
    eval_seconds = gen_tokens / a.eval_tokens_per_second + est.eval_runs * a.overhead_minutes * 60
    est.eval_gpu_hours = eval_seconds / 3600

    judged = 0
    if spec.filter.classifier in JUDGED:
        judged += rows_generated
    if spec.eval.classifier in JUDGED:
        judged += est.eval_responses
    if spec.judge is not None and spec.eval.belief_judge:  # one more judge call per belief response
        for name, path in spec.evals.items():
            if name.startswith("beliefs-") or spec.eval.kinds.get(name) == "belief":
                n = len(load_eval_items(source_of(spec, path)))
                judged += est.eval_runs * min(n, spec.eval.max_items or n) * spec.eval.samples
    est.judge_requests = judged
    if spec.judge is not None:
        est.judge_usd = _usd(spec.judge.prices, judged * a.judge_prompt_tokens, judged * 5)

    est.train_runs = len([s for s in plan.steps if s.stage == "train"])
    per_row = sum(row_tokens) / max(len(row_tokens), 1)
    tokens_per_run = spec.train.examples * spec.train.epochs * per_row
    est.train_tokens = round(tokens_per_run * est.train_runs)
    seconds = 0.0
    for m in spec.train.models:
        size = params_billions(m)
        if size is None:
            est.notes.append(f"model {m.name}: size unknown (set params_b); no GPU-hours for training")
            seconds = float("nan")
            break
        # Training FLOPs per token: 6N for full fine-tuning; LoRA skips the weight gradients (~4N).
        flops = (6 if spec.train.method == "full" else 4) * size * 1e9
        runs = len(spec.conditions) * len(spec.train.seeds)
        seconds += runs * (tokens_per_run * flops / (a.gpu_tflops * 1e12 * a.mfu) + a.overhead_minutes * 60)
    est.train_gpu_hours = None if seconds != seconds else seconds / 3600
    _power(spec, est)
    return est


def _power(spec: ExperimentSpec, est: Estimate) -> None:
    """MDE of treatment minus control on each headline violation set (or every violations-* set)."""
    a, alpha = spec.estimate, spec.analysis.alpha
    headline = spec.analysis.headline
    sets = list(dict.fromkeys(h.violations for h in headline)) or [
        name
        for name in spec.evals
        if name.startswith("violations-") or spec.eval.kinds.get(name) == "violation"
    ]
    est.tests = len(spec.train.models) * sum(1 + (h.neutral is not None) for h in headline) or len(sets)
    for name in sets:
        if name not in spec.evals:
            continue
        n = len(load_eval_items(source_of(spec, spec.evals[name])))
        items = min(n, spec.eval.max_items or n)
        mde = [
            planned_mde(
                seeds=len(spec.train.seeds),
                prompts=items,
                samples=spec.eval.samples,
                rate=a.baseline_refusal,
                seed_sd=a.seed_sd,
                prompt_sd=a.prompt_sd,
                alpha=level,
            )
            for level in (alpha, alpha / max(est.tests, 1))
        ]
        est.mde[name] = (items, mde[0], mde[1])


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.2f}"


def format_estimate(spec: ExperimentSpec, est: Estimate) -> str:
    a = spec.estimate
    gpu_usd = None if est.gpu_hours is None else est.gpu_hours * a.gpu_hour_usd
    lines = [
        "Estimates (rough; assumptions under `estimate:` in the spec):",
        f"  teacher   {est.teacher_requests:,} requests, {est.teacher_tokens_in:,} tokens in, "
        f"~{est.teacher_tokens_out:,} out ({a.output_fill:.0%} of max_tokens)   {_money(est.teacher_usd)}",
        f"  judge     {est.judge_requests:,} requests   {_money(est.judge_usd)}",
        f"  train     {est.train_runs} runs, {est.train_tokens:,} tokens, "
        + ("GPU-hours unknown" if est.train_gpu_hours is None else f"{est.train_gpu_hours:,.1f} GPU-hours")
        + f" ({a.mfu:.0%} MFU of {a.gpu_tflops:g} TFLOP/s)",
        f"  eval      {est.eval_runs} runs, {est.eval_responses:,} responses, {est.eval_gpu_hours:,.1f} GPU-hours"
        f" ({a.eval_tokens_per_second:g} tokens/s)",
        "  total     "
        + ("GPU-hours unknown" if est.gpu_hours is None else f"{est.gpu_hours:,.1f} GPU-hours")
        + f" ~ {_money(gpu_usd)} at {_money(a.gpu_hour_usd)}/GPU-hour, plus teacher and judge",
    ]
    seeds = len(spec.train.seeds)
    if est.mde and seeds < 2:
        lines.append(
            f"  power     no test possible: {seeds} seed per arm (a contrast needs at least 2 seeds in "
            "each arm; the analysis will report estimates only)"
        )
    elif est.mde:
        for name, (items, mde, strict) in est.mde.items():
            lines.append(
                f"  power     {name}: a difference of {100 * mde:.0f} points is detected with 80% power "
                f"(alpha {spec.analysis.alpha:g}; {100 * strict:.0f} at Holm's strictest step of "
                f"{est.tests} tests), {seeds} seeds per arm, {items} items x {spec.eval.samples} samples"
            )
        lines.append(
            f"            assumes seed SD {a.seed_sd:g}, prompt SD {a.prompt_sd:g} (log-odds), control "
            f"refusal {a.baseline_refusal:.0%}; more seeds shrink it most"
        )
    lines += [f"  note: {n}" for n in est.notes]
    return "\n".join(lines)
