"""Input files: every kind of bad input is an error that names file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.common.errors import InputError
from jobs.common.loaders import check_file, load_eval_items, load_personas, load_prompts
from workflows.cli import main as creed

DATA = Path(__file__).resolve().parents[3] / "data"


def _jsonl(path: Path, rows: list[object]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_shipped_data_is_valid() -> None:
    # data/labels/ is gold-labelled responses, not input files: its own checkers run in
    # tests/jobs/refusal/test_classify.py
    labels = DATA / "labels"
    files = sorted(p for p in DATA.rglob("*") if p.suffix in {".yaml", ".jsonl"} and labels not in p.parents)
    assert len(files) >= 12
    for f in files:
        assert check_file(str(f)) > 0


def test_prompts_load(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "text": "x", "tags": ["t"]}, {"id": "b", "text": "y"}])
    assert [p.id for p in load_prompts(path)] == ["a", "b"]


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        (
            [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}],
            r"p.jsonl:2: duplicate id 'a' \(first on line 1\)",
        ),
        (
            [{"id": "a", "text": "x"}, {"id": "b", "text": "y", "colour": 1}],
            r"p.jsonl:2: unknown field 'colour'",
        ),
        ([{"id": "a"}], r"p.jsonl:1: missing field 'text'"),
        ([{"id": "a", "text": "   "}], r"p.jsonl:1: field 'text': .*must not be empty"),
        ([], r"p.jsonl:1: file is empty"),
    ],
)
def test_prompt_errors_name_file_and_line(tmp_path: Path, rows: list[object], error: str) -> None:
    path = _jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputError, match=error):
        load_prompts(path)


def test_bad_utf8_and_bad_json_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n{"id": "c", text}\n')
    with pytest.raises(InputError) as exc:
        load_prompts(str(path))
    msg = str(exc.value)
    assert "p.jsonl:2: not valid UTF-8" in msg
    assert "p.jsonl:3: not valid JSON" in msg


def test_eval_items_keep_answers_and_pairs(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "e.jsonl", [{"id": "s1", "text": "Capital of France?", "answers": ["Paris"]}])
    assert load_eval_items(path)[0].answers == ["Paris"]
    with pytest.raises(InputError, match="unknown field 'answers'"):
        load_prompts(path)


def test_personas_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "personas.yaml"
    path.write_text(
        "- id: a\n  system: be kind\n"
        "- id: a\n  system: be brief\n"
        "- id: c\n  description: no system\n"
        "- id: d\n  system: x\n  mood: happy\n"
    )
    with pytest.raises(InputError) as exc:
        load_personas(str(path))
    msg = str(exc.value)
    assert "personas.yaml:3: duplicate id 'a'" in msg
    assert "personas.yaml:5: missing field 'system'" in msg
    assert "personas.yaml:7: unknown field 'mood'" in msg


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", r"personas.yaml:1: file is empty"),
        (b"- id: a\n  system: [unclosed\n", r"personas.yaml:\d+: not valid YAML"),
        (b"id: a\n", r"must be a YAML list"),
        (b"- id: a\n  system: caf\xe9\n", r"personas.yaml:2: not valid UTF-8"),
    ],
)
def test_persona_file_errors(tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "personas.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=error):
        load_personas(str(path))


def test_check_data_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = str(DATA / "prompts" / "generic.jsonl")
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "x"}])
    assert creed(["check-data", good]) == 0
    assert creed(["check-data", good, bad]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: duplicate id 'a'" in err
