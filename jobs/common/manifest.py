"""Manifests: written last by every step, so that "is this step done with this exact config" is
one read. A step whose manifest is missing, unreadable or has another config hash is not done."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from jobs.common import store
from jobs.common.errors import EXIT_TRANSIENT, StoreError
from jobs.common.records import CodeVersion, Manifest

#: Config fields that do not change what a step produces, so they stay out of its hash.
NON_SEMANTIC_FIELDS = frozenset({"force", "manifest", "upstream", "log_level", "workers", "progress"})


def canonical_config(cfg: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The config as plain JSON with secrets removed and non-semantic fields dropped."""
    raw = cfg.model_dump(mode="python") if isinstance(cfg, BaseModel) else dict(cfg)

    def clean(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return None
        if isinstance(v, BaseModel):
            return clean(v.model_dump(mode="python"))
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, set | frozenset):
            return sorted(clean(x) for x in v)
        if isinstance(v, Path):
            return str(v)
        return v

    return {k: clean(v) for k, v in raw.items() if k not in NON_SEMANTIC_FIELDS}


def config_hash(cfg: BaseModel | dict[str, Any]) -> str:
    blob = json.dumps(canonical_config(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@functools.cache
def code_version() -> CodeVersion:
    """Git commit and dirty flag of the checkout this code runs from, else the package version."""
    try:
        pkg = metadata.version("creed")
    except metadata.PackageNotFoundError:
        pkg = "0+unknown"
    if os.environ.get("CREED_GIT_COMMIT"):  # baked into container images at build time
        return CodeVersion(package=pkg, commit=os.environ["CREED_GIT_COMMIT"], dirty=False)
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
        return CodeVersion(package=pkg, commit=commit, dirty=dirty)
    except (OSError, subprocess.SubprocessError):
        return CodeVersion(package=pkg)


def read(uri: str) -> Manifest | None:
    """The manifest at ``uri``, or None when it is missing or unreadable. A store that cannot be
    reached now raises (exit 75): "not done" would rerun a finished step, GPU hours and all."""
    try:
        return Manifest.model_validate_json(store.read_text(uri))
    except StoreError as exc:
        if exc.exit_code == EXIT_TRANSIENT:
            raise
        return None
    except (ValidationError, ValueError):
        return None


def is_complete(uri: str, cfg_hash: str, upstream: list[str] | None = None) -> bool:
    """True when the manifest at ``uri`` exists, was written for exactly this config, and what it
    consumed is unchanged: every ``upstream`` (the manifests of the steps it reads from, and its input
    files) still has the fingerprint it had when this step ran. Like make with content hashes: an
    edited input file or a rerun upstream that *changed its outputs* makes the step stale, and a rerun
    upstream that wrote the same bytes does not (early cutoff)."""
    m = read(uri)
    if m is None or m.config_hash != cfg_hash:
        return False
    return all(m.upstream.get(u, "missing") == upstream_fingerprint(u) for u in upstream or [])


def upstream_fingerprint(uri: str) -> str | None:
    """A manifest's output digest, or an input file's content digest; None when it does not exist."""
    if PurePosixPath(uri).name.startswith("_manifest"):
        m = read(uri)
        return m.digest if m is not None else None
    return store.fingerprint(uri)


def outputs_digest(outputs: list[str]) -> str:
    """One digest over the content of every output (files, or every object under a folder)."""
    h = hashlib.sha256()
    for out in sorted(outputs):
        objects = [out] if store.exists(out) else store.list_uris(out)
        for obj in objects:
            if PurePosixPath(obj).name.startswith("_manifest"):
                continue
            h.update(f"{obj[len(out) :]}\0{store.fingerprint(obj)}\0".encode())
    return h.hexdigest()[:32]


def write(
    uri: str,
    *,
    step: str,
    stage: str,
    experiment: str,
    cfg: BaseModel | dict[str, Any],
    started: datetime,
    finished: datetime,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    counts: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
    upstream: dict[str, str | None] | None = None,
) -> Manifest:
    m = Manifest(
        step=step,
        stage=stage,
        experiment=experiment,
        config_hash=config_hash(cfg),
        config=canonical_config(cfg),
        inputs=inputs or [],
        outputs=outputs or [],
        counts=counts or {},
        extra=extra or {},
        code=code_version(),
        started=started,
        finished=finished,
        digest=outputs_digest(outputs or []),
        upstream=upstream or {},
    )
    store.write_text(uri, m.model_dump_json(indent=2) + "\n")
    return m
