"""Every shipped experiment (``experiments/*.yaml``) rendered as an Argo Workflow, committed beside
its spec as ``experiments/<name>.workflow.yaml``, so a reviewer sees exactly what a cluster runs.

    python -m workflows.rendered                               # rewrite them all
    CREED_REGEN=1 pytest tests/workflows/test_argo.py           # the same, from the test that compares

A spec whose store is a local folder is rendered with ``store=s3://creed-<name>/experiments`` (pods
cannot read a laptop's disk), and the CPU-only demo asks for one GPU for train and eval, as it would
on a cluster. `tests/workflows/test_argo.py` fails when a change to a spec, the plan or the renderer
is not reflected in the committed files.
"""

from __future__ import annotations

from pathlib import Path

from jobs.common import store
from workflows import spec as spec_mod
from workflows.argo import render_yaml
from workflows.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SUFFIX = ".workflow.yaml"
#: Extra overrides per shipped spec (file name), on top of the s3 store.
OVERRIDES: dict[str, list[str]] = {"demo.yaml": ["resources.train.gpus=1", "resources.eval.gpus=1"]}
#: A fixed image tag, so the committed files do not change with every commit. `creed render` tags the
#: images with the commit of the checkout (what images/build.sh builds); this placeholder stands for it.
IMAGE_TAG = "COMMIT"


def shipped_specs() -> list[Path]:
    return sorted(p for p in EXPERIMENTS.glob("*.yaml") if not p.name.endswith(SUFFIX))


def output_for(spec_path: Path) -> Path:
    return spec_path.with_name(spec_path.stem + SUFFIX)


def overrides_for(spec_path: Path) -> list[str]:
    raw = spec_mod.load(spec_path)
    extra = [] if store.is_s3(raw.store) else [f"store=s3://creed-{raw.name}/experiments"]
    return extra + OVERRIDES.get(spec_path.name, [])


def render(spec_path: Path) -> str:
    # The workflow holds only store URIs, so it does not depend on where this runs from.
    overrides = overrides_for(spec_path)
    spec = spec_mod.load(spec_path, overrides)
    rel = spec_path.relative_to(ROOT).as_posix()
    sets = "".join(f" --set {o}" for o in overrides)
    header = (
        f"# Generated from {rel} by `python -m workflows.rendered`\n"
        f"# (= creed render {rel}{sets} --image-tag {IMAGE_TAG}). Do not edit.\n"
    )
    cluster = spec.cluster.model_copy(update={"image_tag": IMAGE_TAG})
    return header + render_yaml(build_plan(spec), dict(spec.images), cluster)


if __name__ == "__main__":
    for path in shipped_specs():
        out = output_for(path)
        out.write_text(render(path), encoding="utf-8")
        print(f"wrote {out.relative_to(ROOT)}")
