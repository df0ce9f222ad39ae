"""The base for stage configs: a YAML/JSON file or store URI given by ``--config``, environment
overrides (``CREED_<FIELD>``, nested with ``__``), and ``--help`` that lists every field.

A setting is declared once: each stage declares its parameters in ``jobs/<stage>/config.py`` as a
``<Stage>Params`` class (a :class:`Params`); its stage config is those parameters plus the URIs of one
step, and the experiment spec's section for the stage *is* that class.

Precedence when a stage starts, highest first: environment, config file, field defaults. The
environment wins so that a cluster can override one value (a secret, an endpoint) without editing the
rendered config. It is read only there (:func:`parse_args`): a config built anywhere else, such as by
the plan builder, depends on its arguments alone.
"""

from __future__ import annotations

import contextvars
import json
import sys
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from jobs.common import store
from jobs.common.errors import EXIT_TRANSIENT, InputError, StoreError, TransientError

C = TypeVar("C", bound="StageConfig")
#: Whether configs being built read ``CREED_*`` environment overrides (only while a stage parses its
#: own config).
_READ_ENV: contextvars.ContextVar[bool] = contextvars.ContextVar("creed_read_env", default=False)


class Params(BaseModel):
    """A stage's parameters: what a researcher sets in the spec's section for that stage.

    A stage config inherits from both ``StageConfig`` and its ``Params``; mypy sees their two
    ``model_config`` types (settings and model) as incompatible, pydantic merges them as intended."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
        if _READ_ENV.get():
            return (env_settings, init_settings, file_secret_settings)
        return (init_settings,)


def load_config_file(uri: str) -> dict[str, Any]:
    try:
        text = store.read_text(uri)
    except StoreError as exc:
        # The config is each pod's first read of the store: a store that is briefly unreachable or
        # throttling (many pods starting at once) must end in a retry, not in a failed step.
        if exc.exit_code == EXIT_TRANSIENT:
            raise TransientError(f"--config {uri}: cannot read it now ({exc}); safe to retry") from exc
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


def build(cls: type[C], data: dict[str, Any], source: str = "config", *, environment: bool = False) -> C:
    """The config from ``data``; with ``environment``, ``CREED_*`` variables override it."""
    token = _READ_ENV.set(environment)
    try:
        return cls(**data)
    except ValidationError as exc:
        raise InputError(format_validation_error(source, exc)) from exc
    finally:
        _READ_ENV.reset(token)


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
    cfg = build(cls, data, source, environment=True)
    return cfg, (data or cfg.model_dump(mode="json"))
