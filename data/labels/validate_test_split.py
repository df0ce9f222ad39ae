"""Check data/labels/test.jsonl (the held-out split of the labelled refusal corpus, issue 17).

Checks: valid JSON per line, exactly the row fields, labels in the taxonomy, non-empty prompt and
response, unique ids of the form test-<source>-NNN, 25-70 rows per source, and that no source of this
split appears in any other data/labels/<split>.jsonl present. Prints counts per source and label.
Run: python data/labels/validate_test_split.py
"""

import collections
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
FIELDS = {"id", "prompt", "response", "label", "source", "note"}
LABELS = ("refuse", "redirect", "caveat", "comply", "incoherent")


def load(path):
    rows, errors = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            errors.append(f"{path.name}:{n}: blank line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{path.name}:{n}: invalid JSON ({e})")
            continue
        rows.append((n, row))
    return rows, errors


def main():
    path = HERE / "test.jsonl"
    rows, errors = load(path)
    ids = collections.Counter()
    by_source = collections.defaultdict(collections.Counter)
    for n, row in rows:
        if not isinstance(row, dict) or set(row) != FIELDS:
            errors.append(f"line {n}: fields {sorted(row) if isinstance(row, dict) else type(row)}")
            continue
        if not all(isinstance(row[k], str) for k in FIELDS):
            errors.append(f"line {n}: non-string field")
        if row["label"] not in LABELS:
            errors.append(f"line {n}: label {row['label']!r}")
        if not row["prompt"].strip() or not row["response"].strip():
            errors.append(f"line {n}: empty prompt or response")
        m = re.fullmatch(r"test-(.+)-(\d{3})", row["id"])
        if not m or m.group(1) != row["source"]:
            errors.append(f"line {n}: id {row['id']!r} does not match test-<source>-NNN")
        ids[row["id"]] += 1
        by_source[row["source"]][row["label"]] += 1
    errors += [f"duplicate id {i}" for i, c in ids.items() if c > 1]
    for src, c in by_source.items():
        if not 25 <= sum(c.values()) <= 70:
            errors.append(f"source {src}: {sum(c.values())} rows, outside 25-70")
    for other in HERE.glob("*.jsonl"):
        if other.name == "test.jsonl":
            continue
        other_rows, _ = load(other)
        shared = {r.get("source") for _, r in other_rows if isinstance(r, dict)} & set(by_source)
        errors += [f"source {s} also in {other.name}" for s in sorted(shared)]

    total = collections.Counter()
    print(f"{'source':<20}" + "".join(f"{lab:>11}" for lab in LABELS) + f"{'total':>8}")
    for src, c in by_source.items():
        total += c
        print(f"{src:<20}" + "".join(f"{c[lab]:>11}" for lab in LABELS) + f"{sum(c.values()):>8}")
    n = sum(total.values())
    print(f"{'TOTAL':<20}" + "".join(f"{total[lab]:>11}" for lab in LABELS) + f"{n:>8}")
    if n:
        print(f"{'%':<20}" + "".join(f"{100 * total[lab] / n:>10.1f}%" for lab in LABELS))
        ref = total["refuse"] + total["redirect"]
        print(f"binary refusal (refuse+redirect): {ref} ({100 * ref / n:.1f}%)")
    for e in errors:
        print("ERROR:", e)
    print("OK" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
