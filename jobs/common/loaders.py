"""Reading what creed reads: the input files (personas in YAML, prompt and eval items in JSONL) and
every typed JSONL a stage writes for the next (``read_records``).

Every problem is reported as ``file:line: what is wrong``. For input files all problems of a file are
reported together, so a researcher fixes a file in one pass. Files may live in the store (any URI).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from jobs.common import store
from jobs.common.errors import EXIT_TRANSIENT, InputError, NotFoundError, StoreError
from jobs.common.records import EvalItem, Persona, PromptItem

M = TypeVar("M", bound=BaseModel)
MAX_ERRORS = 20


def _describe(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "row"
        if err["type"] == "extra_forbidden":
            out.append(f"unknown field '{field}' (allowed: see DESIGN.md input files)")
        elif err["type"] == "missing":
            out.append(f"missing field '{field}'")
        else:
            out.append(f"field '{field}': {err['msg']}")
    return out


def _raise(errors: list[str]) -> None:
    if errors:
        more = f"\n  ... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        raise InputError("\n".join(errors[:MAX_ERRORS]) + more)


def _read(uri: str) -> bytes:
    try:
        return store.read_bytes(uri)
    except StoreError as exc:
        if exc.exit_code == EXIT_TRANSIENT:
            raise  # the store is briefly unreachable: retry the step (exit 75), do not blame the file
        raise InputError(f"{uri}: cannot read ({exc})") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "row"
    return f"{where}: {err['msg']}"


def iter_records(uri: str, model: type[M], *, missing: str = "") -> Iterator[M]:
    """Stream the rows of a typed JSONL object in the store (what one stage writes for the next).

    A missing object is an ``InputError`` that says ``missing`` (what to do: "run its filter step
    first"); a line that is not JSON or not a ``model`` is an ``InputError`` naming ``uri:line``; a
    store that is unreachable stays a transient error (exit 75: retry)."""
    what = model.__name__
    try:
        with store.open_read(uri) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield model.model_validate(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{uri}:{lineno}: not valid JSON ({exc.msg})") from exc
                except ValidationError as exc:
                    raise InputError(f"{uri}:{lineno}: not a valid {what} ({_first_error(exc)})") from exc
    except NotFoundError as exc:
        raise InputError(f"{uri}: no such file" + (f"; {missing}" if missing else "")) from exc
    except StoreError as exc:
        if exc.exit_code == EXIT_TRANSIENT:
            raise
        raise InputError(f"{uri}: cannot read ({exc})") from exc


def read_records(uri: str, model: type[M], *, missing: str = "") -> list[M]:
    """Every row of a typed JSONL object in the store (see :func:`iter_records`)."""
    return list(iter_records(uri, model, missing=missing))


def load_jsonl(uri: str, model: type[M]) -> list[M]:
    """Rows of ``model`` from a JSONL file; ids must be unique, the file must not be empty."""
    data = _read(uri)
    errors: list[str] = []
    rows: list[M] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(f"{uri}:{lineno}: not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{uri}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{uri}:{lineno}: each line must be a JSON object with 'id' and 'text'")
            continue
        try:
            row = model.model_validate(obj)
        except ValidationError as exc:
            errors.extend(f"{uri}:{lineno}: {m}" for m in _describe(exc))
            continue
        rid = str(getattr(row, "id", ""))
        if rid in seen:
            errors.append(f"{uri}:{lineno}: duplicate id '{rid}' (first on line {seen[rid]})")
            continue
        seen[rid] = lineno
        rows.append(row)
    if not rows and not errors:
        errors.append(f"{uri}:1: file is empty; add one JSON object per line")
    _raise(errors)
    return rows


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line each mapping starts on."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping  # type: ignore[return-value]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_personas(uri: str) -> list[Persona]:
    """Personas from a YAML list of ``{id, description, system}``."""
    data = _read(uri)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{uri}:{line}: not valid UTF-8; re-save the file as UTF-8") from exc
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise InputError(f"{uri}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if doc is None:
        raise InputError(f"{uri}:1: file is empty; add a list of personas with id, description, system")
    if not isinstance(doc, list):
        raise InputError(f"{uri}:1: a persona file must be a YAML list of {{id, description, system}}")
    errors: list[str] = []
    out: list[Persona] = []
    seen: dict[str, int] = {}
    for item in doc:
        if not isinstance(item, dict):
            errors.append(f"{uri}: each persona must be a mapping with id, description, system")
            continue
        line = int(item.pop("__line__", 0))
        try:
            p = Persona.model_validate(item)
        except ValidationError as exc:
            errors.extend(f"{uri}:{line}: {m}" for m in _describe(exc))
            continue
        if p.id in seen:
            errors.append(f"{uri}:{line}: duplicate id '{p.id}' (first on line {seen[p.id]})")
            continue
        seen[p.id] = line
        out.append(p)
    if not out and not errors:
        errors.append(f"{uri}:1: no personas in file")
    _raise(errors)
    return out


def load_prompts(uri: str) -> list[PromptItem]:
    return load_jsonl(uri, PromptItem)


def load_eval_items(uri: str) -> list[EvalItem]:
    return load_jsonl(uri, EvalItem)


def load_terms(uri: str) -> list[str]:
    """Regular expressions from a terms file: one per line, blank lines and ``#`` comments ignored;
    each must compile (matched case-insensitively). A file with none is an error."""
    data = _read(uri)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{uri}:{line}: not valid UTF-8; re-save the file as UTF-8") from exc
    errors: list[str] = []
    terms: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        term = raw.strip()
        if not term or term.startswith("#"):
            continue
        try:
            re.compile(term, re.IGNORECASE)
        except re.error as exc:
            errors.append(f"{uri}:{lineno}: not a valid regular expression ({exc})")
            continue
        terms.append(term)
    if not terms and not errors:
        errors.append(f"{uri}:1: no terms; add one regular expression per line")
    _raise(errors)
    return terms


def terms_pattern(uri: str) -> re.Pattern[str]:
    """The terms of a terms file as one case-insensitive pattern (any of them matches)."""
    return re.compile("|".join(f"(?:{t})" for t in load_terms(uri)), re.IGNORECASE)


def kind_of(path: str) -> str:
    """Which schema a file is checked against: ``persona`` (YAML), ``terms`` (``.txt``: one regular
    expression per line), ``eval`` (JSONL under an ``evals`` folder or named ``eval*``), else
    ``prompt``."""
    p = Path(path)
    if p.suffix in {".yaml", ".yml"}:
        return "persona"
    if p.suffix == ".txt":
        return "terms"
    parts = {q.lower() for q in p.parts[:-1]}
    if "evals" in parts or "eval" in parts or p.name.lower().startswith("eval"):
        return "eval"
    return "prompt"


def check_file(path: str, kind: str | None = None) -> int:
    """Validate one file as ``kind`` (persona, prompt, eval, terms; default: from its path); returns
    the number of records."""
    kind = kind or kind_of(path)
    if kind == "persona":
        return len(load_personas(path))
    if kind == "terms":
        return len(load_terms(path))
    if kind == "eval":
        return len(load_eval_items(path))
    return len(load_prompts(path))
