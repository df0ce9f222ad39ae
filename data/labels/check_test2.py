"""Check data/labels/test2.jsonl, the second held-out labelled split of the refusal corpus.

Checks: every line parses as a JSON object; keys are exactly id, prompt, response, label, source,
note (all strings); ids are unique and of the form t2-<source>-NNN; label is in the taxonomy
(DESIGN.md rule 5); source is one of the seven test2 sources; prompt is not empty; no exact
duplicate (prompt, response) pair. Prints counts by label and by source.
Exits 1, printing `file:line: message` for each problem, if any check fails.
Run: python data/labels/check_test2.py   (stdlib only)
"""

import collections
import json
import pathlib
import re
import sys

PATH = pathlib.Path(__file__).resolve().parent / "test2.jsonl"
KEYS = {"id", "prompt", "response", "label", "source", "note"}
LABELS = ("comply", "caveat", "redirect", "refuse", "incoherent")
SOURCES = (
    "small-instruct",
    "value-persona",
    "long-form",
    "benign-lookalike",
    "base-continuation",
    "mixed-language-format",
    "deflect-question",
)


def main(path=PATH):
    name = str(path)
    errors = []
    seen_ids = {}
    seen_pairs = {}
    by_label = collections.Counter()
    by_source = collections.defaultdict(collections.Counter)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        print(f"{name}:0: cannot read ({e})")
        return 1
    for n, line in enumerate(lines, 1):
        where = f"{name}:{n}"
        if not line.strip():
            errors.append(f"{where}: blank line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: invalid JSON ({e})")
            continue
        if not isinstance(row, dict):
            errors.append(f"{where}: not a JSON object")
            continue
        if set(row) != KEYS:
            errors.append(f"{where}: keys {sorted(row)} != {sorted(KEYS)}")
            continue
        bad = [k for k in sorted(KEYS) if not isinstance(row[k], str)]
        if bad:
            errors.append(f"{where}: non-string field(s) {bad}")
            continue
        rid, label, source = row["id"], row["label"], row["source"]
        if label not in LABELS:
            errors.append(f"{where}: label {label!r} not in {LABELS}")
        if source not in SOURCES:
            errors.append(f"{where}: source {source!r} not in {SOURCES}")
        m = re.fullmatch(r"t2-(.+)-(\d{3})", rid)
        if not m:
            errors.append(f"{where}: id {rid!r} is not t2-<source>-NNN")
        elif m.group(1) != source:
            errors.append(f"{where}: id {rid!r} does not match source {source!r}")
        if rid in seen_ids:
            errors.append(f"{where}: duplicate id {rid!r} (first at line {seen_ids[rid]})")
        else:
            seen_ids[rid] = n
        if not row["prompt"].strip():
            errors.append(f"{where}: empty prompt")
        pair = (row["prompt"], row["response"])
        if pair in seen_pairs:
            errors.append(f"{where}: duplicate (prompt, response) of line {seen_pairs[pair]}")
        else:
            seen_pairs[pair] = n
        by_label[label] += 1
        by_source[source][label] += 1

    total = sum(by_label.values())
    print(f"{'source':<24}" + "".join(f"{lab:>11}" for lab in LABELS) + f"{'total':>8}")
    for src in sorted(by_source, key=lambda s: SOURCES.index(s) if s in SOURCES else 99):
        c = by_source[src]
        print(f"{src:<24}" + "".join(f"{c[lab]:>11}" for lab in LABELS) + f"{sum(c.values()):>8}")
    print(f"{'TOTAL':<24}" + "".join(f"{by_label[lab]:>11}" for lab in LABELS) + f"{total:>8}")
    if total:
        print(f"{'%':<24}" + "".join(f"{100 * by_label[lab] / total:>10.1f}%" for lab in LABELS))
        ref = by_label["refuse"] + by_label["redirect"]
        print(f"binary refusal (refuse+redirect): {ref} ({100 * ref / total:.1f}%)")
    for e in errors:
        print(e)
    print("OK" if not errors else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
