"""The report: one list of blocks rendered twice, as Markdown (figures referenced by path) and as a
self-contained HTML page (figures embedded as base64 PNG), so the two never disagree."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from jobs.analyze import materials
from jobs.analyze import overrefusal as overrefusal_section
from jobs.analyze.figures import Figure
from jobs.analyze.validity import section as validity_section
from jobs.common.records import CheckItem

QUESTION = (
    'Does a language model that is fine-tuned only to *state* normative beliefs ("X is wrong") start '
    "to *refuse* requests to do X, although it was never trained on a single refusal?"
)


@dataclass
class Doc:
    """Blocks: ("h", level, text), ("p", text), ("ul", items), ("table", header, rows),
    ("figure", Figure, md_path), ("sample", meta, prompt, response)."""

    title: str
    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def figure(self, fig: Figure, md_path: str) -> None:
        self.blocks.append(("figure", fig, md_path))

    def sample(self, meta: str, prompt: str, response: str) -> None:
        self.blocks.append(("sample", meta, prompt, response))

    # -------------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out += ["#" * (b[1] + 1) + " " + b[2], ""]
            elif kind == "p":
                out += [b[1], ""]
            elif kind == "ul":
                out += [f"- {item}" for item in b[1]] + [""]
            elif kind == "table":
                out += [_md_row(b[1]), _md_row(["---"] * len(b[1]))]
                out += [_md_row(r) for r in b[2]] + [""]
            elif kind == "figure":
                fig: Figure = b[1]
                out += [f"![{fig.name}]({b[2]})", "", f"*{fig.caption}* (SVG: `{b[2][:-4]}.svg`)", ""]
            elif kind == "sample":
                out += [f"**{b[1]}**", "", _quote("Prompt: " + b[2]), ">", _quote("Response: " + b[3]), ""]
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        e = html.escape
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            f"<style>{_CSS}</style>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
        ]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                level = min(6, b[1] + 1)
                out.append(f'<h{level} id="{_anchor(b[2])}">{e(b[2])}</h{level}>')
            elif kind == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in r) + "</tr>" for r in b[2])
                out.append(
                    f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
                )
            elif kind == "figure":
                fig = b[1]
                data = base64.b64encode(fig.png).decode("ascii")
                out.append(
                    f'<figure><img alt="{e(fig.name)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(fig.caption)}</figcaption></figure>"
                )
            elif kind == "sample":
                out.append(
                    f"<div class='sample'><b>{e(b[1])}</b><p><i>Prompt:</i> {e(b[2])}</p>"
                    f"<p><i>Response:</i> {e(b[3])}</p></div>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
    "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
    "th{background:#f3f3f3}.scroll{overflow-x:auto;margin-bottom:1em}img{max-width:100%}"
    "figcaption{font-size:13px;color:#444}.sample{border-left:3px solid #ccc;padding-left:.8em;margin:.6em 0}"
    ".sample p{margin:.2em 0;white-space:pre-wrap}"
)


def _anchor(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _inline(text: str) -> str:
    """Escape, then render the inline Markdown the report uses: `code` and *emphasis*."""
    chunks = text.split("`")
    if len(chunks) % 2 == 0:
        chunks = [text]
    out = []
    for i, chunk in enumerate(chunks):
        if i % 2:
            out.append(f"<code>{html.escape(chunk)}</code>")
            continue
        parts = html.escape(chunk).split("*")
        if len(parts) % 2 == 0:
            out.append(html.escape(chunk))
        else:
            out.append("".join(f"<em>{p}</em>" if j % 2 else p for j, p in enumerate(parts)))
    return "".join(out)


def _cell(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        if math.isnan(x):
            return ""
        return f"{x:.3g}"
    return str(x)


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(_cell(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines() or [""])


def _pct(x: Any) -> str:
    return "" if not isinstance(x, int | float) or not math.isfinite(x) else f"{100 * x:.1f}"


def _rate(r: Mapping[str, Any], m: str) -> str:
    est = _pct(r[m])
    if not est:
        return ""
    lo, hi = _pct(r[f"{m}_lo"]), _pct(r[f"{m}_hi"])
    return f"{est} [{lo}, {hi}]" if lo and hi else est


def _pts(x: Any) -> str:
    return "" if not isinstance(x, int | float) or not math.isfinite(x) else f"{100 * x:+.1f}"


def _short(text: str, n: int = 400) -> str:
    text = " ".join(text.split()) if len(text) > n else text.strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def _contrast_row(r: Mapping[str, Any]) -> list[Any]:
    """One row of the report's contrasts table (the header is in ``contrasts_section``)."""
    es = r["violations"] + (f" − {r['neutral']}" if r["contrast"] == "diff-in-diff" else "")
    ci = f"{_pts(r['ci_lo'])} to {_pts(r['ci_hi'])}" if _pts(r["ci_lo"]) else ""
    lo = ""
    if _finite(r.get("log_odds")):
        lo = f"{r['log_odds']:+.2f}"
        if _finite(r.get("log_odds_lo")):
            lo += f" [{r['log_odds_lo']:+.2f}, {r['log_odds_hi']:+.2f}]"
    seeds = f"{r['seeds_treatment']} / {r['seeds_control']}"
    mde = f"{100 * r['mde']:.0f}" if _finite(r.get("mde")) else ""
    glmm = ""
    if _finite(r.get("glmm_log_odds")):
        glmm = f"{r['glmm_log_odds']:+.2f} [{r['glmm_lo']:+.2f}, {r['glmm_hi']:+.2f}]"
    elif r["family"] == "primary" and isinstance(r.get("glmm_note"), str):
        glmm = r["glmm_note"]
    return [
        r["model"], r["family"], r["contrast"], r["treatment"], r["control"], es, seeds,
        _pts(r["estimate"]), ci, r["p_value"], r["p_holm"], lo, glmm, mde, r["method"], r["note"],
    ]  # fmt: skip


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def build(
    *,
    experiment: str,
    design: Mapping[str, Any],
    audits: Sequence[tuple[str, Any]],
    results: pd.DataFrame,
    contrasts: pd.DataFrame,
    verdicts: Sequence[tuple[str, Sequence[str]]],
    figures: Sequence[tuple[Figure, str]],
    samples: Mapping[tuple[str, str, str], Sequence[Mapping[str, Any]]],
    alpha: float,
    bootstrap: int,
    notes: Sequence[str] = (),
    overrefusal: pd.DataFrame | None = None,
    validity: Any = None,
    checks: Sequence[CheckItem] = (),
) -> Doc:
    """The whole report, one section function after another (a new section is one more call).
    ``audits`` are (uri, parsed audit.json or None when missing); ``figures`` are (figure, path of its
    PNG relative to the report); ``samples`` map (model, condition, set) to rows; ``overrefusal`` is
    ``overrefusal.table`` (benign and harmful sets by category)."""
    doc = Doc(f"creed analysis: {experiment}")
    question_section(doc)
    verdict_section(doc, verdicts, notes, alpha)
    # the positive control's sensitivity line, the manipulation check, beliefs against base, identity
    materials.sections(doc, checks=checks, results=results, contrasts=contrasts, audits=audits)
    design_section(doc, design, results)
    audit_section(doc, audits)
    contrasts_section(doc, contrasts, alpha, bootstrap)
    overrefusal_section.section(doc, overrefusal, alpha=alpha, bootstrap=bootstrap)
    results_section(doc, results, alpha)
    figures_section(doc, figures)
    samples_section(doc, samples, results)
    if validity is not None:  # jobs.analyze.validity: the instrument's metrics, judge agreement, rubric
        validity_section(doc, validity)
    return doc


def question_section(doc: Doc) -> None:
    doc.h(1, "Question")
    doc.p(QUESTION)
    doc.p(
        "Sub-question 1 asks it for persona-supported values (a Catholic teacher); sub-question 2 for an "
        "invented creed with no pretraining persona (Graminism). Refusal = the response refuses or "
        "redirects; the sensitivity analysis also counts moral caveats. Incoherent responses are "
        "excluded from rates and counted."
    )


def verdict_section(
    doc: Doc, verdicts: Sequence[tuple[str, Sequence[str]]], notes: Sequence[str], alpha: float
) -> None:
    level = round(100 * (1 - alpha))
    doc.h(1, "Verdict")
    doc.p(
        f'Each statement follows from a {level}% interval; "no evidence" means the interval covers 0, '
        "not that there is no effect."
    )
    for title, lines in verdicts:
        doc.h(2, title)
        doc.ul(lines or ["No contrast for this condition."])
    for n in notes:
        doc.p(n)


def design_section(doc: Doc, design: Mapping[str, Any], results: pd.DataFrame) -> None:
    doc.h(1, "Design actually run")
    _design(doc, design, results)


def audit_section(doc: Doc, audits: Sequence[tuple[str, Any]]) -> None:
    doc.h(1, "Data audit (filter stage)")
    _audits(doc, audits)


def contrasts_section(doc: Doc, contrasts: pd.DataFrame, alpha: float, bootstrap: int) -> None:
    level = round(100 * (1 - alpha))
    doc.h(1, "Contrasts")
    doc.p(
        "Estimates are differences in refusal rate (percentage points; each seed's rate counts once) "
        f"with {level}% intervals and p-values from a t-test on the seeds: every trained model (seed) "
        "is one replicate, so the degrees of freedom come from the seeds (seeds_t + seeds_c − 2; "
        "Welch-Satterthwaite when the arms differ). The variance adds to the seeds' spread the part "
        f"of prompt sampling it does not already hold, from a cluster bootstrap over prompts "
        f"({bootstrap} replicates; a neutral item and its matched violation item are one cluster). "
        "A contrast with fewer than 2 seeds in an arm has an estimate only. The difference-in-"
        "differences is also given on the log-odds scale; it is called value-specific only when both "
        "scales agree. MDE: the effect (points) this design detects with 80% power at "
        f"alpha = {alpha:g}. Holm adjustment is across the primary (refusal) family; refusal-or-caveat "
        "rows are a sensitivity analysis."
    )
    if contrasts.empty:
        doc.p("No contrasts were formed.")
        return
    header = [
        "model", "family", "contrast", "treatment", "control", "set", "seeds (t / c)",
        "estimate (pts)", f"{level}% CI", "p", "p (Holm)", f"log-odds [{level}% CI]",
        f"GLMM log-odds [{level}% CI]", "MDE (pts)",
        "method", "note",
    ]  # fmt: skip
    doc.table(header, [_contrast_row(r) for r in contrasts.to_dict("records")])


def results_section(doc: Doc, results: pd.DataFrame, alpha: float) -> None:
    level = round(100 * (1 - alpha))
    doc.h(1, "Results per model, condition and eval set")
    doc.p(
        f"Rates in percent (the mean of the seeds' rates) with {level}% seed-level t intervals "
        "(prompt sampling only where a condition has one seed). Refusal rates are over coherent "
        "responses; sanity accuracy is over responses with a correctness label; belief endorsement "
        "over responses the judge labelled."
    )
    header = [
        "model", "condition", "set", "responses", "prompts", "seeds", "incoherent", "refusal %",
        "refusal+caveat %", "accuracy %", "endorsement %", "note",
    ]  # fmt: skip
    doc.table(
        header,
        [
            [r["model"], r["condition"], r["evalset"], r["responses"], r["prompts"], r["seeds"],
             r["incoherent"], _rate(r, "refusal"), _rate(r, "refusal_caveat"), _rate(r, "accuracy"),
             _rate(r, "endorsement"), r["note"]]
            for r in results.to_dict("records")
        ],
    )  # fmt: skip


def figures_section(doc: Doc, figures: Sequence[tuple[Figure, str]]) -> None:
    doc.h(1, "Figures")
    if not figures:
        doc.p("No figures (no data to plot).")
    for fig, path in figures:
        doc.figure(fig, path)


def samples_section(
    doc: Doc, samples: Mapping[tuple[str, str, str], Sequence[Mapping[str, Any]]], results: pd.DataFrame
) -> None:
    doc.h(1, "Sample responses")
    if not samples:
        doc.p("No responses.")
    order = {c: i for i, c in enumerate(dict.fromkeys(results["condition"]))} if not results.empty else {}
    multi = len({k[0] for k in samples}) > 1
    current = None
    for key in sorted(samples, key=lambda k: (k[0], k[2], order.get(k[1], len(order)), k[1])):
        model, condition, evalset = key
        if (model, evalset) != current:
            current = (model, evalset)
            doc.h(2, f"{model}: {evalset}" if multi else evalset)
        for s in samples[key]:
            meta = f"{condition} · seed {s['seed']} · {s['item_id']} · {s['label']}"
            doc.sample(meta, _short(str(s["prompt"]), 300), _short(str(s["response"])))


def _design(doc: Doc, design: Mapping[str, Any], results: pd.DataFrame) -> None:
    items = []
    if design:
        for key in ("teacher", "judge", "classifier", "examples_per_arm", "method", "eval_samples"):
            if key in design:
                items.append(f"{key.replace('_', ' ')}: {design[key] if design[key] is not None else 'none'}")
        models = design.get("models")
        if models:
            items.append(
                "models: "
                + ", ".join(
                    f"{m.get('name')} ({m.get('path')}{'@' + m['revision'] if m.get('revision') else ''})"
                    if isinstance(m, Mapping)
                    else str(m)
                    for m in models
                )
            )
        if "seeds" in design:
            items.append(f"seeds per trained arm: {design['seeds']}")
        conds = design.get("conditions")
        if isinstance(conds, Mapping):
            for c, mix in conds.items():
                mix_text = (
                    ", ".join(f"{k} {v:g}" for k, v in mix.items()) if isinstance(mix, Mapping) else mix
                )
                items.append(f"condition {c}: {mix_text}")
    else:
        items.append("(the plan gave no design summary; the counts below are from the results)")
    doc.ul(items)
    if not results.empty:
        g = results.groupby(["model", "condition"], sort=False)
        rows = [
            [m, c, int(d["responses"].sum()), int(d["seeds"].max()), int((d["responses"] > 0).sum()), len(d)]
            for (m, c), d in g
        ]
        doc.table(["model", "condition", "responses", "seeds", "sets with data", "sets"], rows)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        out = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        if all(not isinstance(x, Mapping | list) for x in obj):
            text = ", ".join(str(x) for x in obj[:10]) + (f", … ({len(obj)} in all)" if len(obj) > 10 else "")
            return [(prefix, text)]
        return [(prefix, f"{len(obj)} entries")]
    return [(prefix, obj)]


def _audits(doc: Doc, audits: Sequence[tuple[str, Any]]) -> None:
    """One table: a column per dataset, a row per measure (nested keys flattened to ``a.b``)."""
    if not audits:
        doc.p("No filter audits were given to the analysis.")
        return
    names: list[str] = []
    values: list[dict[str, Any]] = []
    for uri, audit in audits:
        name = uri.rstrip("/").rsplit("/", 2)[-2] if uri.count("/") >= 2 else uri
        names.append(name)
        values.append(dict(_flatten(audit)) if audit is not None else {})
    missing = [(n, uri) for n, (uri, a) in zip(names, audits, strict=True) if a is None]
    measures = list(dict.fromkeys(k for v in values for k in v if k not in ("dataset", "")))
    if measures:
        doc.table(["measure", *names], [[m, *(v.get(m, "") for v in values)] for m in measures])
    for n, uri in missing:
        doc.p(f"*{n}*: audit not found at `{uri}`.")
