"""The package as a user installs it: a wheel built from this checkout holds every module of
``flows`` and ``tasks`` (their subpackages included) and its entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.system  # builds a wheel in a process of its own


def build_wheel(into: Path) -> Path:
    """The wheel of this checkout, as ``pip wheel`` builds it (with the setuptools of constraints.txt)."""
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
            str(into),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = into.glob("bce_eval-*.whl")
    return wheel


def test_the_wheel_holds_every_module_and_the_entry_points(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for pkg in ("flows", "tasks") for p in (REPO / pkg).rglob("*.py")}
    assert modules - names == set(), "modules the wheel leaves out"
    assert not {n for n in names if n.startswith("tests/")}, "tests are not part of the package"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "bce-eval = flows.cli.main:run" in text and "bce-eval = flows.cli.ui_app:create_app" in text


# --- the package installed as a user installs it: a clean virtual environment, the constraints --------


def _pip(venv: Path, *args: str) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints.txt"), *args],
        check=True,
        capture_output=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """A clean virtual environment holding the wheel of this checkout with its declared dependencies only."""
    where = tmp_path_factory.mktemp("installed")
    wheel = build_wheel(where)
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True, timeout=120)
    _pip(where / "venv", str(wheel))
    return where / "venv", wheel


def _bce_eval(venv: Path, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "bce-eval"), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_the_installed_package_evaluates_and_names_each_missing_extra_then_runs_with_it(
    installed, prefect_server, s3_env, tmp_path
):
    import os
    import shutil

    import fsspec
    import polars as pl
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    venv, wheel = installed
    shutil.copytree(REPO / "data" / "demo", tmp_path / "demo")
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env.pop("PYTHONPATH", None)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("installed")
    for path in sorted((tmp_path / "demo").rglob("*.parquet")):
        fs.put_file(str(path), f"s3://installed/demo/{path.relative_to(tmp_path / 'demo').as_posix()}")
    demo = pl.read_parquet(tmp_path / "demo", hive_partitioning=True)
    X, y = demo.select("f1", "f2", "f3").to_numpy(), demo.get_column("label").to_numpy()
    expected = log_loss(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1])
    base = ["evaluate", "--label", "label", "--features", "f1,f2,f3"]

    run = _bce_eval(venv, [*base[:1], "demo", *base[1:]], env, tmp_path)  # the base package: local data
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"overall BCE {expected:.4f}" in run.stdout
    for args, extra in ((["s3://installed/demo"], "s3"), (["demo", "--dask", "local"], "dask")):
        run = _bce_eval(venv, [*base[:1], *args, *base[1:]], env, tmp_path)
        last = run.stderr.strip().splitlines()[-1]
        assert run.returncode == 2 and f"pip install 'bce-eval[{extra}]'" in last, run.stderr[-2000:]
        assert "Traceback" not in run.stderr

    _pip(venv, f"{wheel}[s3,dask]")
    for args in (["s3://installed/demo"], ["demo", "--dask", "local"]):
        run = _bce_eval(venv, [*base[:1], *args, *base[1:]], env, tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"overall BCE {expected:.4f}" in run.stdout


def test_every_extra_is_pinned_and_every_optional_module_has_its_extra():
    import tomllib

    from tasks.extras import EXTRAS

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    pinned = {
        line.split("==")[0].split("[")[0].lower()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for name, packages in extras.items():
        for package in packages:
            if not package.startswith("bce-eval"):
                assert package.split("[")[0].lower() in pinned, (name, package)
