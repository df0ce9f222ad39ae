"""``creed``: plan, run, render and submit experiments; check input data; classify responses.

creed plan experiments/demo.yaml [--json]
creed run experiments/demo.yaml [--only 'generate*,filter*'] [--force 'eval-*'] [--workers 2]
creed check-data data/personas/*.yaml data/prompts/*.jsonl
creed import-evals bench.csv --kind benign --text-col prompt -o data/evals/bench.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from jobs.common.errors import EXIT_BAD_INPUT, CreedError
from jobs.refusal import cli as classify_cli
from workflows import argo_cli, import_evals
from workflows import spec as spec_mod
from workflows.plan import Plan, build_plan


def _load_spec(args: argparse.Namespace) -> spec_mod.ExperimentSpec:
    spec = spec_mod.load(args.spec, args.set)
    if getattr(args, "store", None):
        spec = spec.model_copy(update={"store": args.store})
    return spec


def _load_plan(args: argparse.Namespace) -> Plan:
    return build_plan(_load_spec(args))


def cmd_plan(args: argparse.Namespace) -> int:
    from workflows.estimate import estimate, format_estimate

    spec = _load_spec(args)
    plan = build_plan(spec)
    if args.json:
        sys.stdout.write(plan.to_json())
        return 0
    rows = [("STEP", "JOB", "GPU", "CPU", "MEM", "DEPENDS ON")]
    for s in plan.steps:
        deps = ",".join(s.depends) if len(s.depends) <= 3 else f"{len(s.depends)} steps"
        r = s.resources
        rows.append((s.name, s.job, str(r.gpus), f"{r.cpu:g}", r.memory, deps or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"\n{len(plan.steps)} steps; store {plan.store}/{plan.experiment}\n")
    print(format_estimate(spec, estimate(spec, plan)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from workflows.local import run_plan

    plan = _load_plan(args)
    t0 = time.monotonic()
    report = run_plan(plan, only=args.only, force=args.force, workers=args.workers)
    minutes, seconds = divmod(round(time.monotonic() - t0), 60)
    print(
        f"\n{len(report.ran)} ran, {len(report.skipped)} skipped (complete), "
        f"{len(report.not_started)} not started in {minutes}m{seconds:02d}s",
        file=sys.stderr,
    )
    if report.interrupted:
        return 130
    if report.failed:
        f = report.failed
        print(f"failed: step {f.step} exited {f.exit_code}; log: {f.log}", file=sys.stderr)
        return f.exit_code if f.exit_code in (2, 75) else 1
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from jobs.common.loaders import check_file

    bad = 0
    for path in args.paths:
        try:
            n = check_file(path)
            print(f"ok    {path} ({n} records)")
        except CreedError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
    return EXIT_BAD_INPUT if bad else 0


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML), e.g. experiments/demo.yaml")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a spec value"
    )


def _globs(value: str) -> list[str]:
    """``--only 'generate*,filter*'`` is ``--only 'generate*' --only 'filter*'``."""
    globs = [g.strip() for g in value.split(",") if g.strip()]
    if not globs:
        raise argparse.ArgumentTypeError(f"{value!r}: no step glob (e.g. 'generate*' or 'generate*,filter*')")
    return globs


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(
        prog="creed", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("plan", help="show the steps, their jobs, resources and edges")
    _add_spec_args(p)
    p.add_argument("--json", action="store_true", help="the full plan as stable JSON")
    handlers["plan"] = cmd_plan

    p = sub.add_parser("run", help="run the experiment on this machine (local backend)")
    _add_spec_args(p)
    p.add_argument("--store", help="store URI (local folder or s3://bucket/prefix); overrides the spec")
    p.add_argument(
        "--only",
        action="extend",
        type=_globs,
        metavar="GLOB[,GLOB]",
        help="run only steps matching a GLOB (repeat it, or separate GLOBs with commas)",
    )
    p.add_argument(
        "--force",
        action="extend",
        type=_globs,
        metavar="GLOB[,GLOB]",
        help="rerun matching steps even if complete (repeat it, or separate GLOBs with commas)",
    )
    p.add_argument("--workers", type=int, default=1, help="steps run in parallel (GPU steps: one per GPU)")
    handlers["run"] = cmd_run

    p = sub.add_parser("check-data", help="validate persona (YAML), prompt and eval-item (JSONL) files")
    p.add_argument("paths", nargs="+")
    handlers["check-data"] = cmd_check_data

    handlers.update(argo_cli.register(sub, _add_spec_args))
    handlers.update(classify_cli.register(sub, _add_spec_args))
    handlers.update(import_evals.register(sub))
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except CreedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
