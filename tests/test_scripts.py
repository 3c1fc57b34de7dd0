"""scripts/setup: pip runs only when pyproject.toml or the extras asked for changed, quietly.

Each test copies the script beside a pyproject.toml into a temporary folder whose
.venv holds a stand-in `python` that records how it was called, so no package is
installed and nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for .venv/bin/python: records `-m pip ...` calls, says something noisy like
# pip does, and fails when the project asks it to.
echo "$*" >> "$(dirname "$0")/../calls"
echo "WARNING: a packaging banner nobody needs to read"
[ -f "$(dirname "$0")/../../fail" ] && { echo "ERROR: no matching distribution" >&2; exit 1; }
exit 0
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("bash") is None or shutil.which("sha256sum") is None:
        pytest.skip("scripts/setup needs bash and sha256sum")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "aggregator"\n')
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    (bin_dir / "aggregator").write_text("#!/bin/sh\n")
    (bin_dir / "aggregator").chmod(0o755)
    return tmp_path


def setup(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("FORCE", None)
    return subprocess.run(
        ["bash", str(project / "scripts" / "setup"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def installs(project: Path) -> list[str]:
    """The specs pip was asked to install, in order (pip upgrading itself left out)."""
    calls = project / ".venv" / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [line.split()[-1] for line in lines if " -e " in line]


def test_the_first_run_installs_and_later_runs_do_nothing(project: Path) -> None:
    first = setup(project)
    assert first.returncode == 0, first.stderr
    assert installs(project) == ["."]
    assert "a packaging banner" not in first.stdout + first.stderr
    assert "installing the aggregator" in first.stderr  # one line says why it takes a while
    assert "setup.log" in first.stderr

    again = setup(project)
    assert again.returncode == 0 and again.stdout == again.stderr == ""
    assert installs(project) == ["."]


def test_extras_install_once_and_stay(project: Path) -> None:
    assert setup(project, "test").returncode == 0
    assert setup(project, "test").returncode == 0
    assert setup(project).returncode == 0  # scripts/run after scripts/test: nothing to do
    assert installs(project) == [".[test]"]
    assert setup(project, "postgres,test").returncode == 0
    assert installs(project) == [".[test]", ".[postgres,test]"]


def test_an_edited_pyproject_installs_again(project: Path) -> None:
    assert setup(project, "test").returncode == 0
    with (project / "pyproject.toml").open("a") as file:
        file.write('dependencies = ["httpx"]\n')
    assert setup(project).returncode == 0
    assert installs(project) == [".[test]", "."]  # a new pyproject: extras asked anew
    assert setup(project).returncode == 0
    assert installs(project) == [".[test]", "."]


def test_a_failed_install_shows_pips_output_and_is_tried_again(project: Path) -> None:
    (project / "fail").touch()
    failed = setup(project)
    assert failed.returncode == 1
    assert "no matching distribution" in failed.stderr
    assert "installing the aggregator into .venv failed" in failed.stderr
    assert "run scripts/setup again" in failed.stderr
    (project / "fail").unlink()
    assert setup(project).returncode == 0
    assert installs(project) == [".", "."]


def test_force_reinstalls(project: Path) -> None:
    assert setup(project).returncode == 0
    forced = subprocess.run(
        ["bash", str(project / "scripts" / "setup")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "FORCE": "1"},
        timeout=60,
    )
    assert forced.returncode == 0, forced.stderr
    assert installs(project) == [".", "."]
