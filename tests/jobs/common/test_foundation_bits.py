"""Config base, manifests, logging redaction, the shared stage main()."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import ClassVar

import pytest
import structlog
from pydantic import Field, SecretStr

from jobs.common import logs, manifest, store
from jobs.common.config import StageConfig, help_text
from jobs.common.stage import StepResult, main


class DemoConfig(StageConfig):
    """A demo stage."""

    stage: ClassVar[str] = "demo"
    size: int = Field(3, description="how many rows to write")
    output: str = Field("", description="where to write")
    api_key: SecretStr = Field(SecretStr(""), description="a secret")


calls: list[int] = []


def _run(cfg: DemoConfig) -> StepResult:
    calls.append(cfg.size)
    n = store.write_jsonl(cfg.output, ({"i": i} for i in range(cfg.size)))
    return StepResult(outputs=[cfg.output], counts={"rows": n})


def _cfg_file(tmp_path: Path, **over: object) -> str:
    data = {
        "experiment": "e",
        "step": "s",
        "manifest": str(tmp_path / "_manifest.json"),
        "output": str(tmp_path / "out.jsonl"),
    } | over
    p = tmp_path / "cfg.yaml"
    p.write_text(json.dumps(data))
    return str(p)


def test_stage_main_writes_manifest_and_skips_rerun(tmp_path: Path) -> None:
    calls.clear()
    cfg = _cfg_file(tmp_path)
    assert main(DemoConfig, _run, ["--config", cfg]) == 0
    m = manifest.read(str(tmp_path / "_manifest.json"))
    assert m is not None and m.counts == {"rows": 3} and m.stage == "demo" and m.code.package
    assert main(DemoConfig, _run, ["--config", cfg]) == 0
    assert calls == [3]  # skipped: same config
    cfg2 = _cfg_file(tmp_path, size=4)
    assert main(DemoConfig, _run, ["--config", cfg2]) == 0
    assert calls == [3, 4]  # config changed: ran again
    assert main(DemoConfig, _run, ["--config", _cfg_file(tmp_path, size=4, force=True)]) == 0
    assert calls == [3, 4, 4]


def test_an_edited_input_file_makes_the_step_stale(tmp_path: Path) -> None:
    calls.clear()
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"id": "a", "text": "x"}\n')
    cfg = _cfg_file(tmp_path, upstream=[str(data)])
    assert main(DemoConfig, _run, ["--config", cfg]) == 0
    assert main(DemoConfig, _run, ["--config", cfg]) == 0
    assert calls == [3]
    data.write_text('{"id": "a", "text": "changed"}\n')
    assert main(DemoConfig, _run, ["--config", cfg]) == 0
    assert calls == [3, 3]


def test_unknown_field_is_exit_2_with_the_field_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(DemoConfig, _run, ["--config", _cfg_file(tmp_path, sise=4)]) == 2
    assert "sise" in capsys.readouterr().err


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls.clear()
    monkeypatch.setenv("CREED_SIZE", "7")
    assert main(DemoConfig, _run, ["--config", _cfg_file(tmp_path)]) == 0
    assert calls == [7]


def test_help_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(DemoConfig, "jobs.demo")
    for name in DemoConfig.model_fields:
        assert f"  {name}:" in text
    assert "how many rows to write" in text


def test_config_hash_ignores_secrets_and_force() -> None:
    a = DemoConfig(size=1, api_key=SecretStr("sk-aaaaaaaaaaaaaaaaaaaa"))
    b = DemoConfig(size=1, api_key=SecretStr("sk-bbbbbbbbbbbbbbbbbbbb"), force=True)
    assert manifest.config_hash(a) == manifest.config_hash(b)
    assert manifest.config_hash(a) != manifest.config_hash(DemoConfig(size=2))
    assert "sk-" not in json.dumps(manifest.canonical_config(a))


def test_logs_redact_secrets() -> None:
    buf = io.StringIO()
    logs.configure(json=True, experiment="e", stage="generate", step="g0")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    structlog.get_logger().info(
        "teacher.request",
        api_key="sk-live-abcdefghijklmnop",
        note="using key sk-proj-ABCDEFGHIJKLMNOP1234 and AKIAABCDEFGHIJKLMNOP",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        count=3,
    )
    line = json.loads(buf.getvalue().strip())
    assert line["experiment"] == "e" and line["stage"] == "generate" and line["step"] == "g0"
    assert line["count"] == 3
    text = buf.getvalue()
    for secret in ["sk-live", "sk-proj", "AKIAABCD", "wJalrXUt"]:
        assert secret not in text
