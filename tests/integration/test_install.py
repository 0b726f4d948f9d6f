"""The README's Install section: `python -m leantrain`, `leantrain --version`, and a wheel built
with `python -m build` that carries the package, its type marker and the command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import leantrain

ROOT = Path(__file__).parents[2]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_python_m_leantrain_is_the_command() -> None:
    assert _run(sys.executable, "-m", "leantrain", "--version").stdout == (
        f"leantrain {leantrain.__version__}\n"
    )


@pytest.mark.slow
def test_the_wheel_carries_the_package_and_the_command(tmp_path: Path) -> None:
    """`python -m build --wheel` (without an isolated env: nothing is downloaded) from a copy of
    the files a clone has."""
    pytest.importorskip("build")
    tree = tmp_path / "clone"
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    done = _run(
        sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", "dist", cwd=tree
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tree / "dist").glob("leantrain-*.whl")
    assert wheel.name.startswith(f"leantrain-{leantrain.__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"leantrain-{leantrain.__version__}.dist-info"
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    assert {"leantrain/py.typed", "leantrain/__main__.py", "leantrain/cli.py"} <= names
    assert "leantrain = leantrain.cli:main" in entry_points
