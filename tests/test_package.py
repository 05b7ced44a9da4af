"""The package as a user installs it: a wheel built from this checkout holds every module of
``flows`` and ``tasks`` (their subpackages included) and its entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.system  # builds a wheel in a process of its own


def test_the_wheel_holds_every_module_and_the_entry_points(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("bce_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for pkg in ("flows", "tasks") for p in (REPO / pkg).rglob("*.py")}
    assert modules - names == set(), "modules the wheel leaves out"
    assert not {n for n in names if n.startswith("tests/")}, "tests are not part of the package"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "bce-eval = flows.cli.main:run" in text and "bce-eval = flows.cli.ui_app:create_app" in text
