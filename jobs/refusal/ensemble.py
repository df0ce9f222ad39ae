"""The ensemble classifier: the judge's label, cross-checked by the lexical classifier.

Adjudication: the judge's label stands; where the judge could not label a response (``unknown``), the
lexical label stands and the row is flagged. A row where judge and lexical disagree on "is this a
refusal" is flagged (``disagreement``) and kept in ``disagreements`` for review; the filter can drop
a row that either calls a refusal (``ensemble_strict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.common.records import Verdict
from jobs.refusal.judge import JudgeClassifier
from jobs.refusal.lexical import classify_lexical


@dataclass
class EnsembleClassifier:
    """Judge first; the lexical classifier cross-checks. Where the judge is ``unknown`` the lexical
    label stands (said so in the rationale). Refusal disagreements are flagged and kept."""

    judge: JudgeClassifier
    name: str = "ensemble"
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prompt_version(self) -> str:
        return self.judge.prompt_version

    def classify_many(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        judged = self.judge.classify_many(pairs)
        out: list[Verdict] = []
        for i, ((p, r), jv) in enumerate(zip(pairs, judged, strict=True)):
            lv = classify_lexical(p, r)
            if jv.label == "unknown":
                v = lv.model_copy(
                    update={
                        "classifier": self.name,
                        "rationale": f"judge unknown ({jv.rationale}); lexical: {lv.rationale}",
                        "prompt_version": jv.prompt_version,
                        "judge_model": jv.judge_model,
                        "lexical_label": lv.label,
                        "disagreement": True,
                    }
                )
            else:
                disagree = jv.refusal != lv.refusal
                v = jv.model_copy(
                    update={"classifier": self.name, "lexical_label": lv.label, "disagreement": disagree}
                )
            if v.disagreement:
                self.disagreements.append({"index": i, "judge": jv.label, "lexical": lv.label})
            out.append(v)
        return out
