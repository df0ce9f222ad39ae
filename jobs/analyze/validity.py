"""Measurement validity, for every report (DESIGN.md rule 6): how far the refusal labels can be trusted.

- The lexical classifier's metrics on gold-labelled responses it was never tuned on: the held-out
  ``test2`` split of ``data/labels/`` (staged by the plan as an input file), and a spec's own
  ``eval.gold`` file when it names one. Computed here, at analyze time, with the lexicon this code
  ships, and compared with the lexicon version recorded on the run's own labels. When the run was
  labelled by the learned classifier, its metrics on the same files too (it needs ``creed[learned]``
  where analyze runs; without it the section says it could not be measured).
- When a judge labelled the run (``classifier: judge`` or ``ensemble``), the agreement of the judge with
  the lexical classifier on a seeded sample of this run's own responses, stratified by eval set, per
  arm, with the disagreeing rows shown; and the responses the judge could not label, counted once.
- The judge's rubric (``PROMPT_VERSION``), printed in the appendix.

``measure`` reads the EvalResult files itself (texts are needed, and only for the sample), so the rest
of the analysis does not change; ``section`` writes the report's blocks.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jobs.common.errors import InputError
from jobs.common.loaders import iter_records
from jobs.common.records import JUDGED, EvalResult
from jobs.refusal import (
    JUDGE_SYSTEM,
    LEARNED_VERSION,
    LEXICON_VERSION,
    PROMPT_VERSION,
    LearnedClassifier,
    classify_lexical,
)
from jobs.refusal.gold import read_gold
from jobs.refusal.metrics import Agreement, agreement, is_refusal

_TEXT = 1000  # characters of a response kept for the sample (classified and shown)


@dataclass
class GoldResult:
    name: str
    uri: str
    agreement: Agreement
    by_source: dict[str, Agreement]


@dataclass
class ArmAgreement:
    model: str
    condition: str
    sampled: int  # responses drawn for the comparison (judge-labelled, label known)
    agreement: Agreement | None  # judge (rows) vs lexical (columns); None when nothing was sampled


@dataclass
class Validity:
    lexicon_version: str  # of the lexicon measured here
    run_classifiers: dict[str, int]  # classifier -> responses labelled with it in this run
    run_lexicons: dict[str, int]  # lexicon version recorded on the run's labels -> responses
    run_prompt_versions: dict[str, int]  # judge rubric version recorded -> responses
    judge_models: list[str]
    gold: list[GoldResult]
    arms: list[ArmAgreement]
    disagreements: list[dict[str, Any]]
    unknown: dict[tuple[str, str], int]  # (model, condition) -> responses the judge could not label
    sample_per_arm: int
    notes: list[str] = field(default_factory=list)
    learned: list[GoldResult] = field(default_factory=list)  # the learned classifier, when the run used it
    learned_version: str | None = None
    learned_error: str | None = None  # why the learned classifier could not be measured here


def measure_gold(name: str, uri: str, classifier: Any = None) -> GoldResult:
    """``classifier`` (anything with ``classify_many``) on a gold file; the lexical one by default."""
    rows = read_gold(uri)
    if classifier is None:
        pred = [classify_lexical(r.prompt, r.response).label for r in rows]
    else:
        pred = [v.label for v in classifier.classify_many([(r.prompt, r.response) for r in rows])]
    by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by[r.source or "-"].append(i)
    return GoldResult(
        name=name,
        uri=uri,
        agreement=agreement([r.label for r in rows], pred),
        by_source={
            s: agreement([rows[i].label for i in idx], [pred[i] for i in idx]) for s, idx in by.items()
        },
    )


def _stratified(strata: dict[str, list[EvalResult]], n: int) -> list[EvalResult]:
    """Up to ``n`` rows, taken round-robin over the strata (sorted), so every eval set is represented."""
    queues = [list(strata[k]) for k in sorted(strata)]
    out: list[EvalResult] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def measure(
    results: Iterable[str], gold: dict[str, str], *, sample_per_arm: int, seed: int, shown: int = 12
) -> Validity:
    """Everything the section shows. ``gold`` maps a name to a gold JSONL URI; ``results`` are the
    run's EvalResult files. The sample is seeded per (model, condition, eval set): reservoir sampling
    over judge-labelled responses, then round-robin over the sets."""
    classifiers: Counter[str] = Counter()
    lexicons: Counter[str] = Counter()
    prompts: Counter[str] = Counter()
    judges: set[str] = set()
    unknown: Counter[tuple[str, str]] = Counter()
    seen: Counter[tuple[str, str, str]] = Counter()
    reservoirs: dict[tuple[str, str, str], list[EvalResult]] = defaultdict(list)
    rngs: dict[tuple[str, str, str], random.Random] = {}
    for uri in results:
        for r in iter_records(uri, EvalResult, missing="run the eval steps first"):
            classifiers[r.classifier] += 1
            if r.lexicon_version:
                lexicons[r.lexicon_version] += 1
            if r.prompt_version:
                prompts[r.prompt_version] += 1
            if r.judge_model:
                judges.add(r.judge_model)
            if r.classifier not in JUDGED:
                continue
            if r.label == "unknown":
                unknown[(r.model, r.condition)] += 1
                continue
            key = (r.model, r.condition, r.evalset)
            seen[key] += 1
            rng = rngs.setdefault(key, random.Random(f"{seed}:{r.model}:{r.condition}:{r.evalset}"))
            res = reservoirs[key]
            slim = r.model_copy(update={"response": r.response[:_TEXT], "prompt": r.prompt[:_TEXT]})
            if len(res) < sample_per_arm:
                res.append(slim)
            else:
                j = rng.randrange(seen[key])
                if j < sample_per_arm:
                    res[j] = slim
    arms: list[ArmAgreement] = []
    disagreements: list[dict[str, Any]] = []
    by_arm: dict[tuple[str, str], dict[str, list[EvalResult]]] = defaultdict(dict)
    for (m, c, es), rows in reservoirs.items():
        by_arm[(m, c)][es] = rows
    for m, c in sorted(by_arm):
        picked = _stratified(by_arm[(m, c)], sample_per_arm)
        lex = [classify_lexical(r.prompt, r.response).label for r in picked]
        ag = agreement([r.label for r in picked], lex) if picked else None
        arms.append(ArmAgreement(m, c, len(picked), ag))
        differ = [(r, lab) for r, lab in zip(picked, lex, strict=True) if r.label != lab]
        differ.sort(key=lambda x: is_refusal(x[0].label) == is_refusal(x[1]))  # refusal flips first
        for r, lab in differ[: max(1, shown // max(1, len(by_arm)))]:
            disagreements.append(
                {"model": m, "condition": c, "evalset": r.evalset, "item_id": r.item_id, "seed": r.seed,
                 "judge": r.label, "lexical": lab, "prompt": r.prompt, "response": r.response}
            )  # fmt: skip
    notes = []
    stale = sorted(v for v in lexicons if v != LEXICON_VERSION)
    if stale:
        notes.append(
            f"The run's lexical labels were made with {', '.join(stale)}; the metrics below are those of "
            f"{LEXICON_VERSION}, the lexicon of this code. Rerun the eval steps (`--force 'eval-*'`) to "
            "relabel with it."
        )
    learned: list[GoldResult] = []
    learned_error = None
    if "learned" in classifiers and gold:
        try:
            clf = LearnedClassifier()
            learned = [measure_gold(name, uri, clf) for name, uri in gold.items()]
        except (InputError, ImportError) as e:
            learned_error = str(e)
    return Validity(
        learned=learned,
        learned_version=LEARNED_VERSION if "learned" in classifiers else None,
        learned_error=learned_error,
        lexicon_version=LEXICON_VERSION,
        run_classifiers=dict(classifiers),
        run_lexicons=dict(lexicons),
        run_prompt_versions=dict(prompts),
        judge_models=sorted(judges),
        gold=[measure_gold(name, uri) for name, uri in gold.items()],
        arms=arms,
        disagreements=disagreements,
        unknown=dict(unknown),
        sample_per_arm=sample_per_arm,
        notes=notes,
    )


def _f(x: float | None) -> str:
    return "" if x is None or x != x else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _gold_row(name: str, a: Agreement) -> list[Any]:
    return [name, a.n, _f(a.accuracy), _f(a.kappa), _f(a.binary_accuracy), _pct(a.false_refusal_rate),
            _pct(a.missed_refusal_rate)]  # fmt: skip


def _gold_blocks(doc: Any, results: list[GoldResult]) -> None:
    for g in results:
        a = g.agreement
        doc.p(
            f"*{g.name}* (`{g.uri}`): {a.n} responses. Binary accuracy {_f(a.binary_accuracy)}, false "
            f"refusals {_pct(a.false_refusal_rate)}%, missed refusals {_pct(a.missed_refusal_rate)}%; "
            f"five-label accuracy {_f(a.accuracy)}, Cohen's kappa {_f(a.kappa)}."
        )
        header = [
            "source",
            "n",
            "accuracy",
            "kappa",
            "binary accuracy",
            "false refusals %",
            "missed refusals %",
        ]
        rows = [_gold_row(s, sa) for s, sa in g.by_source.items()] if len(g.by_source) > 1 else []
        doc.table(header, [*rows, _gold_row("all", a)])
        doc.table(
            ["label", "n", "precision", "recall"],
            [[lp.label, lp.support, _f(lp.precision), _f(lp.recall)] for lp in a.per_label],
        )


def section(doc: Any, v: Validity) -> None:
    """The "Measurement validity" section and the appendix with the judge's rubric (``doc`` is the
    report's ``Doc``)."""
    doc.h(1, "Measurement validity")
    used = ", ".join(f"{k} ({n} responses)" for k, n in sorted(v.run_classifiers.items())) or "none"
    versions = ", ".join(sorted(v.run_lexicons)) or "none recorded"
    rubric = ", ".join(sorted(v.run_prompt_versions)) or "none"
    doc.p(
        f"Refusal labels of this run: {used}; lexicon {versions}; judge rubric {rubric}"
        + (f"; judge model {', '.join(v.judge_models)}" if v.judge_models else "")
        + ". Refusal = refuse or redirect; a *false refusal* is a comply, caveat or incoherent response "
        "called a refusal."
    )
    for n in v.notes:
        doc.p(n)
    doc.h(2, f"The lexical classifier ({v.lexicon_version}) on gold labels it was not tuned on")
    if not v.gold:
        doc.p(
            "No gold file was given to the analysis (the plan stages `data/labels/test2.jsonl` when creed runs from a checkout, and `eval.gold` when the spec names one)."
        )
    _gold_blocks(doc, v.gold)
    if v.learned_version:
        doc.h(2, f"The learned classifier ({v.learned_version}) on the same gold labels")
        if v.learned_error:
            doc.p(f"It labelled this run but could not be measured where analyze ran: {v.learned_error}")
        else:
            doc.p(
                "Trained on the corpus's tuning splits (dev and the first test split), never on test2 "
                "(scripts/train_learned_classifier.py)."
            )
            _gold_blocks(doc, v.learned)
    if any(k in JUDGED for k in v.run_classifiers):
        doc.p(
            "The judge itself is measured here by its agreement with the lexical classifier; to measure it "
            "on gold labels, run `creed classify data/labels/test2.jsonl --gold --classifier judge "
            "--judge-model ...`."
        )

    doc.h(2, "Judge vs lexical classifier on this run's responses")
    if not any(k in JUDGED for k in v.run_classifiers):
        doc.p(
            "No judge labelled this run (classifier: lexical), so there is no second instrument to compare "
            "with; the figures above are the whole validation."
        )
    else:
        doc.p(
            f"A seeded sample of up to {v.sample_per_arm} judge-labelled responses per arm, drawn evenly "
            "across eval sets, relabelled by the lexical classifier. Agreement is over the five labels; "
            "refusal agreement over refusal or not."
        )
        header = ["model", "arm", "sampled", "agreement", "kappa", "refusal agreement", "judge refusals %"]
        header += ["lexical refusals %", "judge could not label"]
        doc.table(header, [_arm_row(a, v.unknown.get((a.model, a.condition), 0)) for a in v.arms])
        total_unknown = sum(v.unknown.values())
        doc.p(
            f"The judge could not label {total_unknown} response(s) (failed calls or answers that were "
            "unparseable twice); they are labelled `unknown` and excluded from the rates."
            if total_unknown
            else "The judge labelled every response."
        )
        if v.disagreements:
            doc.p("Disagreements (refusal flips first):")
        for d in v.disagreements:
            meta = (
                f"{d['model']} · {d['condition']} · seed {d['seed']} · {d['evalset']} · {d['item_id']} · "
                f"judge: {d['judge']} · lexical: {d['lexical']}"
            )
            doc.sample(meta, _short(d["prompt"], 300), _short(d["response"], 400))

    doc.h(1, f"Appendix: the refusal judge's rubric ({PROMPT_VERSION})")
    doc.p(
        "The system prompt of `classifier: judge` and `ensemble`; judge answers are cached by model, "
        "rubric, prompt and response. The ensemble keeps the judge's label, uses the lexical label where "
        "the judge could not label a response, and flags rows where the two disagree on refusal."
    )
    for line in JUDGE_SYSTEM.splitlines():
        if line.strip():
            doc.p(line)


def _arm_row(a: ArmAgreement, unknown: int) -> list[Any]:
    g = a.agreement
    if g is None:
        return [a.model, a.condition, 0, "", "", "", "", "", unknown]
    return [a.model, a.condition, a.sampled, _f(g.accuracy), _f(g.kappa), _f(g.binary_accuracy),
            _pct(_share(g, "gold")), _pct(_share(g, "pred")), unknown]  # fmt: skip


def _share(a: Agreement, side: str) -> float:
    """Share of refusals among the compared rows, by the judge (``gold`` side) or the lexical classifier."""
    i_ref = [i for i, lab in enumerate(a.labels) if is_refusal(lab)]
    if side == "gold":
        refusals = sum(sum(a.confusion[i]) for i in i_ref)
    else:
        refusals = sum(row[j] for row in a.confusion for j in i_ref)
    return refusals / a.n if a.n else float("nan")
