"""`creed run --only/--force` take a glob, repeated or as a comma list."""

from __future__ import annotations

import pytest

from workflows.cli import build_parser


def parse(*argv: str) -> tuple[list[str] | None, list[str] | None]:
    parser, _ = build_parser()
    args = parser.parse_args(["run", "experiments/demo.yaml", *argv])
    return args.only, args.force


def test_comma_lists_and_repeats_are_the_same() -> None:
    assert parse("--only", "generate*,filter*") == (["generate*", "filter*"], None)
    assert parse("--only", "generate*", "--only", "filter*") == (["generate*", "filter*"], None)
    assert parse("--only", "a, b", "--only", "c", "--force", "eval-*,analyze") == (
        ["a", "b", "c"],
        ["eval-*", "analyze"],
    )
    assert parse() == (None, None)


def test_an_empty_glob_list_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse("--only", ",")
    assert info.value.code == 2 and "no step glob" in capsys.readouterr().err
