"""The base for stage configs: a YAML/JSON file or store URI given by ``--config``, environment
overrides (``CREED_<FIELD>``, nested with ``__``), and ``--help`` that lists every field.

Precedence, highest first: environment, config file, field defaults. The environment wins so that a
cluster can override one value (a secret, an endpoint) without editing the rendered config.
"""

from __future__ import annotations

import json
import sys
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from jobs.common import store
from jobs.common.errors import InputError, StoreError

C = TypeVar("C", bound="StageConfig")


class StageConfig(BaseSettings):
    """Fields every step has; the plan builder fills them in."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="CREED_",
        env_nested_delimiter="__",
        validate_default=True,
    )
    stage: ClassVar[str] = "stage"

    experiment: str = Field("creed", description="experiment name (bound into every log line)")
    step: str = Field("", description="step name in the plan (bound into every log line)")
    manifest: str = Field("", description="URI of this step's manifest, written last; empty: no manifest")
    force: bool = Field(False, description="redo the step even if its manifest says it is complete")
    upstream: list[str] = Field(
        default_factory=list,
        description="what the step consumes (upstream manifests, input files): if any was written after "
        "this step last ran, the step is stale and runs again",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings, file_secret_settings)


def load_config_file(uri: str) -> dict[str, Any]:
    try:
        text = store.read_text(uri)
    except StoreError as exc:
        raise InputError(f"--config {uri}: cannot read ({exc})") from exc
    try:
        data = json.loads(text) if uri.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InputError(f"{uri}: not valid YAML/JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{uri}: a config must be a mapping of field: value")
    return data


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; `--help` lists the fields)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def build(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    try:
        return cls(**data)
    except ValidationError as exc:
        raise InputError(format_validation_error(source, exc)) from exc


def help_text(cls: type[StageConfig], prog: str) -> str:
    doc = (cls.__doc__ or "").strip()
    out = [f"usage: python -m {prog} --config FILE_OR_URI", "", doc, "", "fields (env: CREED_<NAME>):"]
    for name, info in cls.model_fields.items():
        out.append(f"  {name}: {_type_name(info)} = {_default(info)}")
        if info.description:
            out.append(f"      {info.description}")
    return "\n".join(out)


def _type_name(info: FieldInfo) -> str:
    ann = info.annotation
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "(required)"
    if info.default_factory is not None:
        return repr(info.default_factory())  # type: ignore[call-arg]
    return repr(info.default)


def parse_args(cls: type[C], argv: list[str] | None, prog: str) -> tuple[C, dict[str, Any]] | None:
    """``--config FILE_OR_URI`` (or none: defaults + environment). Returns the config and the raw
    mapping it was built from (the plan hashes that same mapping), or None after ``--help``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(help_text(cls, prog))
        return None
    data: dict[str, Any] = {}
    source = "environment"
    if args:
        if args[0] != "--config" or len(args) != 2:
            raise InputError(f"usage: python -m {prog} --config FILE_OR_URI (got {' '.join(args)})")
        source = args[1]
        data = load_config_file(source)
    cfg = build(cls, data, source)
    return cfg, (data or cfg.model_dump(mode="json"))
