"""`creed` without the optional extras: the commands that need none work, and a command that needs
one says which (issue 15: hidden importlib lookups used to crash `creed plan` without hera)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A child interpreter in which `import hera` fails, as in an install without the argo extra.
_NO_HERA = """
import importlib.abc, sys
class NoHera(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "hera" or name.startswith("hera."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoHera())
from workflows.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _creed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _NO_HERA, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_plan_and_help_work_without_hera() -> None:
    out = _creed("plan", "experiments/demo.yaml")
    assert out.returncode == 0, out.stderr
    assert "analyze" in out.stdout and "steps; store" in out.stdout
    assert _creed("--help").returncode == 0


def test_a_command_that_needs_hera_names_the_extra() -> None:
    out = _creed("render", "experiments/demo.yaml", "--store", "s3://b/p")
    assert out.returncode == 2
    assert "needs the argo extra (Hera): pip install 'creed[argo]'" in out.stderr
