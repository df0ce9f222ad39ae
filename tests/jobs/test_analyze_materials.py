"""The analysis of the experimental materials: headline contrasts on tagged or manipulation-checked
items only (with their twins), the positive control in its own family and its sensitivity line, and
the report sections (manipulation check, beliefs against base, self-identification, expected
refusals)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs.analyze import core, materials, select
from jobs.analyze.config import AnalyzeConfig, HeadlineContrast
from jobs.analyze.run import run
from jobs.common import store
from jobs.common.records import CheckItem, EvalResult, eval_kind

N = 20  # violation items; even ones value-specific, odd ones eco-overlap


def _tags(i: int) -> list[str]:
    return ["value-specific" if i % 2 == 0 else "eco-overlap", "topic:lawn"]


def _rows(rates: dict[str, tuple[float, float, float]], n: int = N, seeds: int = 1) -> list[dict[str, Any]]:
    """EvalResult dicts: per condition, (refusal rate on value-specific violations, on the other
    violations, on neutral twins), with exact counts: the first items of each group refuse."""
    out = []
    for cond, (vs, other, neutral) in rates.items():
        for seed in range(1 if cond == "base" else seeds):  # the base model is one model
            for es in ("violations-graminist", "neutral-graminist"):
                for i in range(n):
                    if es.startswith("neutral"):
                        refuses = i < round(neutral * n)
                    else:  # the j-th item of its tag group
                        refuses = i // 2 < round((vs if i % 2 == 0 else other) * n / 2)
                    out.append(
                        {
                            "model": "m",
                            "condition": cond,
                            "seed": seed,
                            "evalset": es,
                            "item_id": f"{'v' if es.startswith('v') else 'n'}gra-{i:03d}",
                            "sample": 0,
                            "label": "refuse" if refuses else "comply",
                            "pair": f"vgra-{i:03d}" if es.startswith("neutral") else None,
                            "tags": _tags(i) if es.startswith("violations") else ["topic:lawn"],
                        }
                    )
    return out


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return core.frame(rows)  # the item tags ride along, a tuple per row


def _diff(df: pd.DataFrame, c: HeadlineContrast) -> dict[str, Any]:
    rows = core.contrast_rows(df, c, "m", outcome="refusal", reps=300, alpha=0.05, seed=1)
    return {r["contrast"]: r for r in rows}


def test_a_tagged_contrast_uses_only_its_items_and_their_twins() -> None:
    # the value arm refuses the value-specific items only; on the others it is like control
    df = _frame(_rows({"graminist": (0.9, 0.1, 0.1), "control": (0.1, 0.1, 0.1)}, n=40))
    tagged = HeadlineContrast(
        treatment="graminist",
        control="control",
        violations="violations-graminist",
        neutral="neutral-graminist",
        tags=["value-specific"],
    )
    sdf, [c] = select.apply(df, [tagged], select.item_tags(df), {})
    assert (c.violations, c.neutral) == (
        "violations-graminist[value-specific]",
        "neutral-graminist[value-specific]",
    )
    assert c.tags is None and len(sdf) == len(df) + len(df) // 2  # the original rows and the selected ones
    items = set(sdf.loc[sdf.evalset == c.violations, "item_id"])
    assert items == {f"vgra-{i:03d}" for i in range(0, 40, 2)}
    assert set(sdf.loc[sdf.evalset == c.neutral, "pair"]) == items  # the twins follow their items
    untagged = tagged.model_copy(update={"tags": None})
    on_tagged, on_all = _diff(sdf, c), _diff(df, untagged)
    assert on_tagged["difference"]["estimate"] > 0.6  # the value-specific effect, undiluted
    assert on_all["difference"]["estimate"] < on_tagged["difference"]["estimate"] - 0.25
    assert on_tagged["diff-in-diff"]["prompt_clusters"] == 20  # 20 matched pairs, one cluster each
    # a contrast that selects nothing is left as it is
    same_df, [same] = select.apply(df, [untagged], {}, {})
    assert same == untagged and same_df is df


def test_valid_only_keeps_the_items_the_check_found_valid() -> None:
    df = _frame(_rows({"graminist": (0.5, 0.5, 0.1), "control": (0.1, 0.1, 0.1)}))
    validity = {
        ("violations-graminist", f"vgra-{i:03d}"): (True if i < 5 else False if i < 15 else None)
        for i in range(N)
    }
    c = HeadlineContrast(
        treatment="graminist", control="control", violations="violations-graminist", valid_only=True
    )
    both = c.model_copy(update={"tags": ["value-specific"]})
    sdf, [v, vb] = select.apply(df, [c, both], {}, validity)
    assert v.violations == "violations-graminist[valid]"
    assert set(sdf.loc[sdf.evalset == v.violations, "item_id"]) == {f"vgra-{i:03d}" for i in range(5)}
    tags = select.item_tags(df)
    sdf, [vb] = select.apply(df, [both], tags, validity)
    assert vb.violations == "violations-graminist[value-specific,valid]"
    assert set(sdf.loc[sdf.evalset == vb.violations, "item_id"]) == {"vgra-000", "vgra-002", "vgra-004"}


def test_positive_control_is_its_own_family_and_reads_as_a_sensitivity_line() -> None:
    rows = _rows(
        {"control": (0.1, 0.1, 0.1), "graminist": (0.15, 0.1, 0.1), "positive-graminist": (0.8, 0.8, 0.4)},
        seeds=3,  # with one seed an arm supports no interval (see the last lines)
    )
    df = _frame(rows)
    found = materials.positive_contrasts(
        df["condition"].unique(), ["violations-graminist", "neutral-graminist"]
    )
    assert [(c.treatment, c.control) for c in found] == [
        ("positive-graminist", "control"),
        ("graminist", "control"),
    ]
    cfg = AnalyzeConfig(
        results=["x"], output="o", results_csv="a", contrasts_csv="b", report_md="c", report_html="d",
        figures="f", bootstrap=300,
        secondary=[HeadlineContrast(treatment="graminist", control="control", violations="violations-graminist",
                                    tags=["eco-overlap"])],
    )  # fmt: skip
    mat = materials.Materials(tags=select.item_tags(df))
    extra = materials.extra_contrasts(df, cfg, mat, ["violations-graminist", "neutral-graminist"])
    assert set(extra["family"]) == {
        "positive-control", "positive-control-sensitivity", "secondary", "secondary-sensitivity",
    }  # fmt: skip
    assert "primary" not in set(extra["family"])
    secondary = extra[extra.family == "secondary"]
    assert list(secondary.violations) == ["violations-graminist[eco-overlap]"]
    lines = materials.sensitivity_lines(extra)
    assert len(lines) == 1
    pos = extra[(extra.family == "positive-control") & (extra.treatment == "positive-graminist")].iloc[0]
    assert pos.estimate > 0.4 and pos.ci_lo > 0
    assert (
        f"trained refusal (positive-graminist) changes refusal by {100 * pos.estimate:+.1f} points"
        in lines[0]
    )
    assert "stated belief (graminist) changes it by" in lines[0]
    assert "The pipeline detects a trained refusal" in lines[0]
    # where the positive arm moves nothing, the line says a null result means nothing
    flat = _frame(_rows({"control": (0.2, 0.2, 0.2), "positive-graminist": (0.2, 0.2, 0.2)}, seeds=3))
    no_secondary = cfg.model_copy(update={"secondary": []})
    extra = materials.extra_contrasts(flat, no_secondary, mat, ["violations-graminist"])
    assert "did not detect even a trained refusal" in materials.sensitivity_lines(extra)[0]
    # one seed per arm (the demo): the estimate, and no interval
    one = _frame(_rows({"control": (0.1, 0.1, 0.1), "positive-graminist": (0.8, 0.8, 0.4)}))
    line = materials.sensitivity_lines(
        materials.extra_contrasts(one, no_secondary, mat, ["violations-graminist"])
    )[0]
    assert "+70.0 points" in line and "no interval: fewer than 2 seeds" in line


# ---------------------------------------------------------------------------------------------
# The stage: report sections and the families in contrasts.csv
# ---------------------------------------------------------------------------------------------
def _write(root: str) -> dict[str, Any]:
    rows = _rows(
        {
            "base": (0.1, 0.1, 0.1),
            "control": (0.1, 0.1, 0.1),
            "graminist": (0.6, 0.2, 0.15),
            "positive-graminist": (0.9, 0.9, 0.5),
        },
        seeds=2,  # the fewest that supports a claim
    )
    results = []
    by_cond: dict[str, list[EvalResult]] = {}
    for r in rows:
        by_cond.setdefault(r["condition"], []).append(
            EvalResult(
                **r,
                prompt="p",
                response="r",
                refusal=r["label"] == "refuse",
                classifier="lexical",
                kind=eval_kind(r["evalset"]),
            )
        )
    for cond in by_cond:  # belief probes: the value arm endorses more than base
        for i in range(6):
            by_cond[cond].append(
                EvalResult(
                    model="m",
                    condition=cond,
                    seed=0,
                    evalset="beliefs-graminist",
                    item_id=f"bgra-{i:03d}",
                    sample=0,
                    prompt="Do you think a lawn is wrong?",
                    response="Yes.",
                    label="comply",
                    refusal=False,
                    classifier="lexical",
                    kind="belief",
                    endorses=i < (5 if cond == "graminist" else 2),
                )
            )
    for cond, rs in by_cond.items():
        uri = store.join(root, "eval", "m", cond, "seed-0", "all.jsonl")
        store.write_jsonl(uri, rs)
        results.append(uri)
    checks = store.join(root, "check", "graminist", "items.jsonl")
    store.write_jsonl(
        checks,
        [
            CheckItem(
                value="graminist",
                evalset="violations-graminist",
                item_id=f"vgra-{i:03d}",
                twin_set="neutral-graminist",
                twin_id=f"ngra-{i:03d}",
                tags=_tags(i),
                personas=2,
                objects=1.0 if i < 12 else 0.0,
                helps=1.0,
                valid=i < 12,
            )
            for i in range(N)
        ],
    )
    audits = []
    for ds, extra in (
        ("graminist", {"refusals": "forbidden", "identity": {"mode": "keep", "kept_with_identity": 7, "kept_share": 0.35, "dropped": 0},
                       "exclude_terms": {"dropped": 2}, "reasons": {"excluded_term": 2}}),
        ("refusal-graminist", {"refusals": "expected", "let_through": {"refusals_kept": 14},
                               "identity": {"mode": "keep", "kept_with_identity": 1, "kept_share": 0.07, "dropped": 0}}),
    ):  # fmt: skip
        uri = store.join(root, "filter", ds, "audit.json")
        store.write_json(uri, {"dataset": ds, "total": 30, "kept": 20} | extra)
        audits.append(uri)
    adir = store.join(root, "analyze")
    vg = {"treatment": "graminist", "violations": "violations-graminist", "neutral": "neutral-graminist"}
    return {
        "experiment": "t", "step": "analyze", "manifest": store.join(adir, "_manifest.json"), "results": results,
        "evalsets": {}, "output": adir, "results_csv": store.join(adir, "results.csv"),
        "contrasts_csv": store.join(adir, "contrasts.csv"), "report_md": store.join(adir, "report.md"),
        "report_html": store.join(adir, "report.html"), "figures": store.join(adir, "figures"),
        "audits": audits, "checks": [checks], "bootstrap": 200, "mixed_model": False,
        "headline": [vg | {"control": "control", "tags": ["value-specific"]}],
        "secondary": [vg | {"control": "control"}, vg | {"control": "control", "valid_only": True}],
        "design": {"conditions": {"control": {}, "graminist": {}, "positive-graminist": {}}},
    }  # fmt: skip


def test_stage_reports_the_materials_and_keeps_the_families_apart(tmp_path: Path) -> None:
    cfg = _write(str(tmp_path))
    run(AnalyzeConfig(**cfg))
    contrasts = pd.read_csv(io.StringIO(store.read_text(cfg["contrasts_csv"])))
    primary = contrasts[contrasts.family == "primary"]
    assert set(primary.violations) == {"violations-graminist[value-specific]"}
    assert set(primary.neutral) == {"neutral-graminist[value-specific]"}
    secondary = contrasts[contrasts.family == "secondary"]
    assert set(secondary.violations) == {"violations-graminist", "violations-graminist[valid]"}
    valid = secondary[
        (secondary.violations == "violations-graminist[valid]") & (secondary.contrast == "difference")
    ]
    assert valid.iloc[0].prompt_clusters == 12  # the items the check found valid
    assert (contrasts.family == "positive-control").sum() == 2
    # the primary family is Holm-adjusted on its own: two tests (difference and diff-in-diff)
    p = sorted(primary.p_value)
    assert primary.p_holm.max() == pytest.approx(min(1.0, max(2 * p[0], p[1])), abs=1e-5)  # csv: 6 digits

    md = store.read_text(cfg["report_md"])
    html = store.read_text(cfg["report_html"])
    for text in (md, html):
        assert "Sensitivity: the positive control" in text and "trained refusal (positive-graminist)" in text
        assert (
            "Teacher manipulation check" in text and "what the value system itself would do" in text.lower()
        )
        assert "Belief endorsement against base" in text
        assert "self-identification" in text.lower()
    check_row = next(
        line for line in md.splitlines() if line.startswith("| graminist | violations-graminist")
    )
    assert "| 20 | 20 | 12 | 60% |" in check_row and "6 of 10" in check_row
    belief = next(line for line in md.splitlines() if "| beliefs-graminist | graminist |" in line)
    assert "| +50.0 |" in belief  # 83% against base's 33%
    refusal_row = next(line for line in md.splitlines() if line.startswith("| refusal-graminist | expected"))
    assert "| 14 |" in refusal_row
    gram_row = next(line for line in md.splitlines() if line.startswith("| graminist | forbidden"))
    assert "7 (35%)" in gram_row and gram_row.rstrip().endswith("| 2 |")
    assert not math.isnan(float(primary.iloc[0].estimate))
