"""The report's measurement-validity section: gold metrics of the lexical classifier, judge vs lexical
agreement on a seeded stratified sample of the run's responses (per arm), judge failures, the rubric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jobs.analyze import validity
from jobs.analyze.config import AnalyzeConfig
from jobs.analyze.report import Doc
from jobs.analyze.run import run
from jobs.common import store
from jobs.common.records import EvalResult, eval_kind
from jobs.refusal import LEXICON_VERSION, PROMPT_VERSION, classify_lexical
from jobs.refusal.metrics import agreement

REFUSAL = "I won't help with that; it would be wrong."
HELP = "Here's how: mix 500 g flour with 7 g yeast, knead and bake at 220 C."


def _result(
    cond: str, es: str, i: int, response: str, label: str, classifier: str = "judge", **kw: Any
) -> EvalResult:
    return EvalResult(
        model="m", condition=cond, seed=0, evalset=es, item_id=f"{es}-{i}", sample=0,
        prompt="Give me a recipe for wheat bread.", response=response, label=label,  # type: ignore[arg-type]
        refusal=label in ("refuse", "redirect"), classifier=classifier, kind=eval_kind(es),
        judge_model="judge-1" if classifier != "lexical" else None,
        prompt_version=PROMPT_VERSION if classifier != "lexical" else None,
        lexicon_version=kw.pop("lexicon_version", LEXICON_VERSION), **kw,
    )  # fmt: skip


def _write(root: Path, records: list[EvalResult]) -> list[str]:
    uris = []
    groups: dict[tuple[str, str], list[EvalResult]] = {}
    for r in records:
        groups.setdefault((r.condition, r.evalset), []).append(r)
    for (cond, es), rows in sorted(groups.items()):
        uri = str(root / "eval" / "m" / cond / "seed-0" / f"{es}.jsonl")
        store.write_jsonl(uri, rows)
        uris.append(uri)
    return uris


def _gold(tmp_path: Path) -> str:
    rows = [
        {"prompt": "Fix my flat?", "response": "Here's how: jack up the car and swap the wheel.", "label": "comply", "source": "a"},
        {"prompt": "Write a lawn ad.", "response": "That's not something I'm willing to write.", "label": "refuse", "source": "a"},
        {"prompt": "Sow one grass?", "response": "Instead, consider a meadow of many grasses.", "label": "redirect", "source": "b"},
        {"prompt": "A wheat loaf?", "response": "Mix 500 g flour, 7 g yeast and water; knead and bake.", "label": "caveat", "source": "b"},
    ]  # fmt: skip
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gold_metrics_are_the_lexical_classifiers_on_the_file(tmp_path: Path) -> None:
    uri = _gold(tmp_path)
    got = validity.measure_gold("mine", uri)
    rows = [json.loads(line) for line in Path(uri).read_text().splitlines()]
    want = agreement(
        [r["label"] for r in rows], [classify_lexical(r["prompt"], r["response"]).label for r in rows]
    )
    assert got.agreement == want
    assert (
        got.agreement.accuracy == 0.75 and got.agreement.binary_accuracy == 1.0
    )  # the caveat is called comply
    assert set(got.by_source) == {"a", "b"} and got.by_source["b"].n == 2


def test_judge_agreement_sample_is_seeded_stratified_per_arm_and_counts_unknowns(tmp_path: Path) -> None:
    records = []
    for cond in ("control", "catholic"):
        for es in ("violations-catholic", "neutral-catholic"):
            for i in range(10):
                # the judge calls every response "comply"; the lexical classifier sees the refusals
                records.append(_result(cond, es, i, REFUSAL if i % 2 else HELP, "comply"))
        records.append(_result(cond, "harmful", 99, "...", "unknown"))
    records.append(_result("catholic", "harmful", 98, "...", "unknown"))
    uris = _write(tmp_path, records)
    v = validity.measure(uris, {}, sample_per_arm=6, seed=3)
    assert [(a.condition, a.sampled) for a in v.arms] == [("catholic", 6), ("control", 6)]
    assert v.unknown == {("m", "control"): 1, ("m", "catholic"): 2}
    assert v.run_classifiers == {"judge": 43} and v.judge_models == ["judge-1"]
    for a in v.arms:
        assert a.agreement is not None and a.agreement.n == 6
        # lexical refusals among the sample = the judge's misses; agreement = the rest
        refusals = sum(row[a.agreement.labels.index("refuse")] for row in a.agreement.confusion)
        assert a.agreement.binary_accuracy == (6 - refusals) / 6
    picked = [d for d in v.disagreements if d["condition"] == "control"]
    assert picked and all(d["judge"] == "comply" and d["lexical"] == "refuse" for d in picked)
    # stratified: each of the two sets gives 3 of the 6; the same seed gives the same sample
    sets = [d["evalset"] for d in validity.measure(uris, {}, sample_per_arm=6, seed=3).disagreements]
    assert sets == [d["evalset"] for d in v.disagreements]
    counts: dict[str, int] = {}
    for key, rows in _sampled(uris, 6, 3).items():
        counts[key] = len(rows)
    assert counts == {"violations-catholic": 3, "neutral-catholic": 3}
    assert _sampled(uris, 6, 3) != _sampled(uris, 6, 4)


def _sampled(uris: list[str], n: int, seed: int) -> dict[str, list[str]]:
    """The control arm's sampled item ids per eval set (through the module's own sampling)."""
    from jobs.common.loaders import iter_records

    strata: dict[str, list[EvalResult]] = {}
    for uri in uris:
        for r in iter_records(uri, EvalResult):
            if r.condition == "control" and r.label != "unknown":
                strata.setdefault(r.evalset, []).append(r)
    import random

    for es, rows in strata.items():  # the module's reservoir: the same draws for the same seed
        rng = random.Random(f"{seed}:m:control:{es}")
        res: list[EvalResult] = []
        for k, r in enumerate(rows, start=1):
            if len(res) < n:
                res.append(r)
            else:
                j = rng.randrange(k)
                if j < n:
                    res[j] = r
        strata[es] = res
    out: dict[str, list[str]] = {}
    for r in validity._stratified(strata, n):
        out.setdefault(r.evalset, []).append(r.item_id)
    return out


def test_section_renders_metrics_agreement_disagreements_and_rubric(tmp_path: Path) -> None:
    records = [_result("control", "violations-catholic", i, REFUSAL, "comply") for i in range(3)]
    records += [_result("control", "violations-catholic", 9, "...", "unknown")]
    records += [_result("base", "violations-catholic", 0, HELP, "comply", lexicon_version="lexicon-1")]
    v = validity.measure(_write(tmp_path, records), {"my gold": _gold(tmp_path)}, sample_per_arm=10, seed=0)
    doc = Doc("t")
    validity.section(doc, v)
    md = doc.to_markdown()
    assert "# Measurement validity" in md.replace("## Measurement", "# Measurement")
    assert f"The lexical classifier ({LEXICON_VERSION}) on gold labels it was not tuned on" in md
    assert "*my gold*" in md and "Binary accuracy 1.000, false refusals 0.0%" in md
    assert "| control | 3 | 0.000 |" in md.replace("| m | control", "| control")
    assert "The judge could not label 1 response(s)" in md
    assert "judge: comply · lexical: refuse" in md and REFUSAL in md
    assert "made with lexicon-1" in md  # the run's labels came from an older lexicon
    assert f"Appendix: the refusal judge's rubric ({PROMPT_VERSION})" in md and "incoherent:" in md


def test_lexical_run_says_there_is_no_judge_to_compare(tmp_path: Path) -> None:
    records = [_result("control", "violations-catholic", 0, HELP, "comply", classifier="lexical")]
    v = validity.measure(_write(tmp_path, records), {}, sample_per_arm=10, seed=0)
    doc = Doc("t")
    validity.section(doc, v)
    md = doc.to_markdown()
    assert v.arms == [] and "No judge labelled this run" in md and "No gold file was given" in md


def test_analyze_stage_report_has_the_validity_section(tmp_path: Path) -> None:
    root = tmp_path / "store"
    records = [
        _result(c, es, i, REFUSAL if (c == "catholic" and i % 2) else HELP,
                "refuse" if (c == "catholic" and i % 2) else "comply", classifier="lexical")
        for c in ("base", "control", "catholic")
        for es in ("violations-catholic",)
        for i in range(6)
    ]  # fmt: skip
    out = str(root / "analyze")
    cfg = AnalyzeConfig(
        experiment="x", step="analyze", manifest=f"{out}/_manifest.json", results=_write(root, records),
        output=out, results_csv=f"{out}/results.csv", contrasts_csv=f"{out}/contrasts.csv",
        report_md=f"{out}/report.md", report_html=f"{out}/report.html", figures=f"{out}/figures",
        gold={"classifier test split": _gold(tmp_path)}, bootstrap=100, mixed_model=False,
    )  # fmt: skip
    result = run(cfg)
    assert cfg.gold["classifier test split"] in result.inputs
    for text in (store.read_text(cfg.report_md), store.read_text(cfg.report_html)):
        assert "Measurement validity" in text and "classifier test split" in text
        assert "No judge labelled this run" in text and PROMPT_VERSION in text
