"""Analyze stage: intervals that cover known effects, the seed-level t-test's error rate with 3 seeds
(slow, and able to fail), no claim from one seed, both scales for the diff-in-diff, the public
``contrasts`` API, enough replicates for the Holm family, the MDE, incoherent and empty cells, the
GLMM, and the report via the store."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from jobs.analyze import core, power, stats
from jobs.analyze import simulate as sim
from jobs.analyze.config import AnalyzeConfig, AnalyzeParams, HeadlineContrast
from jobs.analyze.run import fill_pairs, run
from jobs.common import store
from jobs.common.errors import InputError
from jobs.common.records import EvalResult, eval_kind
from jobs.common.stage import main

CATH = HeadlineContrast(
    treatment="catholic", control="control", violations="violations-catholic", neutral="neutral-catholic"
)


def _logistic(x: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x)))


def simulate(
    rng: np.random.Generator,
    *,
    effects: dict[str, float],
    sets: tuple[str, ...] = ("violations-catholic",),
    seeds: int = 4,
    prompts: int = 30,
    samples: int = 1,
    mu: float = -1.0,
    seed_sd: float = 0.0,
    prompt_sd: float = 0.0,
    neutral_effect: bool = False,
) -> list[dict[str, Any]]:
    """EvalResult dicts from a logistic model: condition effect + a random effect per trained model
    (condition x seed) + a random effect per prompt shared by the conditions. The effect applies to
    violation sets (and to neutral sets when ``neutral_effect``)."""
    prompt_eff = {es: rng.normal(0.0, prompt_sd, prompts) for es in sets}
    rows = []
    for cond, eff in effects.items():
        for s in range(seeds):
            seed_eff = rng.normal(0.0, seed_sd)
            for es in sets:
                applies = es.startswith("violations-") or (neutral_effect and es.startswith("neutral-"))
                p = _logistic(mu + (eff if applies else 0.0) + seed_eff + prompt_eff[es])
                hits = rng.random((prompts, samples)) < p[:, None]
                for i in range(prompts):
                    for k in range(samples):
                        item = f"{es[:1]}{i:03d}"
                        rows.append(
                            {
                                "model": "m",
                                "condition": cond,
                                "seed": s,
                                "evalset": es,
                                "item_id": item,
                                "sample": k,
                                "label": "refuse" if hits[i, k] else "comply",
                                "pair": f"v{i:03d}" if es.startswith("neutral-") else None,
                            }
                        )
    return rows


def _contrast(df: pd.DataFrame, c: HeadlineContrast, reps: int = 400) -> list[dict[str, Any]]:
    return core.contrast_rows(df, c, "m", outcome="refusal", reps=reps, alpha=0.05, seed=7)


# ---------------------------------------------------------------------------------------------
# Known effect
# ---------------------------------------------------------------------------------------------
def test_known_effect_is_estimated_and_covered_and_did_separates_topic_from_value() -> None:
    rng = np.random.default_rng(3)
    # probability scale: control 0.2, catholic 0.5 on violations; no difference on neutral
    rows = simulate(
        rng,
        effects={"catholic": math.log(0.5 / 0.5) - math.log(0.2 / 0.8), "control": 0.0},
        sets=("violations-catholic", "neutral-catholic"),
        mu=math.log(0.2 / 0.8),
        seeds=4,
        prompts=40,
        samples=2,
        seed_sd=0.15,
    )
    df = core.frame(rows)
    diff, did = _contrast(df, CATH)
    truth = 0.30
    assert diff["contrast"] == "difference" and did["contrast"] == "diff-in-diff"
    assert abs(diff["estimate"] - truth) < 0.06
    assert diff["ci_lo"] < truth < diff["ci_hi"]
    assert diff["ci_lo"] > 0 and diff["p_value"] < 0.01
    assert diff["df"] == 6 and "df 6" in diff["method"]
    # the neutral set has no effect: the DiD is the same 0.30, and its interval covers it
    assert abs(did["estimate"] - truth) < 0.08 and did["ci_lo"] < truth < did["ci_hi"]
    assert "40 matched pairs" in did["method"]
    # log-odds scale: log(1) - log(0.25) = 1.39 on violations, 0 on neutral
    assert diff["log_odds_lo"] < 1.386 < diff["log_odds_hi"] and did["log_odds_lo"] > 0
    # the point estimate is the mean of the seeds' rates (= the pooled rate with equal seeds)
    t = df[(df.condition == "catholic") & (df.evalset == "violations-catholic")]
    c = df[(df.condition == "control") & (df.evalset == "violations-catholic")]
    assert diff["estimate"] == pytest.approx(t.refusal.mean() - c.refusal.mean())
    per_seed = t.groupby("seed").refusal.mean().mean() - c.groupby("seed").refusal.mean().mean()
    assert diff["estimate"] == pytest.approx(per_seed)


def test_topic_shift_is_not_read_as_a_value_effect() -> None:
    """Same rise on violation and neutral requests: the difference is real, the DiD covers 0."""
    rng = np.random.default_rng(5)
    rows = simulate(
        rng,
        effects={"catholic": 1.2, "control": 0.0},
        sets=("violations-catholic", "neutral-catholic"),
        seeds=4,
        prompts=40,
        samples=2,
        neutral_effect=True,
    )
    diff, did = _contrast(core.frame(rows), CATH)
    assert diff["ci_lo"] > 0
    assert did["ci_lo"] < 0 < did["ci_hi"]
    sentence = core.difference_sentence(did | {"p_holm": did["p_value"]}, 0.05, 2)
    assert "no evidence of a difference" in sentence and "covers 0" in sentence


def test_seed_t_matches_a_hand_computed_welch_t_without_prompt_variation() -> None:
    """Two arms whose seeds answer every prompt alike: the variance is the seeds' alone, and the test
    is Student's t on the seed rates (df 3 + 3 - 2), which scipy computes independently."""
    from scipy.stats import ttest_ind

    rates = {"catholic": [0.5, 0.7, 0.6], "control": [0.2, 0.4, 0.25]}
    arms = []
    for cond, rs in rates.items():
        y = np.array([[r * 20] * 10 for r in rs])
        arms.append(stats.Arm(cond, y, np.full_like(y, 20.0)))
    iv = stats.seed_contrast(
        [(1.0, arms[0]), (-1.0, arms[1])], reps=500, alpha=0.05, rng=np.random.default_rng(0)
    )
    ref = ttest_ind(rates["catholic"], rates["control"])
    assert iv.estimate == pytest.approx(np.mean(rates["catholic"]) - np.mean(rates["control"]))
    assert iv.df == 4 and iv.var_prompt == pytest.approx(0.0, abs=1e-12)
    assert iv.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert iv.mde == pytest.approx(power.mde(iv.se, 4), rel=1e-9)


def test_p_value_agrees_with_interval() -> None:
    rng = np.random.default_rng(0)
    for i in range(20):
        y = rng.integers(0, 4, size=(3, 30)).astype(float)
        y2 = np.clip(y + rng.integers(-1, 3, size=(3, 30)), 0, 3)
        n = np.full_like(y, 3.0)
        iv = stats.seed_contrast(
            [(1.0, stats.Arm("a", y2, n)), (-1.0, stats.Arm("b", y, n))], reps=300, alpha=0.05, rng=rng
        )
        assert (iv.p_value < 0.05) == (iv.lo > 0 or iv.hi < 0), i


def test_rescaled_cluster_weights_give_unbiased_variance_of_a_mean() -> None:
    rng = np.random.default_rng(1)
    x = np.array([0.1, 0.5, 0.3, 0.9])
    w = stats.cluster_weights(rng, 4, 40000)
    boot = (w @ x) / w.sum(axis=1)
    assert boot.var() == pytest.approx(x.var(ddof=1) / 4, rel=0.05)
    assert np.all(stats.cluster_weights(rng, 1, 5) == 1)


def test_holm() -> None:
    adj = stats.holm([0.01, 0.04, math.nan, 0.03, 0.2])
    assert adj[0] == pytest.approx(0.04)
    assert adj[3] == pytest.approx(0.09)
    assert adj[1] == pytest.approx(0.09)  # monotone: max(0.04 * 2, 0.09)
    assert adj[4] == pytest.approx(0.2)
    assert math.isnan(adj[2])


# ---------------------------------------------------------------------------------------------
# Incoherent and empty cells
# ---------------------------------------------------------------------------------------------
def _row(cond: str, es: str, item: str, label: str, seed: int = 0, **kw: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "condition": cond,
        "seed": seed,
        "evalset": es,
        "item_id": item,
        "sample": 0,
        "label": label,
    } | kw


def test_incoherent_is_excluded_from_rates_but_counted() -> None:
    labels = ["refuse"] * 3 + ["redirect", "caveat", "comply"] + ["incoherent"] * 4
    rows = [_row("control", "harmful", f"h{i}", lab, seed=i % 2) for i, lab in enumerate(labels)]
    res = core.cell_results(core.frame(rows), ["harmful"], reps=200, alpha=0.05, rng=np.random.default_rng(0))
    r = res.iloc[0]
    assert (r.responses, r.coherent, r.incoherent, r.prompts, r.seeds) == (10, 6, 4, 10, 2)
    assert r.refusal == pytest.approx(4 / 6)
    assert r.refusal_caveat == pytest.approx(5 / 6)
    assert r.incoherent_rate == pytest.approx(0.4) and r.incoherent_rate_lo <= 0.4 <= r.incoherent_rate_hi
    assert r.refusal_lo <= r.refusal <= r.refusal_hi


def test_judge_unknown_is_excluded_from_rates_but_counted() -> None:
    labels = ["refuse", "comply", "comply", "unknown", "unknown"]
    rows = [_row("control", "harmful", f"h{i}", lab, seed=i % 2) for i, lab in enumerate(labels)]
    r = core.cell_results(
        core.frame(rows), ["harmful"], reps=200, alpha=0.05, rng=np.random.default_rng(0)
    ).iloc[0]
    assert (r.responses, r.coherent, r.unlabelled, r.incoherent) == (5, 3, 2, 0)
    # each seed's rate counts once: seed 0 refuses 1 of 2 coherent, seed 1 0 of 1
    assert r.refusal == pytest.approx((1 / 2 + 0 / 1) / 2)


def test_empty_cells_are_reported_not_crashes() -> None:
    rows = [
        _row(c, "violations-catholic", f"v{i}", "refuse" if i % 2 else "comply", seed=s)
        for c in ("catholic", "control")
        for s in (0, 1)
        for i in range(6)
    ]
    rows += [_row("control", "neutral-catholic", f"n{i}", "comply", pair=f"v{i}") for i in range(6)]
    rows += [_row("catholic", "harmful", "h0", "incoherent")]
    df = core.frame(rows)
    sets = ["violations-catholic", "neutral-catholic", "harmful", "sanity"]
    res = core.cell_results(df, sets, reps=200, alpha=0.05, rng=np.random.default_rng(0))
    assert len(res) == 2 * 4
    cell = res[(res.condition == "catholic") & (res.evalset == "neutral-catholic")].iloc[0]
    assert cell.responses == 0 and cell.note == "no responses" and math.isnan(cell.refusal)
    sanity = res[res.evalset == "sanity"]
    assert (sanity.responses == 0).all() and (sanity.kind == "sanity").all()
    harmful = res[(res.condition == "catholic") & (res.evalset == "harmful")].iloc[0]
    assert harmful.note == "every response incoherent" and harmful.incoherent == 1

    # a planned arm with no responses at all is reported too
    planned = core.cell_results(
        df, sets, reps=200, alpha=0.05, rng=np.random.default_rng(0), design={"conditions": {"graminist": {}}}
    )
    gram = planned[planned.condition == "graminist"]
    assert len(gram) == 4 and (gram.responses == 0).all() and (gram.note == "no responses").all()

    table = core.contrasts_table(pd.DataFrame(rows), df, [CATH], reps=200, alpha=0.05, seed=0)
    assert list(table.contrast) == ["difference", "diff-in-diff"] * 2
    did = table[(table.contrast == "diff-in-diff") & (table.family == "primary")].iloc[0]
    assert math.isnan(did.estimate) and "catholic on neutral-catholic" in did.note
    assert math.isnan(did.p_holm)
    verdict = dict(core.verdicts(table, res, 0.05))
    lines = verdict["Sub-question 1: persona-supported values (catholic)"]
    assert any("cannot be assessed" in line for line in lines)


def _no_claim(row: pd.Series) -> bool:
    return (
        math.isfinite(row.estimate)
        and all(math.isnan(row[c]) for c in ("ci_lo", "ci_hi", "p_value", "p_holm", "log_odds_lo", "mde"))
        and not row.significant
        and row.note.startswith("no claim")
    )


@pytest.mark.parametrize("seeds", [(1, 1), (3, 1)])
def test_an_arm_with_one_seed_supports_no_claim(seeds: tuple[int, int]) -> None:
    """A large real effect, but one seed in an arm: an estimate, no interval, no p, never significant;
    the Summary says why, and the per-cell interval is the prompt bootstrap's, labelled so."""
    d = sim.Design(seeds_treatment=seeds[0], seeds_control=seeds[1], shift_violations=2.0)
    raw = sim.simulate(d, np.random.default_rng(2))
    table = core.contrasts_table(
        raw, core.frame(raw), [HeadlineContrast(**d.headline())], reps=200, alpha=0.05, seed=0
    )
    assert len(table) == 4 and all(_no_claim(r) for _, r in table.iterrows())
    assert table.estimate.iloc[0] > 0.2
    res = core.cell_results(
        core.frame(raw), [d.violations], reps=200, alpha=0.05, rng=np.random.default_rng(0)
    )
    one = res[res.seeds == 1]
    assert len(one) and one.ci_method.str.startswith("prompt bootstrap only").all()
    verdict = dict(core.verdicts(table, res, 0.05))
    lines = verdict["Sub-question 1: persona-supported values (catholic)"]
    assert lines[0].startswith("Summary: no claim: a contrast needs at least 2 seeds in each arm")
    assert not any("evidence that" in line for line in lines)
    support = verdict["What this design can support"]
    assert any("support no claim" in line for line in support)


def test_unequal_seed_counts_are_flagged_and_use_welch() -> None:
    d = sim.Design(seeds_treatment=5, seeds_control=3)
    out = core.contrasts(sim.simulate(d, np.random.default_rng(4)), [d.headline()], bootstrap=200)
    diff = out.iloc[0]
    assert (diff.seeds_treatment, diff.seeds_control) == (5, 3)
    assert "unequal seeds (catholic 5, control 3)" in diff.note and "Welch df" in diff.method
    assert 2 <= diff.df <= 6 and math.isfinite(diff.p_value)
    support = core.design_support(out.assign(family="primary"), 0.05)
    assert any(line.startswith("Unequal seeds (catholic 5 vs control 3)") for line in support)


def test_default_contrasts_and_unknown_headline_set() -> None:
    got = core.default_contrasts(
        ["base", "control", "secular", "catholic", "graminist", "other"],
        ["violations-catholic", "neutral-catholic", "violations-graminist", "sanity"],
    )
    assert [(c.treatment, c.control, c.neutral) for c in got] == [
        ("catholic", "control", "neutral-catholic"),
        ("catholic", "secular", "neutral-catholic"),
        ("graminist", "control", None),
        ("graminist", "secular", None),
    ]
    with pytest.raises(InputError, match=r"headline.0.violations: unknown eval set 'violations-x'"):
        core.check_contrasts(
            [HeadlineContrast(treatment="a", control="b", violations="violations-x")], ["sanity"]
        )


# ---------------------------------------------------------------------------------------------
# The stage through the store: tables, figures, report
# ---------------------------------------------------------------------------------------------
def _write_experiment(root: str, *, seeds: int = 2) -> tuple[dict[str, Any], list[EvalResult]]:
    rng = np.random.default_rng(4)
    sets = ("violations-catholic", "neutral-catholic")
    raw = simulate(
        rng, effects={"catholic": 1.5, "control": 0.0, "secular": 0.3}, sets=sets, seeds=seeds, prompts=12
    )
    raw += [
        r | {"condition": "base", "seed": 0}
        for r in simulate(rng, effects={"base": 0.0}, sets=sets, seeds=1, prompts=12)
    ]
    records: list[EvalResult] = []
    for r in raw:
        records.append(
            EvalResult(
                **r,
                prompt=f"prompt {r['item_id']}",
                response=f"answer | {r['label']}",
                refusal=r["label"] == "refuse",
                classifier="lexical",
                kind=eval_kind(r["evalset"]),
            )
        )
    for cond in ("base", "control", "catholic", "secular"):
        for s in range(1 if cond == "base" else seeds):
            for i in range(5):
                label = "incoherent" if (cond == "base" and i == 0) else "comply"
                records.append(
                    EvalResult(
                        model="m",
                        condition=cond,
                        seed=s,
                        evalset="sanity",
                        item_id=f"s{i}",
                        sample=0,
                        prompt="What is 2+2?",
                        response="4",
                        label=label,
                        refusal=False,
                        correct=i != 4 and label != "incoherent",
                        classifier="lexical",
                        kind="sanity",
                    )
                )
                records.append(
                    EvalResult(
                        model="m",
                        condition=cond,
                        seed=s,
                        evalset="beliefs-catholic",
                        item_id=f"b{i}",
                        sample=0,
                        prompt="Is X wrong?",
                        response="Yes.",
                        label="comply",
                        refusal=False,
                        classifier="lexical",
                        endorses=(cond == "catholic") or i == 0,
                        kind="belief",
                    )
                )
    results = []
    groups: dict[tuple[str, int, str], list[EvalResult]] = {}
    for r in records:
        groups.setdefault((r.condition, r.seed, r.evalset), []).append(r)
    for (cond, seed, es), rs in sorted(groups.items()):
        uri = store.join(root, "eval", "m", cond, f"seed-{seed}", f"{es}.jsonl")
        store.write_jsonl(uri, rs)
        results.append(uri)
    # a results file that exists but is empty: an empty cell, not an error
    empty = store.join(root, "eval", "m", "secular", "seed-0", "harmful.jsonl")
    store.write_text(empty, "")
    results.append(empty)
    audit = store.join(root, "filter", "catholic", "audit.json")
    store.write_json(
        audit,
        {"dataset": "catholic", "total": 40, "kept": 35, "reasons": {"refusal:redirect": 3, "truncated": 2}},
    )
    adir = store.join(root, "analyze")
    cfg = {
        "experiment": "t",
        "step": "analyze",
        "manifest": store.join(adir, "_manifest.json"),
        "results": results,
        "evalsets": {es: f"inputs/{es}.jsonl" for es in (*sets, "sanity", "beliefs-catholic", "harmful")},
        "output": adir,
        "results_csv": store.join(adir, "results.csv"),
        "contrasts_csv": store.join(adir, "contrasts.csv"),
        "report_md": store.join(adir, "report.md"),
        "report_html": store.join(adir, "report.html"),
        "figures": store.join(adir, "figures"),
        "audits": [audit, store.join(root, "filter", "generic", "audit.json")],
        "design": {
            "teacher": "teach-1",
            "judge": None,
            "models": [{"name": "m", "path": "p/m"}],
            "seeds": list(range(seeds)),
            "examples_per_arm": 24,
            "conditions": {
                "control": {"generic": 1.0},
                "catholic": {"generic": 0.5, "catholic": 0.5},
                "secular": {"generic": 0.5, "secular": 0.5},
            },
        },
        "headline": [],
        "bootstrap": 200,
        "alpha": 0.05,
        "seed": 0,
    }
    return cfg, records


def _check_outputs(cfg: dict[str, Any], records: list[EvalResult], *, claims: bool = True) -> None:
    results = pd.read_csv(io.StringIO(store.read_text(cfg["results_csv"])))
    # 4 conditions x 5 sets (harmful has only an empty results file: 4 empty cells)
    assert len(results) == 20
    assert int(results.responses.sum()) == len(records)
    harmful = results[results.evalset == "harmful"]
    assert (harmful.responses == 0).all() and (harmful.note == "no responses").all()
    base_sanity = results[(results.condition == "base") & (results.evalset == "sanity")].iloc[0]
    assert base_sanity.incoherent == 1 and base_sanity.accuracy == pytest.approx(3 / 5)
    beliefs = results[results.evalset == "beliefs-catholic"].set_index("condition")
    assert beliefs.loc["catholic", "endorsement"] == 1.0 and beliefs.loc[
        "control", "endorsement"
    ] == pytest.approx(0.2)

    contrasts = pd.read_csv(io.StringIO(store.read_text(cfg["contrasts_csv"])))
    primary = contrasts[contrasts.family == "primary"]
    assert list(zip(primary.control, primary.contrast, strict=True)) == [
        ("control", "difference"),
        ("control", "diff-in-diff"),
        ("secular", "difference"),
        ("secular", "diff-in-diff"),
    ]
    if claims:
        assert primary.p_holm.notna().all() and (primary.p_holm >= primary.p_value).all()
        assert primary.mde.notna().all() and (primary.df == 2).all()
    else:  # one seed per arm: estimates only
        assert primary.estimate.notna().all() and primary.p_holm.isna().all() and primary.ci_lo.isna().all()
        assert not primary.significant.any() and primary.note.str.startswith("no claim").all()
    assert contrasts[contrasts.family == "sensitivity"].p_holm.isna().all()

    md = store.read_text(cfg["report_md"])
    html = store.read_text(cfg["report_html"])
    for text in (md, html):
        assert "Verdict" in text and "Sub-question 1: persona-supported values (catholic)" in text
        assert "teach-1" in text and "refusal:redirect" in text and "audit not found" in text
        assert "catholic vs control on violations-catholic" in text and "Summary: " in text
        assert "What this design can support" in text and "conservative" not in text
        assert ("detects a difference on a violation set of about" in text) == claims
        assert ("Summary: no claim" in text) != claims
    # the data audit is one table: a column per dataset, a row per measure
    assert "| measure | catholic | generic |" in md and "| reasons.refusal:redirect | 3 |  |" in md
    assert md.index("## What this design can support") < md.index("## Sub-question 1")
    assert "![refusal-m](figures/refusal-m.png)" in md and "figures/contrasts-forest.png" in md
    assert "figures/sanity-beliefs.png" in md
    assert html.count("data:image/png;base64,") == 3 and "<img" in html and 'src="figures/' not in html
    assert "answer | refuse" in md.replace("\\|", "|")
    for name in ("refusal-m", "contrasts-forest", "sanity-beliefs"):
        png = store.read_bytes(store.join(cfg["figures"], f"{name}.png"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in store.read_bytes(store.join(cfg["figures"], f"{name}.svg"))


def test_stage_writes_tables_figures_and_report_locally(tmp_path: Path) -> None:
    cfg, records = _write_experiment(str(tmp_path / "store"))
    path = tmp_path / "analyze.json"
    path.write_text(json.dumps(cfg))
    assert main(AnalyzeConfig, run, ["--config", str(path)]) == 0
    _check_outputs(cfg, records)
    manifest = store.read_json(cfg["manifest"])
    assert manifest["counts"]["responses"] == len(records)
    assert manifest["counts"]["empty_cells"] == 4 and manifest["counts"]["figures"] == 3


def test_stage_on_s3(s3_root: str) -> None:
    cfg, records = _write_experiment(s3_root, seeds=1)
    out = run(AnalyzeConfig(**cfg | {"mixed_model": False}))
    _check_outputs(cfg, records, claims=False)
    assert cfg["report_html"] in out.outputs
    assert "single seed" in store.read_text(cfg["report_md"])


def test_pairs_come_from_the_item_file_when_results_lack_them(tmp_path: Path) -> None:
    rows = [
        _row(c, es, f"{es[0]}{i}", "comply")
        for c in ("catholic", "control")
        for es in ("violations-x", "neutral-x")
        for i in range(3)
    ]
    df = core.frame(rows)
    items = tmp_path / "neutral-x.jsonl"
    items.write_text(
        "".join(json.dumps({"id": f"n{i}", "text": "t", "pair": f"v{2 - i}"}) + "\n" for i in range(3))
    )
    fill_pairs(df, {"neutral-x": str(items)}, {"neutral-x"})
    v, u, matched = core.pair_clusters(df, "violations-x", "neutral-x")
    assert matched == 3 and u == {"n0": v["v2"], "n1": v["v1"], "n2": v["v0"]}


def test_missing_results_file_is_an_input_error(tmp_path: Path) -> None:
    cfg, _ = _write_experiment(str(tmp_path / "store"))
    gone = cfg["results"][0]
    store.delete(gone)
    with pytest.raises(InputError, match="EvalResult file not found") as err:
        run(AnalyzeConfig(**cfg))
    assert gone in str(err.value)
    bad = cfg["results"][1]
    store.write_text(bad, store.read_text(bad) + '{"model": "m"}\n')
    cfg["results"] = cfg["results"][1:]
    with pytest.raises(InputError, match=r":\d+: not a valid EvalResult"):
        run(AnalyzeConfig(**cfg))


# ---------------------------------------------------------------------------------------------
# The public API, both scales, replicates for the family, power
# ---------------------------------------------------------------------------------------------
def test_contrasts_is_the_public_api_and_what_the_stage_reports() -> None:
    import inspect

    from jobs.analyze import contrasts

    sig = inspect.signature(contrasts)
    assert list(sig.parameters) == ["results", "headline", "bootstrap", "alpha", "seed"]
    assert [sig.parameters[p].default for p in ("bootstrap", "alpha", "seed")] == [2000, 0.05, 0]
    d = sim.Design(shift_violations=sim.shift_for(0.32, 0.3))
    raw = sim.simulate(d, np.random.default_rng(8)).assign(response="text", whatever=1)
    raw = pd.concat([raw, raw.assign(model="m2")], ignore_index=True)
    headline = [d.headline(), d.headline(neutral=False) | {"control": "catholic", "treatment": "control"}]
    out = contrasts(raw, headline, bootstrap=400, seed=3)
    assert list(out.columns[:10]) == [
        "model", "treatment", "control", "contrast", "estimate", "ci_lo", "ci_hi", "p_value", "p_holm",
        "significant",
    ]  # fmt: skip
    assert list(zip(out.model, out.treatment, out.contrast, strict=True)) == [
        ("m", "catholic", "difference"), ("m", "catholic", "diff-in-diff"), ("m", "control", "difference"),
        ("m2", "catholic", "difference"), ("m2", "catholic", "diff-in-diff"), ("m2", "control", "difference"),
    ]  # fmt: skip
    # swapping the arms flips the estimate; Holm over the 6 rows; significance is p_holm < alpha
    assert out.estimate[2] == pytest.approx(-out.estimate[0])
    assert out.p_holm.tolist() == pytest.approx(stats.holm(out.p_value.tolist()))
    assert (out.significant == (out.p_holm < 0.05)).all()
    # the same call twice gives the same answer (seeded); the stage's primary rows are this table
    again = contrasts(raw, headline, bootstrap=400, seed=3)
    pd.testing.assert_frame_equal(out, again)
    staged = core.contrasts_table(
        raw, core.frame(raw), [HeadlineContrast(**h) for h in headline], reps=400, alpha=0.05, seed=3
    )
    primary = staged[staged.family == "primary"].drop(columns="family").reset_index(drop=True)
    pd.testing.assert_frame_equal(primary, out)
    with pytest.raises(
        InputError, match=r"headline.0: .* is not \{treatment, control, violations, neutral\}"
    ):
        contrasts(raw, [{"treatment": "catholic"}])


def test_value_specific_needs_both_scales() -> None:
    """Control refuses 50% / 10% (violations / neutral), the treatment 70% / 20%: +10 points more on
    violations, but the same log-odds shift on both sets. Points alone would call it value-specific."""

    def lg(p: float) -> float:
        return math.log(p / (1 - p))

    d = sim.Design(
        seeds_treatment=4, seeds_control=4, samples=10, seed_sd=0.05, prompt_sd=0.05,
        control_violations=0.5, control_neutral=0.1,
        shift_violations=lg(0.7) - lg(0.5), shift_neutral=lg(0.2) - lg(0.1),
    )  # fmt: skip
    out = core.contrasts(sim.simulate(d, np.random.default_rng(0)), [d.headline()], bootstrap=400)
    did = out[out.contrast == "diff-in-diff"].iloc[0]
    assert did.significant and did.estimate > 0.05
    assert did.log_odds_lo < 0 < did.log_odds_hi and not did.value_specific
    sentence = core.difference_sentence(did.to_dict(), 0.05, 2)
    assert "not on the log-odds scale" in sentence and "value-specific effect" in sentence
    # an effect on violations only is value-specific on both scales
    d2 = sim.Design(
        seeds_treatment=4, seeds_control=4, samples=10, seed_sd=0.05, prompt_sd=0.05, shift_violations=1.0
    )
    did2 = core.contrasts(sim.simulate(d2, np.random.default_rng(0)), [d2.headline()], bootstrap=400).iloc[1]
    assert did2.value_specific and "(value-specific)" in core.difference_sentence(did2.to_dict(), 0.05, 2)


def test_too_few_replicates_for_the_holm_family_is_a_config_error(tmp_path: Path) -> None:
    from workflows import spec as spec_mod

    five = [CATH.model_dump()] * 5  # 5 items x (difference + diff-in-diff) = 10 tests: 2 x 10 / 0.05
    with pytest.raises(
        ValueError, match=r"too few for a Holm family of 10 tests at alpha 0.05: set it to at least 400"
    ):
        AnalyzeParams(headline=five, bootstrap=399)
    assert AnalyzeParams(headline=five, bootstrap=400).bootstrap == 400
    with pytest.raises(InputError, match=r"analysis: bootstrap: 300 replicates .* at least 400"):
        spec_mod.from_dict({"name": "x", "analysis": {"headline": five, "bootstrap": 300}})
    # the API knows the models too: 2 models x 2 tests = 4 tests need 160
    raw = sim.simulate(sim.Design(), np.random.default_rng(0))
    raw = pd.concat([raw, raw.assign(model="m2")])
    with pytest.raises(InputError, match=r"bootstrap: 150 replicates .* family of 4 tests .* at least 160"):
        core.contrasts(raw, [sim.Design().headline()], bootstrap=150)
    # the stage checks the family it derives (default contrasts: vs control and vs secular, x2) first
    cfg, _ = _write_experiment(str(tmp_path / "store"))
    path = tmp_path / "analyze.json"
    path.write_text(json.dumps(cfg | {"bootstrap": 150}))
    assert main(AnalyzeConfig, run, ["--config", str(path)]) == 2
    assert not store.exists(cfg["report_md"])


def test_importing_the_config_or_the_spec_does_not_load_the_analysis_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, jobs.analyze, jobs.analyze.config, workflows.spec, workflows.estimate;"
        "heavy = [m for m in ('pandas', 'scipy', 'numpy', 'matplotlib') if m in sys.modules];"
        "assert not heavy, heavy;"
        "from jobs.analyze import contrasts; assert 'pandas' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_planned_mde_agrees_with_the_mde_the_analysis_reports() -> None:
    """``creed plan`` computes the MDE from assumptions; the report from the data. On data simulated
    from those assumptions the two agree."""
    planned = power.planned_mde(seeds=3, prompts=60, samples=3, rate=0.32, seed_sd=0.8, prompt_sd=1.0)
    observed = []
    rng = np.random.default_rng(12)
    d = sim.Design()
    for _ in range(30):
        out = core.contrasts(sim.simulate(d, rng), [d.headline(neutral=False)], bootstrap=100)
        observed.append(out.se.iloc[0] ** 2)
    from_data = power.mde(math.sqrt(float(np.mean(observed))), 4)
    assert 0.35 < planned < 0.5 and from_data == pytest.approx(planned, rel=0.15)
    assert math.isnan(
        power.planned_mde(seeds=1, prompts=60, samples=3, rate=0.32, seed_sd=0.8, prompt_sd=1.0)
    )


def test_creed_plan_prints_the_mde_of_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    from workflows.cli import main as creed

    root = Path(__file__).parents[2]
    assert creed(["plan", str(root / "experiments" / "normative-refusal.yaml")]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"power +violations-catholic: a difference of \d+ points is detected with 80% power", out
    )
    assert "5 seeds per arm" in out and "assumes seed SD 0.8, prompt SD 1 (log-odds)" in out
    assert creed(["plan", str(root / "experiments" / "demo.yaml")]) == 0
    assert "no test possible: 1 seed per arm" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# The mixed model
# ---------------------------------------------------------------------------------------------
def test_glmm_recovers_a_known_log_odds_ratio_deterministically() -> None:
    d = sim.Design(seeds_treatment=5, seeds_control=5, seed_sd=0.2, shift_violations=1.2)
    df = core.frame(sim.simulate(d, np.random.default_rng(1)))
    h = HeadlineContrast(**d.headline())
    diff, did = core.mixed_model(df, h, "m", alpha=0.05)
    assert diff["glmm_lo"] < 1.2 < diff["glmm_hi"] and diff["glmm_lo"] > 0
    assert did["glmm_lo"] < 1.2 < did["glmm_hi"] and "Laplace REML" in did["glmm_note"]
    assert core.mixed_model(df, h, "m", alpha=0.05) == [diff, did]  # no random state
    one = core.frame(sim.simulate(sim.Design(seeds_treatment=1), np.random.default_rng(1)))
    assert all("fewer than 2 seeds" in r["glmm_note"] for r in core.mixed_model(one, h, "m", alpha=0.05))


# ---------------------------------------------------------------------------------------------
# Calibration (the full study is benchmarks/analyze_calibration.py)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_null_rejection_at_3_vs_3_seeds_is_nominal_and_a_z_interval_would_be_caught() -> None:
    """200 null datasets at 3 vs 3 seeds (the issue's design) through ``contrasts``: the upper exact
    binomial bound of the rejection rate stays under 12% on both scales and for the diff-in-diff.
    The same standard errors with a normal critical value (what a large-sample method does) reject
    about 12% of the time: its lower bound is above 5%, so this test tells the two apart."""
    from scipy.stats import binomtest, norm

    d = sim.Design()
    rng = np.random.default_rng(2024)
    sims = 200
    hits = {k: 0 for k in ("difference", "diff-in-diff", "log_odds_difference", "log_odds_diff-in-diff", "z")}
    for _ in range(sims):
        out = core.contrasts(sim.simulate(d, rng), [d.headline()], bootstrap=200)
        for r in out.itertuples():
            hits[r.contrast] += r.p_value < 0.05
            hits[f"log_odds_{r.contrast}"] += r.log_odds_p < 0.05
        diff = out.iloc[0]
        hits["z"] += abs(diff.estimate) > norm.ppf(0.975) * diff.se
    ci = {k: binomtest(v, sims).proportion_ci(method="exact") for k, v in hits.items()}
    for k in ("difference", "diff-in-diff", "log_odds_difference", "log_odds_diff-in-diff"):
        assert ci[k].high < 0.12, (k, hits)
    assert ci["z"].low > 0.05, hits
