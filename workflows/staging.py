"""Getting a plan's files into its store before any step runs, for both backends: the user's input
files (validated as the role the plan gives each, then copied) and every step's config file."""

from __future__ import annotations

from pathlib import Path

from jobs.common import loaders, store
from jobs.common.errors import InputError
from jobs.refusal.gold import read_gold
from workflows.plan import Plan

#: Input roles of the plan -> the schema a file is checked against.
_SCHEMA = {"personas": "persona", "prompts": "prompt", "evals": "eval", "terms": "terms"}


def stage_inputs(plan: Plan) -> int:
    """Validate each user input file and copy it into the store (where steps read it); returns the
    number of files copied (unchanged ones are not copied again)."""
    copied = 0
    for f in plan.inputs:
        if f.source == f.uri:
            continue
        if not Path(f.source).is_file():
            raise InputError(
                f"{f.source}: input file not found (paths in a spec are relative to the spec file)"
            )
        # the plan knows each file's role; the path alone may not (an eval set outside an evals/ folder)
        if f.kind == "labels":
            read_gold(f.source)  # gold-labelled responses (jobs.refusal.gold)
        else:
            loaders.check_file(f.source, _SCHEMA[f.kind])
        data = Path(f.source).read_bytes()
        if store.exists(f.uri) and store.read_bytes(f.uri) == data:
            continue
        store.write_bytes(f.uri, data)
        copied += 1
    return copied


def stage_configs(plan: Plan) -> int:
    """Write every step's config file to the store; returns the number written."""
    for s in plan.steps:
        store.write_text(s.config_uri, s.config_json())
    return len(plan.steps)
