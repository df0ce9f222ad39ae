"""Validation of rendered Argo objects against the vendored JSON schemas of every claimed Argo version
(``tests/schemas/``, provenance in its README), made strict: upstream sets no
``additionalProperties: false``, so a misspelt key would otherwise pass."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
#: The Argo versions creed claims (oldest first): every rendering is validated against each.
SCHEMAS = {
    "v3.7.18": ROOT / "tests" / "schemas" / "argo-workflows-schema-v3.7.18.json",
    "v4.1.2": ROOT / "tests" / "schemas" / "argo-workflows-schema-v4.1.2.json",
}


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def _patch(definitions: dict[str, Any]) -> dict[str, Any]:
    """One documented correction: 3.7's schema types a memoization cache's ``configMap`` as a
    ConfigMapKeySelector (``key`` required), but the controller reads only its name and Argo's own
    examples (``examples/memoize-simple.yaml``) give no key; 4.x types it as a LocalObjectReference.
    The name-only form is what both controllers accept, so both schemas are checked with it."""
    cache = definitions.get("io.argoproj.workflow.v1alpha1.Cache", {}).get("properties", {}).get("configMap")
    if cache is not None:
        cache["$ref"] = "#/definitions/io.k8s.api.core.v1.LocalObjectReference"
    return definitions


@cache
def validator(version: str, kind: str) -> jsonschema.Draft202012Validator:
    full = json.loads(SCHEMAS[version].read_text())
    full["definitions"] = _patch(full["definitions"])
    schema = {
        "$schema": full["$schema"],
        "definitions": _strict(full["definitions"]),
        "$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}",
    }
    return jsonschema.Draft202012Validator(schema)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Schema errors under every claimed Argo version (each prefixed with the version)."""
    return [
        f"{version} {'.'.join(map(str, e.path))}: {e.message}"
        for version in SCHEMAS
        for e in validator(version, doc.get("kind", "Workflow")).iter_errors(doc)
    ]
