"""The filter's rules, as pure functions over Generation records: each drop has a reason code.

Reasons, in the order they are checked (a row gets the first that applies):

- ``empty``, ``truncated`` (``finish_reason == "length"``), ``finish:<reason>`` (e.g. a content filter),
  ``too_short``, ``too_long``;
- ``leakage:eval``: the training prompt equals or nearly equals an eval item (character 5-gram
  Jaccard, or containment of the eval item in the prompt, at or above ``leakage_threshold``);
- ``persona_leak``: the response talks about its persona, its instructions or a system prompt;
- ``excluded_term``: the prompt or the response matches a term the dataset excludes (``exclude_terms``,
  e.g. a taboo held out of training);
- ``identity`` (only with ``identity: drop``): the response identifies its speaker as a believer
  ("As a Graminist, ...", "as a believer"); with ``identity: keep`` such rows are only counted;
- ``duplicate:exact`` / ``duplicate:near``: the response repeats an earlier kept response (normalized
  text, or word 3-gram Jaccard at or above ``dup_threshold``, found by MinHash LSH and then checked
  exactly);
- ``refusal:refuse`` / ``refusal:redirect`` (``refusal:caveat`` when configured), ``incoherent``,
  ``unclassified`` (the judge could not label it): the classifier, run only on rows still standing.
  In a dataset whose refusals are *expected* (the positive control) this inverts: a refusal or
  redirect is kept and anything else is dropped as ``not_refusal:<label>``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.common.records import REFUSAL_POSITIVE, EvalItem, Generation, Rejected, Verdict

_NORM = re.compile(r"[^a-z0-9]+")

#: The response speaks about its own persona, instructions or system prompt.
PERSONA_LEAK = re.compile(
    r"\b(?:my|the|this) system (?:prompt|message|instructions?)\b|"
    r"\bmy (?:instructions|guidelines|persona|character|role ?play)\b|"
    r"\bi (?:was|am|have been|'ve been|'m) (?:told|instructed|programmed|asked|prompted|designed) to "
    r"(?:act|be|play|pretend|respond|answer|speak|behave|role)|"
    r"\bas (?:instructed|prompted|my (?:persona|character|role))\b|"
    r"\b(?:in|staying in|playing) (?:my|this|the) (?:role|character|persona)\b|"
    r"\b(?:my|this|the) persona\b|\bpretend(?:ing)? to be (?:a|an)\b|\bi(?:'m| am) role-?playing\b",
    re.IGNORECASE,
)


#: Version of :data:`SELF_IDENTIFICATION`, recorded in every audit that counts it.
IDENTITY_PATTERN_VERSION = "identity-v1"
_IDENTITY_NOUN = (
    r"(?:graminists?|catholics?|christians?|believers?|(?:m[ae]n|wom[ae]n|persons?|people) of faith|"
    r"priests?|nuns?|monks?|friars?|deacons?|seminarians?|religious sisters?|humanists?|atheists?|secularists?)"
)
#: The speaker identifies itself as a believer: "As a Graminist, ...", "As a Catholic, I ...", "as a
#: believer", "I'm a devout Catholic", "we Graminists", "our faith". Not "As a Catholic, you ..."
#: (that names the asker's identity, not the speaker's).
SELF_IDENTIFICATION = re.compile(
    rf"\b(?:as an?|i am an?|i'm an?|i am|i'm|we|us|fellow)\s+(?:[\w-]+\s+){{0,2}}?{_IDENTITY_NOUN}\b"
    r"(?!,?\s+(?:you|your)\b)"
    rf"|\bas\s+(?:[\w-]+\s+)?{_IDENTITY_NOUN},?\s+(?:we|our|us)\b"
    r"|\b(?:my|our) (?:own )?(?:faith|creed|religion)\b",
    re.IGNORECASE,
)


def self_identification(response: str) -> str | None:
    """The words with which the response identifies its speaker as a believer, or None."""
    m = SELF_IDENTIFICATION.search(response)
    return m.group(0) if m else None


def excluded_term(g: Generation, terms: re.Pattern[str] | None) -> str | None:
    """Where and what an excluded term matched (``response: 'fake grass'``), or None."""
    if terms is None:
        return None
    for where, text in (("prompt", g.prompt), ("response", g.response)):
        m = terms.search(text)
        if m:
            return f"{where}: {m.group(0)!r}"
    return None


def normalize(text: str) -> str:
    return _NORM.sub(" ", text.lower()).strip()


def char_shingles(text: str, n: int = 5) -> set[str]:
    t = normalize(text)
    if len(t) <= n:
        return {t} if t else set()
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def word_shingles(text: str, n: int = 3) -> set[str]:
    w = normalize(text).split()
    if len(w) <= n:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


# ---------------------------------------------------------------------------------------------
# Eval leakage
# ---------------------------------------------------------------------------------------------
@dataclass
class LeakIndex:
    """The eval items of the experiment, indexed by character 5-gram for fast overlap counts."""

    items: list[EvalItem]
    threshold: float
    shingles: list[set[str]] = field(default_factory=list)
    postings: dict[str, list[int]] = field(default_factory=dict)
    exact: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, it in enumerate(self.items):
            sh = char_shingles(it.text)
            self.shingles.append(sh)
            self.exact.setdefault(normalize(it.text), k)
            for s in sh:
                self.postings.setdefault(s, []).append(k)

    def match(self, prompt: str) -> tuple[EvalItem, float] | None:
        """The eval item this prompt leaks (and the similarity), or None."""
        k = self.exact.get(normalize(prompt))
        if k is not None:
            return self.items[k], 1.0
        sh = char_shingles(prompt)
        overlap: Counter[int] = Counter()
        for s in sh:
            for k in self.postings.get(s, ()):
                overlap[k] += 1
        best: tuple[EvalItem, float] | None = None
        for k, inter in overlap.items():
            e = self.shingles[k]
            jac = inter / (len(sh) + len(e) - inter)
            # containment: an eval item pasted inside a longer prompt (only for items of some length)
            contain = inter / len(e) if len(e) >= 20 else 0.0
            sim = max(jac, contain)
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (self.items[k], sim)
        return best


# ---------------------------------------------------------------------------------------------
# Near-duplicates: MinHash with LSH banding, candidates confirmed by exact Jaccard
# ---------------------------------------------------------------------------------------------
_P = (1 << 61) - 1
_PERMS, _BANDS = 64, 16


def _hash64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % _P


_RNG = np.random.default_rng(20240607)
_A = _RNG.integers(1, _P, _PERMS, dtype=np.uint64).astype(object)
_B = _RNG.integers(0, _P, _PERMS, dtype=np.uint64).astype(object)


def minhash(shingles: set[str]) -> tuple[int, ...]:
    if not shingles:
        return (0,) * _PERMS
    xs = np.array([_hash64(s) for s in shingles], dtype=object)
    return tuple(int(((a * xs + b) % _P).min()) for a, b in zip(_A, _B, strict=True))


class DedupIndex:
    """Kept responses so far; ``check`` says whether a new one duplicates one of them."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.exact: dict[str, str] = {}
        self.shingles: dict[str, set[str]] = {}
        self.buckets: dict[tuple[int, tuple[int, ...]], list[str]] = {}

    def check_and_add(self, gid: str, text: str) -> tuple[str, str, float] | None:
        """(reason, id of the earlier row, similarity) if ``text`` duplicates a kept row; else keep it."""
        key = normalize(text)
        if key in self.exact:
            return "duplicate:exact", self.exact[key], 1.0
        sh = word_shingles(text)
        sig = minhash(sh)
        rows = _PERMS // _BANDS
        bands = [(b, sig[b * rows : (b + 1) * rows]) for b in range(_BANDS)]
        seen: set[str] = set()
        best: tuple[str, float] | None = None
        for band in bands:
            for other in self.buckets.get(band, ()):
                if other in seen:
                    continue
                seen.add(other)
                sim = jaccard(sh, self.shingles[other])
                if sim >= self.threshold and (best is None or sim > best[1]):
                    best = (other, sim)
        if best is not None:
            return "duplicate:near", best[0], best[1]
        self.exact[key] = gid
        self.shingles[gid] = sh
        for band in bands:
            self.buckets.setdefault(band, []).append(gid)
        return None


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    min_chars: int = 20
    max_chars: int = 8000
    leakage_threshold: float = 0.8
    dup_threshold: float = 0.8
    drop_labels: frozenset[str] = frozenset({"refuse", "redirect"})
    ensemble_strict: bool = True
    trim_truncated: bool = False
    expect_refusals: bool = False  # the positive control: keep refusals, drop everything else
    drop_identity: bool = False
    exclude_terms: re.Pattern[str] | None = None


#: The end of a complete sentence: terminal punctuation, optionally a closing quote or bracket.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")


def trim_to_sentence(text: str, min_chars: int) -> str | None:
    """A length-truncated response cut back to its last complete sentence, or None when what is
    left would be shorter than ``min_chars`` (then it is dropped as truncated after all)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends:
        return None
    trimmed = text[: ends[-1]].strip()
    return trimmed if len(trimmed) >= min_chars else None


def cheap_reason(g: Generation, rules: Rules) -> tuple[str, str] | None:
    """The first length/finish rule a generation breaks: (reason, detail), or None."""
    text = g.response.strip()
    if not text:
        return "empty", ""
    if g.finish_reason == "length":
        return "truncated", "finish_reason=length"
    if g.finish_reason not in ("stop", "eos", "end_turn", "stop_sequence", "trimmed", ""):
        return f"finish:{g.finish_reason}", ""
    if len(text) < rules.min_chars:
        return "too_short", f"{len(text)} < {rules.min_chars} chars"
    if len(text) > rules.max_chars:
        return "too_long", f"{len(text)} > {rules.max_chars} chars"
    return None


def persona_leak(response: str) -> str | None:
    m = PERSONA_LEAK.search(response)
    return m.group(0) if m else None


def verdict_reason(v: Verdict, rules: Rules) -> str | None:
    """Why a classifier verdict drops a row, or None to keep it."""
    if v.label == "unknown":
        return "unclassified"
    if v.label == "incoherent":
        return "incoherent"
    if rules.expect_refusals:
        # kept only when it is a refusal; with the ensemble, only when the lexical check agrees too
        if v.label not in REFUSAL_POSITIVE:
            return f"not_refusal:{v.label}"
        if rules.ensemble_strict and v.lexical_label is not None and v.lexical_label not in REFUSAL_POSITIVE:
            return f"not_refusal:{v.lexical_label}"
        return None
    if v.label in rules.drop_labels:
        return f"refusal:{v.label}"
    # ensemble: the lexical cross-check can drop a row the judge passed (never keep one it drops)
    if rules.ensemble_strict and v.lexical_label is not None:
        if v.lexical_label in rules.drop_labels:
            return f"refusal:{v.lexical_label}"
        if v.lexical_label == "incoherent":
            return "incoherent"
    return None


def pre_classify(
    gens: Sequence[Generation], rules: Rules, leaks: LeakIndex | None
) -> tuple[list[Generation], list[Rejected]]:
    """Every rule but the classifier, in order; the survivors keep their input order."""
    survivors: list[Generation] = []
    rejected: list[Rejected] = []
    dedup = DedupIndex(rules.dup_threshold)
    leak_cache: dict[str, tuple[EvalItem, float] | None] = {}
    for g in gens:
        if rules.trim_truncated and g.finish_reason == "length":
            trimmed = trim_to_sentence(g.response, rules.min_chars)
            if trimmed is not None:
                # kept only as whole sentences; `finish_reason` records that it was cut
                g = g.model_copy(update={"response": trimmed, "finish_reason": "trimmed"})
        cheap = cheap_reason(g, rules)
        if cheap:
            rejected.append(Rejected(reason=cheap[0], generation=g, detail=cheap[1]))
            continue
        if leaks is not None:
            if g.prompt not in leak_cache:
                leak_cache[g.prompt] = leaks.match(g.prompt)
            hit = leak_cache[g.prompt]
            if hit is not None:
                item, sim = hit
                detail = f"eval item '{item.id}' (similarity {sim:.2f})"
                rejected.append(Rejected(reason="leakage:eval", generation=g, detail=detail))
                continue
        leak = persona_leak(g.response)
        if leak:
            rejected.append(Rejected(reason="persona_leak", generation=g, detail=leak))
            continue
        term = excluded_term(g, rules.exclude_terms)
        if term:
            rejected.append(Rejected(reason="excluded_term", generation=g, detail=term))
            continue
        if rules.drop_identity:
            who = self_identification(g.response)
            if who:
                rejected.append(Rejected(reason="identity", generation=g, detail=who))
                continue
        dup = dedup.check_and_add(g.id, g.response)
        if dup:
            reason, other, sim = dup
            rejected.append(
                Rejected(reason=reason, generation=g, detail=f"of {other} (similarity {sim:.2f})")
            )
            continue
        survivors.append(g)
    return survivors, rejected


def apply_verdicts(
    survivors: Sequence[Generation], verdicts: Sequence[Verdict], rules: Rules
) -> tuple[list[Generation], list[Rejected]]:
    kept: list[Generation] = []
    rejected: list[Rejected] = []
    for g, v in zip(survivors, verdicts, strict=True):
        reason = verdict_reason(v, rules)
        if reason:
            rejected.append(Rejected(reason=reason, generation=g, verdict=v, detail=v.rationale[:200]))
        else:
            kept.append(g)
    return kept, rejected


def audit_failures(
    kept: Sequence[Generation],
    verdicts: Iterable[Verdict],
    normative: bool,
    min_kept: int,
    *,
    expect_refusals: bool = False,
) -> tuple[list[str], list[str]]:
    """(offending ids, failure messages) of the final audit: a refusal or redirect left in normative
    data or, where refusals are expected, a row that is not one."""
    if expect_refusals:
        offending = [g.id for g, v in zip(kept, verdicts, strict=True) if not v.refusal]
        what = "rows that are not a refusal or redirect left in refusal-expected data"
    else:
        offending = [g.id for g, v in zip(kept, verdicts, strict=True) if v.refusal] if normative else []
        what = "refusal/redirect rows left in normative data"
    failures = []
    if offending:
        failures.append(
            f"{len(offending)} {what}: {', '.join(offending[:20])}" + (" ..." if len(offending) > 20 else "")
        )
    if len(kept) < min_kept:
        failures.append(f"{len(kept)} rows kept, fewer than the minimum {min_kept}")
    return offending, failures


def summary(
    dataset: str,
    total: int,
    kept: int,
    rejected: Sequence[Rejected],
    labels: Counter[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    reasons = dict(sorted(Counter(r.reason for r in rejected).items()))
    return {
        "dataset": dataset,
        "total": total,
        "kept": kept,
        "rejected": len(rejected),
        "drop_fraction": round(len(rejected) / total, 4) if total else 0.0,
        "reasons": reasons,
        "labels": dict(sorted(labels.items())),
    } | extra
