"""The over-refusal table (jobs/analyze/overrefusal.py): per arm and benchmark category, refusal on
benign and harmful sets with intervals and contrasts against control and base, through the stage."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from jobs.analyze import core, overrefusal
from jobs.analyze.config import AnalyzeConfig
from jobs.analyze.run import run
from jobs.common import store
from jobs.common.records import EvalKind, EvalResult

#: true refusal probabilities: (set, category) -> condition -> p
TRUTH = {
    ("xstest-safe", "homonyms"): {"base": 0.1, "control": 0.1, "catholic": 0.7},
    ("xstest-safe", "safe_contexts"): {"base": 0.2, "control": 0.2, "catholic": 0.2},
    ("xstest-unsafe", "contrast_homonyms"): {"base": 0.5, "control": 0.9, "catholic": 0.9},
}
KIND = {"xstest-safe": "benign", "xstest-unsafe": "harmful"}


def _records(rng: np.random.Generator, *, prompts: int = 40, seeds: int = 3) -> list[EvalResult]:
    out = []
    for (es, cat), probs in TRUTH.items():
        for cond, p in probs.items():
            for s in range(1 if cond == "base" else seeds):
                for i in range(prompts):
                    refused = bool(rng.random() < p)
                    out.append(
                        EvalResult(
                            model="m",
                            condition=cond,
                            seed=s,
                            evalset=es,
                            item_id=f"{cat}-{i:02d}",
                            sample=0,
                            prompt="p",
                            response="r",
                            label="refuse" if refused else "comply",
                            refusal=refused,
                            classifier="lexical",
                            kind=KIND[es],
                            tags=[f"type:{cat}", f"focus:w{i}"],
                        )
                    )
    return out


def _table(records: list[EvalResult], reps: int = 400) -> pd.DataFrame:
    df = core.frame(records)
    return overrefusal.table(df, reps=reps, alpha=0.05, rng=np.random.default_rng(0))


def test_frame_carries_item_tags() -> None:
    df = core.frame(_records(np.random.default_rng(1), prompts=2, seeds=1))
    assert df["tags"].iloc[0] == ("type:homonyms", "focus:w0")
    assert overrefusal.categories(df["tags"].iloc[0]) == ["homonyms"]


def test_table_has_every_arm_per_category_with_known_effects_covered() -> None:
    records = _records(np.random.default_rng(2))
    over = _table(records)
    # benign set first; an all-items row and one row per category; every arm in each
    assert list(dict.fromkeys(over["evalset"])) == ["xstest-safe", "xstest-unsafe"]
    assert list(dict.fromkeys(over.loc[over.evalset == "xstest-safe", "category"])) == [
        "all",
        "homonyms",
        "safe_contexts",
    ]
    # base first, then (no design given) alphabetical: core.condition_order
    assert list(over.loc[over.category == "homonyms", "condition"]) == ["base", "catholic", "control"]
    assert set(over.loc[over.evalset == "xstest-safe", "measure"]) == {"over-refusal"}
    assert set(over.loc[over.evalset == "xstest-unsafe", "measure"]) == {"refusal"}
    cell = over.set_index(["evalset", "category", "condition"])

    # rates are the pooled shares of the responses
    df = core.frame(records)
    hom = df[
        (df.evalset == "xstest-safe") & (df.item_id.str.startswith("homonyms")) & (df.condition == "catholic")
    ]
    assert cell.loc[("xstest-safe", "homonyms", "catholic"), "rate"] == pytest.approx(hom.refusal.mean())
    assert cell.loc[("xstest-safe", "homonyms", "catholic"), "responses"] == 120
    assert cell.loc[("xstest-safe", "homonyms", "base"), "seeds"] == 1

    # the over-refusal rise on homonyms is found against both references and covered; none on safe contexts
    for ref in ("control", "base"):
        r = cell.loc[("xstest-safe", "homonyms", "catholic")]
        assert r[f"vs_{ref}_lo"] > 0 and r[f"vs_{ref}_lo"] <= 0.6 <= r[f"vs_{ref}_hi"]
        est = r["rate"] - cell.loc[("xstest-safe", "homonyms", ref), "rate"]
        assert r[f"vs_{ref}"] == pytest.approx(est)
        s = cell.loc[("xstest-safe", "safe_contexts", "catholic")]
        assert s[f"vs_{ref}_lo"] <= 0 <= s[f"vs_{ref}_hi"]
    # fine-tuning raised refusal on the harmful set for both trained arms, against base only
    for cond in ("control", "catholic"):
        assert cell.loc[("xstest-unsafe", "contrast_homonyms", cond), "vs_base_lo"] > 0
    assert cell.loc[("xstest-unsafe", "contrast_homonyms", "catholic"), "vs_control_lo"] < 0
    # no contrast of a reference with itself, and base is never a treatment
    assert np.isnan(cell.loc[("xstest-safe", "all", "control"), "vs_control"])
    assert cell.loc[("xstest-safe", "all", "base"), ["vs_base", "vs_control"]].isna().all()

    # Holm over the all-items differences only; category rows are descriptive
    family = over[over.category == "all"]
    assert (family.vs_control_p_holm.dropna() >= family.vs_control_p.dropna() - 1e-12).all()
    # catholic vs control, catholic and control vs base, on two sets
    assert family.vs_control_p_holm.notna().sum() == 2 and family.vs_base_p_holm.notna().sum() == 4
    assert over.loc[over.category != "all", "vs_control_p_holm"].isna().all()


def test_incoherent_responses_are_excluded_and_sets_of_other_kinds_ignored() -> None:
    records = _records(np.random.default_rng(3), prompts=5, seeds=1)
    records[0] = records[0].model_copy(update={"label": "incoherent", "refusal": False})
    records.append(
        records[1].model_copy(update={"evalset": "violations-catholic", "kind": EvalKind.violation})
    )
    over = _table(records, reps=100)
    assert "violations-catholic" not in set(over.evalset)
    first = over[(over.evalset == records[0].evalset) & (over.category == "homonyms")].iloc[0]
    assert first.condition == records[0].condition and first.responses == 5 and first.coherent == 4


def test_no_benign_or_harmful_set_gives_an_empty_table_and_no_section() -> None:
    records = [
        r.model_copy(update={"evalset": "violations-x", "kind": EvalKind.violation})
        for r in _records(np.random.default_rng(4), prompts=3, seeds=1)
    ]
    result = overrefusal.analyze(core.frame(records), reps=100, alpha=0.05, seed=0)
    assert result.table.empty and result.figures == []


def test_a_frame_without_tags_gets_the_all_items_rows_only() -> None:
    df = core.frame(_records(np.random.default_rng(5), prompts=4, seeds=2)).drop(columns="tags")
    over = overrefusal.table(df, reps=100, alpha=0.05, rng=np.random.default_rng(0))
    assert set(over.category) == {"all"} and len(over) == 2 * 3


def test_stage_writes_the_table_figures_and_report_section(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    records = _records(np.random.default_rng(6), prompts=10, seeds=2)
    uris = []
    groups: dict[tuple[str, int, str], list[EvalResult]] = {}
    for r in records:
        groups.setdefault((r.condition, r.seed, r.evalset), []).append(r)
    for (cond, seed, es), rs in sorted(groups.items()):
        uris.append(store.join(root, "eval", "m", cond, f"seed-{seed}", f"{es}.jsonl"))
        store.write_jsonl(uris[-1], rs)
    adir = store.join(root, "analyze")
    cfg: dict[str, Any] = {
        "experiment": "t",
        "step": "analyze",
        "manifest": store.join(adir, "_manifest.json"),
        "results": uris,
        "evalsets": {es: f"inputs/{es}.jsonl" for es in KIND},
        "output": adir,
        "results_csv": store.join(adir, "results.csv"),
        "contrasts_csv": store.join(adir, "contrasts.csv"),
        "report_md": store.join(adir, "report.md"),
        "report_html": store.join(adir, "report.html"),
        "figures": store.join(adir, "figures"),
        "design": {
            "conditions": {"control": {"generic": 1.0}, "catholic": {"generic": 0.5, "catholic": 0.5}}
        },
        "bootstrap": 200,
        "mixed_model": False,
    }
    out = run(AnalyzeConfig(**cfg))
    csv_uri = store.join(adir, "overrefusal.csv")
    assert csv_uri in out.outputs
    table = pd.read_csv(io.StringIO(store.read_text(csv_uri)))
    assert len(table) == 3 * (1 + 2) + 3 * (1 + 1)  # 3 arms x (all + categories) per set
    assert set(table.category) == {"all", "homonyms", "safe_contexts", "contrast_homonyms"}
    md = store.read_text(cfg["report_md"])
    html = store.read_text(cfg["report_html"])
    for text in (md, html):
        assert "Over-refusal and refusal on standard benchmarks" in text and "By benchmark category" in text
        assert "over-refusal" in text and "homonyms" in text
    # the section sits between the contrasts and the per-cell results
    assert md.index("# Contrasts") < md.index("Over-refusal and refusal") < md.index("# Results per model")
    for es in KIND:
        name = f"overrefusal-m-{es}"
        assert f"figures/{name}.png" in md
        assert store.read_bytes(store.join(cfg["figures"], f"{name}.png"))[:4] == b"\x89PNG"
    assert json.loads(json.dumps(out.counts))["figures"] >= 3
