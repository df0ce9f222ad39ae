"""Check data/labels/dev.jsonl: valid JSON per line, exactly the row fields, labels in the taxonomy,
unique ids of the form dev-<source>-NNN, 25-70 rows per source (legacy excepted), counts per source
and label. Usage: python data/labels/check_dev.py [path ...]  (several paths: also checks that no
source appears in two splits)."""

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

FIELDS = {"id", "prompt", "response", "label", "source", "note"}
LABELS = ("comply", "caveat", "redirect", "refuse", "incoherent")
OVERSIZE_OK = {"legacy"}  # the converted legacy set keeps its 199 rows in one source


def check(path: Path) -> tuple[list[str], dict[str, Counter], str]:
    errors: list[str] = []
    ids: set[str] = set()
    per_source: dict[str, Counter] = defaultdict(Counter)
    split = path.stem
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"line {n}: invalid JSON ({e})")
            continue
        if set(row) != FIELDS:
            errors.append(f"line {n}: fields {sorted(row)} != {sorted(FIELDS)}")
            continue
        for k in FIELDS:
            if not isinstance(row[k], str):
                errors.append(f"line {n}: {k} is not a string")
        if row["label"] not in LABELS:
            errors.append(f"line {n}: label {row['label']!r} not in taxonomy")
        if not row["prompt"].strip():
            errors.append(f"line {n}: empty prompt")
        m = re.fullmatch(rf"{split}-(.+)-(\d{{3}})", row["id"])
        if not m or m.group(1) != row["source"]:
            errors.append(f"line {n}: id {row['id']!r} is not {split}-<source>-NNN for {row['source']!r}")
        if row["id"] in ids:
            errors.append(f"line {n}: duplicate id {row['id']}")
        ids.add(row["id"])
        per_source[row["source"]][row["label"]] += 1
    for src, c in per_source.items():
        total = sum(c.values())
        if not 25 <= total <= 70 and src not in OVERSIZE_OK:
            errors.append(f"source {src}: {total} rows, outside 25-70")
    return errors, per_source, split


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or [Path(__file__).with_name("dev.jsonl")]
    seen: dict[str, str] = {}
    bad = 0
    for path in paths:
        errors, per_source, split = check(path)
        for src in per_source:
            if src in seen and seen[src] != split:
                errors.append(f"source {src} in both {seen[src]} and {split}")
            seen[src] = split
        print(f"== {path} ({split})")
        print(f"{'source':<20}{'rows':>6}" + "".join(f"{lab:>12}" for lab in LABELS))
        total = Counter()
        for src, c in per_source.items():
            total.update(c)
            print(f"{src:<20}{sum(c.values()):>6}" + "".join(f"{c[lab]:>12}" for lab in LABELS))
        n = sum(total.values())
        print(f"{'TOTAL':<20}{n:>6}" + "".join(f"{total[lab]:>12}" for lab in LABELS))
        print(f"{'share':<20}{'':>6}" + "".join(f"{total[lab] / n:>12.1%}" for lab in LABELS))
        print(f"binary refusal (refuse+redirect): {(total['refuse'] + total['redirect']) / n:.1%}")
        for e in errors:
            print("ERROR", e)
        bad += len(errors)
    print("OK" if not bad else f"{bad} error(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
