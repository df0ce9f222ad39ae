"""``creed render | upload | submit | status | retry | logs``: the Argo backend's subcommands.

creed render experiments/demo.yaml --store s3://bucket/experiments [-o workflow.yaml]
creed upload experiments/demo.yaml --store s3://bucket/experiments     (prints the inputs digest)
creed submit experiments/demo.yaml --store s3://bucket/experiments     (ARGO_SERVER, ARGO_TOKEN, ARGO_NAMESPACE)
creed status demo-x7k2p
creed retry demo-x7k2p
creed logs demo-x7k2p [STEP]

``upload`` copies the spec's input files and every step's config into the store (which must be
``s3://``: pods cannot read this machine's disk) and prints the digest of the inputs, the value of the
workflow's ``inputs-digest`` parameter: after it, ``argo submit`` of the rendered YAML (``-p
inputs-digest=...``) or a submit of the WorkflowTemplate from the Argo UI runs. ``submit`` does the
same upload, then creates the workflow through the Argo server, with the checks ``render`` runs.

These commands need the ``argo`` extra (Hera); it is imported only when one of them runs, so the rest of
``creed`` works without it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.common import store
from jobs.common.errors import InputError, TransientError
from workflows import spec as spec_mod
from workflows.plan import Plan, build_plan
from workflows.spec import ClusterSpec
from workflows.staging import stage_configs, stage_inputs

#: seconds for one call to the Argo server (connect, read).
ARGO_TIMEOUT = (10.0, 60.0)
ARGO_RETRIES = 3

Handler = Callable[[argparse.Namespace], int]


def _argo() -> Any:
    """The Argo backend module (Hera): only the commands that render or talk to Argo need it."""
    try:
        from workflows import argo
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "hera":
            raise InputError("this command needs the argo extra (Hera): pip install 'creed[argo]'") from None
        raise
    return argo


def _load(args: argparse.Namespace) -> tuple[Plan, dict[str, str], ClusterSpec]:
    """The plan, the spec's images and its ``cluster:`` section with the command line's overrides."""
    spec = spec_mod.load(args.spec, args.set)
    if args.store:
        spec = spec.model_copy(update={"store": args.store})
    flags = ("namespace", "image_tag", "service_account", "parallelism")
    overrides = {k: getattr(args, k) for k in flags if getattr(args, k, None) is not None}
    return build_plan(spec), dict(spec.images), spec.cluster.model_copy(update=overrides)


# ---------------------------------------------------------------------------------------------
# The Argo server
# ---------------------------------------------------------------------------------------------
def _service(namespace: str | None = None) -> Any:
    """A Hera ``WorkflowsService`` from ARGO_SERVER / ARGO_TOKEN / ARGO_NAMESPACE, with timeouts."""
    _argo()
    import requests
    from hera.workflows.service import WorkflowsService
    from urllib3.util.retry import Retry

    host = os.environ.get("ARGO_SERVER", "").strip()
    if not host:
        raise InputError(
            "ARGO_SERVER is not set; export ARGO_SERVER=https://argo.example.com:2746 "
            "(and ARGO_TOKEN, ARGO_NAMESPACE), or port-forward: see infra/kind/README.md"
        )
    if "://" not in host:
        host = f"https://{host}"
    ns = namespace or os.environ.get("ARGO_NAMESPACE") or "creed"
    insecure = os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "").lower() in ("1", "true", "yes")

    class _TimeoutSession(requests.Session):
        # Hera passes no timeout; every call here gets one.
        def request(self, method: Any, url: Any, *a: Any, **kw: Any) -> Any:  # type: ignore[override]
            kw.setdefault("timeout", ARGO_TIMEOUT)
            return super().request(method, url, *a, **kw)

    session = _TimeoutSession()
    # Retry only failures to connect (safe even for POST: nothing reached the server).
    retry = Retry(total=ARGO_RETRIES, connect=ARGO_RETRIES, read=0, status=0, backoff_factor=1.0)
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))
    session.mount("https://", requests.adapters.HTTPAdapter(max_retries=retry))
    token = os.environ.get("ARGO_TOKEN") or None
    return WorkflowsService(
        host=host, token=token, namespace=ns, verify_ssl=not insecure, session=session
    ), ns


def ui_link(namespace: str, name: str) -> str:
    """The workflow's page in the Argo UI (served by the same Argo server)."""
    host = os.environ.get("ARGO_SERVER", "").strip().rstrip("/")
    if "://" not in host:
        host = f"https://{host}"
    return f"{host}/workflows/{namespace}/{name}"


def _call(what: str, fn: Callable[[], Any]) -> Any:
    """Map connection failures to TransientError (exit 75) and API errors to readable messages."""
    import requests
    from hera.exceptions import Forbidden, HeraException, InternalServerError, NotFound, Unauthorized

    try:
        return fn()
    except (Unauthorized, Forbidden) as exc:
        raise InputError(
            f"{what}: the Argo server refused the request; check ARGO_TOKEN and its RBAC ({exc})"
        ) from exc
    except InternalServerError as exc:
        raise TransientError(f"{what}: the Argo server failed, try again: {exc}") from exc
    except NotFound as exc:
        raise InputError(f"{what}: not found ({exc})") from exc
    except HeraException as exc:
        raise InputError(f"{what}: the Argo server said: {exc}") from exc
    except requests.RequestException as exc:
        host = os.environ.get("ARGO_SERVER", "")
        raise TransientError(
            f"{what}: cannot reach the Argo server at {host} ({type(exc).__name__})"
        ) from exc


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def _warn_tag(cluster: ClusterSpec) -> None:
    if cluster.image_tag:
        return
    tag, dirty = _argo().commit_tag()
    if dirty:
        print(
            f"warning: the working tree has uncommitted changes; the images tagged {tag} (its commit) "
            "do not contain them. Commit and rebuild, or pass --image-tag",
            file=sys.stderr,
        )


def cmd_render(args: argparse.Namespace) -> int:
    plan, images, cluster = _load(args)
    if not store.is_s3(plan.store):
        print(
            f"warning: store '{plan.store}' is not s3://; pods cannot read it. Pass --store s3://bucket/prefix",
            file=sys.stderr,
        )
    _warn_tag(cluster)
    text = _argo().render_yaml(plan, images, cluster, template=args.template)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.output} ({len(plan.steps)} steps)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def inputs_digest(plan: Plan) -> str:
    """A digest of the plan's input files as staged (each file's store URI and content): the
    ``inputs-digest`` parameter that memoization keys start with."""
    h = hashlib.sha256()
    for f in sorted(plan.inputs, key=lambda f: f.uri):
        data = Path(f.source).read_bytes() if f.source != f.uri else store.read_bytes(f.uri)
        h.update(f"{f.uri}\0{hashlib.sha256(data).hexdigest()}\0".encode())
    return h.hexdigest()[:16]


def stage_for_submit(plan: Plan) -> tuple[int, int]:
    """Copy input files and step configs into the store; returns (inputs copied, configs written)."""
    if not store.is_s3(plan.store):
        raise InputError(
            f"store '{plan.store}': submit and upload need an s3:// store that the cluster can reach; "
            "pass --store s3://bucket/prefix or set `store:` in the spec"
        )
    return stage_inputs(plan), stage_configs(plan)


def cmd_upload(args: argparse.Namespace) -> int:
    plan, _, cluster = _load(args)
    copied, configs = stage_for_submit(plan)
    digest = inputs_digest(plan)
    print(digest)
    print(f"store: {copied} input files copied, {configs} step configs written", file=sys.stderr)
    if cluster.memoize:
        print(f"  argo submit WORKFLOW.yaml -p inputs-digest={digest}", file=sys.stderr)
        print(
            f"  (or give inputs-digest={digest} when submitting the WorkflowTemplate from the UI)",
            file=sys.stderr,
        )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    argo = _argo()
    from hera.workflows.models import WorkflowCreateRequest

    plan, images, cluster = _load(args)
    service, ns = _service(cluster.namespace)  # fail on a missing ARGO_SERVER before touching the store
    cluster = cluster.model_copy(update={"namespace": ns})
    argo.checked(plan, images, cluster)  # the checks `creed render` runs, before anything is uploaded
    _warn_tag(cluster)
    copied, configs = stage_for_submit(plan)
    print(f"store: {copied} input files copied, {configs} step configs written", file=sys.stderr)
    wf = argo.checked(plan, images, cluster, inputs_digest=inputs_digest(plan))
    req = WorkflowCreateRequest(namespace=ns, workflow=wf.build())
    created = _call("submit", lambda: service.create_workflow(req, namespace=ns))
    name = created.metadata.name
    print(name)
    print(f"submitted {name} to namespace {ns}", file=sys.stderr)
    print(f"  UI:     {ui_link(ns, name)}", file=sys.stderr)
    print(f"  follow: creed status {name}    retry failed steps: creed retry {name}", file=sys.stderr)
    print(f"  logs:   creed logs {name} [STEP]", file=sys.stderr)
    return 0


def _exit_code(node: Any) -> str:
    outputs = getattr(node, "outputs", None)
    code = getattr(outputs, "exit_code", None) if outputs else None
    return str(code) if code is not None else "-"


def cmd_status(args: argparse.Namespace) -> int:
    service, ns = _service(args.namespace)
    wf = _call(f"workflow {args.name}", lambda: service.get_workflow(args.name, namespace=ns))
    st = wf.status
    phase = (st.phase if st else None) or "Pending"
    print(f"{args.name}  {phase}  progress {(st.progress if st else None) or '-'}")
    if st and st.message:
        print(f"message: {st.message}")
    rows = [("STEP", "PHASE", "EXIT", "MESSAGE")]
    for node in sorted((st.nodes or {}).values() if st else [], key=lambda n: str(n.display_name)):
        if node.type not in ("Pod", "Retry"):
            continue
        if node.type == "Pod" and node.display_name and "(" in node.display_name:
            continue  # a retry attempt; its Retry parent stands for it
        rows.append((str(node.display_name), str(node.phase), _exit_code(node), (node.message or "")[:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return {"Succeeded": 0, "Running": 0, "Pending": 0}.get(phase, 1)


def cmd_retry(args: argparse.Namespace) -> int:
    _argo()
    from hera.workflows.models import WorkflowRetryRequest

    service, ns = _service(args.namespace)
    req = WorkflowRetryRequest(name=args.name, namespace=ns, restart_successful=False)
    wf = _call(f"retry {args.name}", lambda: service.retry_workflow(args.name, req, namespace=ns))
    phase = (wf.status.phase if wf.status else None) or "Running"
    print(f"{args.name}: retried, now {phase}; completed steps are skipped (their manifests are kept)")
    return 0


def _attempts(wf: Any, step: str | None) -> list[Any]:
    """The pod nodes of a workflow (every attempt of every step, or of one step), in start order."""
    nodes = [n for n in ((wf.status.nodes or {}).values() if wf.status else []) if n.type == "Pod"]
    if step:
        nodes = [n for n in nodes if str(n.display_name).split("(")[0] == step]
    return sorted(nodes, key=lambda n: (str(n.started_at or ""), str(n.display_name)))


def _log_key(node: Any) -> str | None:
    outputs = getattr(node, "outputs", None)
    for art in (getattr(outputs, "artifacts", None) or []) if outputs else []:
        if art.name == "main-logs" and art.s3 is not None and art.s3.key:
            return str(art.s3.key)
    return None


def cmd_logs(args: argparse.Namespace) -> int:
    """Each attempt's log as Argo archived it (``archiveLogs``) in the store's bucket."""
    service, ns = _service(args.namespace)
    wf = _call(f"workflow {args.name}", lambda: service.get_workflow(args.name, namespace=ns))
    root = (wf.metadata.annotations or {}).get("creed/store", "")
    if not store.is_s3(root):
        raise InputError(f"{args.name}: no creed/store annotation; not a workflow creed rendered")
    bucket = root[len("s3://") :].split("/", 1)[0]
    nodes = _attempts(wf, args.step)
    if not nodes:
        known = sorted({str(n.display_name).split("(")[0] for n in _attempts(wf, None)})
        raise InputError(
            f"{args.name}: no step {args.step!r} ran; steps with pods: {', '.join(known) or 'none'}"
        )
    missing = 0
    for node in nodes:
        key = _log_key(node)
        print(
            f"==> {node.display_name}  {node.phase}  exit {_exit_code(node)}  {node.message or ''}".rstrip()
        )
        if key is None:
            missing += 1
            print(
                "    (no archived log: the pod is still running, or Argo's artifact repository has no "
                "archiveLogs; `kubectl logs` while the pod exists)"
            )
            continue
        sys.stdout.write(store.read_text(f"s3://{bucket}/{key}"))
    return 1 if missing == len(nodes) else 0


def register(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    def cluster_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", help="Kubernetes namespace (default: $ARGO_NAMESPACE or 'creed')")

    def render_args(p: argparse.ArgumentParser) -> None:
        add_spec_args(p)
        p.add_argument("--store", help="s3://bucket/prefix the pods read and write; overrides the spec")
        p.add_argument("--image-tag", help="tag of the default ghcr.io/creed/creed-<stage> images")
        p.add_argument("--service-account", help="service account of the pods (default: creed-workflow)")
        p.add_argument("--parallelism", type=int, help="most pods running at once")
        cluster_args(p)

    p = sub.add_parser("render", help="the Argo Workflow YAML of an experiment")
    render_args(p)
    p.add_argument("-o", "--output", help="write to FILE instead of stdout")
    p.add_argument(
        "--template",
        action="store_true",
        help="a WorkflowTemplate named after the experiment (install once, `argo submit --from`)",
    )

    p = sub.add_parser("upload", help="copy inputs and configs to the store, print the inputs digest")
    render_args(p)

    p = sub.add_parser("submit", help="copy inputs and configs to the store and submit to Argo")
    render_args(p)

    p = sub.add_parser("status", help="phase of a submitted workflow and of each step")
    p.add_argument("name")
    cluster_args(p)

    p = sub.add_parser("retry", help="retry the failed steps of a workflow")
    p.add_argument("name")
    cluster_args(p)

    p = sub.add_parser("logs", help="the archived logs of a workflow's steps (every attempt)")
    p.add_argument("name")
    p.add_argument("step", nargs="?", help="one step (default: every step)")
    cluster_args(p)

    return {
        "render": cmd_render,
        "upload": cmd_upload,
        "submit": cmd_submit,
        "status": cmd_status,
        "retry": cmd_retry,
        "logs": cmd_logs,
    }
