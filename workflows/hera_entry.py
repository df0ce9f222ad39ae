"""An experiment's Argo Workflow as a module-level Hera object, for Hera's own tools:

    CREED_SPEC=experiments/demo.yaml CREED_SPEC_STORE=s3://bucket/experiments \
        hera generate yaml workflows/hera_entry.py > demo.workflow.yaml

prints exactly what ``creed render experiments/demo.yaml --store s3://bucket/experiments`` prints (the
same plan, the same checks, Hera's ``to_yaml``). Environment:

- ``CREED_SPEC``: the experiment spec (required; without it this module defines no workflow);
- ``CREED_SPEC_STORE``: the store, as ``--store``;
- ``CREED_SPEC_SET``: overrides, as ``--set``, separated by ``;`` (``train.seeds=[0,1];cluster.retry_limit=5``);
- ``CREED_SPEC_IMAGE_TAG``, ``CREED_SPEC_NAMESPACE``: as ``--image-tag`` and ``--namespace``;
- ``CREED_SPEC_TEMPLATE=1``: a WorkflowTemplate, as ``--template``.

Building the workflow at import is what ``hera generate yaml`` needs (it collects the module's
``Workflow`` objects); nothing else imports this module. Then ``creed upload SPEC`` stages the inputs
and configs, and ``argo submit -p inputs-digest=<its output>`` runs the YAML.
"""

from __future__ import annotations

import os
import sys

from hera.workflows import Workflow

from workflows import argo
from workflows import spec as spec_mod
from workflows.plan import build_plan


def from_environment(env: dict[str, str] | os._Environ[str] = os.environ) -> Workflow | None:
    """The workflow the ``CREED_SPEC*`` variables describe, or None without ``CREED_SPEC``."""
    path = env.get("CREED_SPEC", "").strip()
    if not path:
        return None
    overrides = [o.strip() for o in env.get("CREED_SPEC_SET", "").split(";") if o.strip()]
    spec = spec_mod.load(path, overrides)
    if env.get("CREED_SPEC_STORE"):
        spec = spec.model_copy(update={"store": env["CREED_SPEC_STORE"]})
    flags = {"image_tag": env.get("CREED_SPEC_IMAGE_TAG"), "namespace": env.get("CREED_SPEC_NAMESPACE")}
    cluster = spec.cluster.model_copy(update={k: v for k, v in flags.items() if v})
    template = env.get("CREED_SPEC_TEMPLATE", "").lower() in ("1", "true", "yes")
    return argo.checked(build_plan(spec), dict(spec.images), cluster, template=template)


workflow = from_environment()
if workflow is None:
    print("workflows/hera_entry.py: set CREED_SPEC=<experiment spec> to get its workflow", file=sys.stderr)
