"""tasks/home.py: the project's home is the checkout's root when the code runs from one, else the
current folder (an installed copy of the code, as in site-packages or a worker's image)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tasks
import tasks.home
from tasks.home import project_home

CHECKOUT = Path(__file__).resolve().parents[2]  # tests/tasks/test_home.py -> the checkout


def test_from_this_checkout_the_home_is_its_root_wherever_the_process_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "flows").is_dir()
    assert tasks.home.CODE_ROOT == Path(tasks.__file__).resolve().parent.parent == CHECKOUT
    monkeypatch.chdir(tmp_path)
    assert project_home() == CHECKOUT


def _installed_copy(where: Path, with_pyproject: bool, with_flows: bool) -> Path:
    """The ``tasks`` package copied to ``where`` (as pip puts it into site-packages), with or without
    a ``pyproject.toml`` and a ``flows`` folder beside it."""
    shutil.copytree(CHECKOUT / "tasks", where / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    if with_pyproject:
        (where / "pyproject.toml").write_text("[project]\nname = 'something-else'\n")
    if with_flows:
        (where / "flows").mkdir()
    return where


@pytest.mark.parametrize("with_pyproject, with_flows", [(False, False), (False, True), (True, False)])
def test_an_installed_copy_uses_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_pyproject, with_flows
):
    # site-packages may hold some other project's pyproject.toml or a package named flows: only both
    # together mark a checkout
    site = _installed_copy(tmp_path / "site-packages", with_pyproject, with_flows)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tasks.home, "CODE_ROOT", site)
    monkeypatch.chdir(work)
    assert project_home() == work
    monkeypatch.chdir(tmp_path)
    assert project_home() == tmp_path


def test_a_copy_of_the_checkout_is_its_own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    other = _installed_copy(tmp_path / "clone", with_pyproject=True, with_flows=True)
    monkeypatch.setattr(tasks.home, "CODE_ROOT", other)
    monkeypatch.chdir(tmp_path)
    assert project_home() == other
