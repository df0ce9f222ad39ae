"""``creed import-evals``: turn a benchmark file (CSV, TSV, JSONL or Parquet) into an eval set.

creed import-evals xstest_prompts.csv --kind benign --text-col prompt --id-col id \\
    --tag-cols type focus note --where label=safe --id-prefix xstest- -o data/evals/xstest-safe.jsonl

Every kept row becomes one EvalItem: ``id`` (``--id-prefix`` + the ``--id-col`` value, or + the row's
number in the file), ``text`` (the ``--text-col`` value, verbatim) and ``tags`` (``<col>:<value>``
for every ``--tag-cols`` column with a value; a list value gives one tag per element). ``--where
COL=VALUE`` keeps only matching rows (repeat it: every condition must hold). Duplicate ids, empty
texts and unknown columns are errors that name ``file:line`` (Parquet: ``file:row N``); nothing is
written then. The output passes ``creed check-data``; rows come out in file order, so the same input
gives the same bytes. The set's kind goes in the spec (``eval.kinds``), unless its name says it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

from jobs.common.errors import InputError, NotFoundError
from jobs.common.records import EvalItem, EvalKind, eval_kind

#: What a row is read from: (where, row) with where = ``file:line`` or ``file:row N``.
Row = tuple[str, dict[str, Any]]
MAX_ERRORS = 20
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
#: Kinds whose items need fields a flat benchmark file does not map (accepted answers; the belief
#: and which answer endorses it): write those sets by hand.
UNSUPPORTED_KINDS = {
    EvalKind.sanity: "accepted answers on every item",
    EvalKind.belief: "the belief and an endorse:yes|no tag on every item",
}


def _fail(errors: list[str]) -> None:
    if errors:
        more = f"\n  ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        raise InputError("\n".join(errors[:MAX_ERRORS]) + more)


def file_format(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: cannot tell the format from '{suffix or '(no suffix)'}'; "
            f"name the file {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


# ---------------------------------------------------------------------------------------------
# Reading: columns and rows, each row with where it came from
# ---------------------------------------------------------------------------------------------
def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{source}:{line}: not valid UTF-8; re-save the file as UTF-8") from exc


def read_delimited(data: bytes, source: str, delimiter: str = ",") -> tuple[list[str], list[Row]]:
    """A CSV (or TSV) with a header row. ``where`` is the line a record starts on (a quoted field
    may span lines)."""
    reader = csv.reader(io.StringIO(_decode(data, source), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{source}:1: file is empty; the first line must name the columns") from None
    except csv.Error as exc:
        raise InputError(f"{source}:1: not valid CSV ({exc})") from exc
    errors = [f"{source}:1: column {i + 1} has no name" for i, c in enumerate(header) if not c.strip()]
    seen: set[str] = set()
    for c in header:
        if c in seen:
            errors.append(f"{source}:1: column '{c}' appears twice")
        seen.add(c)
    _fail(errors)
    rows: list[Row] = []
    start = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"{source}:{start}: not valid CSV ({exc})")
            break
        if fields and any(f.strip() for f in fields):
            if len(fields) != len(header):
                errors.append(f"{source}:{start}: {len(fields)} fields, the header has {len(header)}")
            else:
                rows.append((f"{source}:{start}", dict(zip(header, fields, strict=True))))
        start = reader.line_num + 1
    _fail(errors)
    return header, rows


def read_jsonl(data: bytes, source: str) -> tuple[list[str], list[Row]]:
    """One JSON object per line; the columns are every key seen, in order of first appearance."""
    columns: dict[str, None] = {}
    rows: list[Row] = []
    errors: list[str] = []
    for lineno, line in enumerate(_decode(data, source).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{source}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{source}:{lineno}: each line must be a JSON object")
            continue
        columns.update(dict.fromkeys(obj))
        rows.append((f"{source}:{lineno}", obj))
    _fail(errors)
    return list(columns), rows


def read_parquet(data: bytes, source: str) -> tuple[list[str], list[Row]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            f"{source}: reading Parquet needs the 'pyarrow' package (pip install pyarrow); "
            "or convert the file to CSV or JSONL"
        ) from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a corrupt file; all are bad input
        raise InputError(f"{source}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    return list(table.column_names), [(f"{source}:row {i}", r) for i, r in enumerate(table.to_pylist(), 1)]


def read_table(path: str) -> tuple[list[str], list[Row]]:
    """Columns and rows of a benchmark file (local path or store URI), by its suffix."""
    from jobs.common import store

    fmt = file_format(path)
    try:
        data = store.read_bytes(path)
    except NotFoundError:
        raise InputError(f"{path}: no such file") from None
    if fmt == "parquet":
        return read_parquet(data, path)
    if fmt == "jsonl":
        return read_jsonl(data, path)
    return read_delimited(data, path, "\t" if fmt == "tsv" else ",")


# ---------------------------------------------------------------------------------------------
# Converting rows into eval items (pure)
# ---------------------------------------------------------------------------------------------
def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def scalar(v: Any) -> str | None:
    """A cell as text: None (and NaN) are missing; integral floats lose their ``.0`` (a Parquet or
    pandas id column of floats); lists and objects are not scalars (ValueError)."""
    if _missing(v):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, str | int | float):
        return str(v)
    raise ValueError(f"a {type(v).__name__}, not a single value")


def tag_values(v: Any) -> list[str]:
    """The tag values of one cell: a list gives one per element; missing and blank give none."""
    items = list(v) if isinstance(v, list | tuple) else [v]
    out = []
    for x in items:
        s = scalar(x)
        if s is not None and s.strip():
            out.append(s.strip())
    return out


def parse_where(conditions: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for c in conditions:
        col, sep, value = c.partition("=")
        if not sep or not col:
            raise InputError(f"--where {c!r}: write it as COLUMN=VALUE (e.g. --where label=safe)")
        out.append((col, value))
    return out


def convert(
    columns: Sequence[str],
    rows: Iterable[Row],
    *,
    source: str,
    text_col: str,
    id_col: str | None = None,
    tag_cols: Sequence[str] = (),
    where: Sequence[tuple[str, str]] = (),
    id_prefix: str = "",
) -> list[EvalItem]:
    """The eval items of the rows that match every ``where`` condition, in file order. Raises an
    InputError listing every problem (unknown columns first, then each bad row by file:line)."""
    named = [("--text-col", text_col)] + ([("--id-col", id_col)] if id_col else [])
    named += [("--tag-cols", c) for c in tag_cols] + [("--where", c) for c, _ in where]
    unknown = [f"{flag} {col!r}" for flag, col in named if col not in columns]
    if unknown:
        raise InputError(
            f"{source}:1: unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"the file has {', '.join(repr(c) for c in columns) or 'no columns'}"
        )
    errors: list[str] = []
    items: list[EvalItem] = []
    seen: dict[str, str] = {}
    for number, (at, row) in enumerate(rows, start=1):
        try:
            if any(scalar(row.get(col)) != value for col, value in where):
                continue
            text = scalar(row.get(text_col))
            raw_id = scalar(row.get(id_col)) if id_col else str(number)
        except ValueError as exc:
            errors.append(f"{at}: {exc}")
            continue
        if text is None or not text.strip():
            errors.append(f"{at}: no text in column '{text_col}'; fill it in or drop the row")
            continue
        if raw_id is None or not raw_id.strip():
            errors.append(f"{at}: no id in column '{id_col}'")
            continue
        item_id = f"{id_prefix}{raw_id.strip()}"
        if item_id in seen:
            errors.append(f"{at}: duplicate id '{item_id}' (first at {seen[item_id]})")
            continue
        seen[item_id] = at
        tags = [f"{col}:{v}" for col in tag_cols for v in tag_values(row.get(col))]
        items.append(EvalItem(id=item_id, text=text, tags=tags))
    if not items and not errors:
        conds = " and ".join(f"{c}={v}" for c, v in where)
        errors.append(f"{source}: no rows" + (f" match {conds}" if conds else ""))
    _fail(errors)
    return items


def to_jsonl(items: Iterable[EvalItem]) -> str:
    """One ``{"id", "text", "tags"}`` object per line (``tags`` left out when empty), UTF-8 as is."""
    return "".join(json.dumps(i.model_dump(exclude_defaults=True), ensure_ascii=False) + "\n" for i in items)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def cmd_import_evals(args: argparse.Namespace) -> int:
    from jobs.common import store
    from jobs.common.loaders import check_file

    kind = EvalKind(args.kind)
    if kind in UNSUPPORTED_KINDS:
        raise InputError(
            f"--kind {kind.value}: these sets need {UNSUPPORTED_KINDS[kind]}, which import-evals does "
            "not map; write the set by hand (README, Input files)"
        )
    name = PurePosixPath(args.output).stem
    prefix = f"{name}-" if args.id_prefix is None else args.id_prefix
    columns, rows = read_table(args.file)
    items = convert(
        columns,
        rows,
        source=args.file,
        text_col=args.text_col,
        id_col=args.id_col,
        tag_cols=args.tag_cols,
        where=parse_where(args.where),
        id_prefix=prefix,
    )
    store.write_text(args.output, to_jsonl(items))
    n = check_file(args.output, "eval")
    print(f"ok    {args.output} ({n} items of {len(rows)} rows, kind {kind.value})")
    try:
        implied: EvalKind | None = eval_kind(name)
    except InputError:
        implied = None
    if implied != kind:
        print(
            f"in the spec: evals: {{{name}: {args.output}}} and eval.kinds: {{{name}: {kind.value}}} "
            f"(the name '{name}' does not say kind {kind.value})",
            file=sys.stderr,
        )
    return 0


def register(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    p = sub.add_parser(
        "import-evals",
        help="turn a benchmark file (CSV, TSV, JSONL, Parquet) into an eval set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="benchmark file: .csv, .tsv, .jsonl/.ndjson or .parquet (needs pyarrow)")
    p.add_argument(
        "--kind",
        required=True,
        choices=[k.value for k in EvalKind],
        help="what the set measures: benign (should be answered), harmful (should be refused), ...",
    )
    p.add_argument("--text-col", required=True, help="column with the prompt text")
    p.add_argument("--id-col", help="column with the item id (default: the row's number in the file)")
    p.add_argument(
        "--tag-cols", nargs="+", default=[], metavar="COL", help="columns kept as tags <col>:<value>"
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="keep only rows where COL equals VALUE (repeatable; all must hold)",
    )
    p.add_argument(
        "--id-prefix",
        help="prefix of every id, so ids stay unique across eval sets (default: '<OUT name>-'; '' for none)",
    )
    p.add_argument("-o", "--output", required=True, help="the eval set to write (JSONL; path or store URI)")
    return {"import-evals": cmd_import_evals}
