"""Shared fixtures: one temporary Prefect server per session, a private MLflow store per test,
and tiny partitioned Parquet datasets written into tmp_path."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REPO = Path(__file__).resolve().parents[1]

#: fixtures that start a real server or process: a test that uses one is a system test
#: (``make test-fast`` leaves out ``-m system``; ``make test`` runs everything)
SYSTEM_FIXTURES = frozenset({"prefect_server", "team_stack", "s3_endpoint", "s3_env"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture as ``system`` (modules that start processes
    themselves mark themselves)."""
    for item in items:
        if SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def prefect_server(prefect_home: Path) -> str:
    """One temporary Prefect server for the whole session; returns its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private SQLite MLflow store under tmp_path, set as MLFLOW_TRACKING_URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def make_frame(n: int, seed: int, shift: float = 0.0, noise: float = 0.1) -> pl.DataFrame:
    """n rows of three features and a 0/1 label from a noisy logistic model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=shift, size=(n, 3))
    p = 1.0 / (1.0 + np.exp(-(X @ np.array([1.2, -0.8, 0.5]) + 0.1)))
    y = (rng.random(n) < p).astype(np.int64)
    flip = rng.random(n) < noise
    y = np.where(flip, 1 - y, y)
    return pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y})


def write_hive(root: Path, parts: dict[str, pl.DataFrame], key: str = "region") -> Path:
    """Write ``{value: frame}`` as ``root/key=value/part-0.parquet``."""
    for value, df in parts.items():
        folder = root / f"{key}={value}"
        folder.mkdir(parents=True, exist_ok=True)
        df.write_parquet(folder / "part-0.parquet")
    return root


@pytest.fixture
def hive_data(tmp_path: Path) -> Path:
    """A small hive-partitioned dataset of four regions of different difficulty."""
    parts = {
        "north": make_frame(300, 1, noise=0.02),
        "south": make_frame(200, 2, shift=0.5, noise=0.2),
        "east": make_frame(150, 3, shift=-0.5, noise=0.1),
        "west": make_frame(100, 4, noise=0.35),
    }
    return write_hive(tmp_path / "hive", parts)


@pytest.fixture
def seed_points() -> Path:
    return REPO / "data" / "seed_points.parquet"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own per-partition cache (never the repo's)."""
    path = tmp_path / "bce-cache"
    monkeypatch.setenv("BCE_EVAL_CACHE", str(path))
    return path


_PREFECT_LOGGERS = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra")


@pytest.fixture(autouse=True)
def console_logs_to_this_test() -> None:
    """Point Prefect's console handlers at this test's stderr.

    They keep the stream that was ``sys.stderr`` when Prefect set up logging: if that was an
    earlier test's capture (closed since), a flow's ``print()`` fails there, recursively.
    """
    for name in _PREFECT_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            console = getattr(handler, "console", None)
            if console is not None:
                console.file = sys.stderr


def run_cli_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    """``bce-eval ARGS`` in this process: (exit code, stdout, non-empty stderr lines).

    ``main`` sets up the process for a one-shot command (environment defaults, log handlers and
    filters, logger levels); these are put back afterwards, so later tests see the session as it was.
    """
    from flows.cli.main import main

    names = (*_PREFECT_LOGGERS, "mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.tracking.fluent")
    saved = [
        (lg, list(lg.handlers), lg.level, {h: list(h.filters) for h in lg.handlers})
        for lg in map(logging.getLogger, names)
    ]
    env = dict(os.environ)
    capsys.readouterr()
    try:
        code = main(args)
    finally:
        os.environ.clear()
        os.environ.update(env)
        for logger, handlers, level, filters in saved:
            for handler in [h for h in logger.handlers if h not in handlers]:
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(level)
            for handler, kept in filters.items():
                handler.filters[:] = kept
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


# --- the team stack's servers, each a real process on loopback ----------------------------------

SECRET = "s3cr3t-never-shown-7f3a"


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port chosen now is often bound much later (a server started after a slow step): an
    ephemeral port (what ``bind(0)`` and every outgoing connection get) may be taken meanwhile by
    the other test process or any client; ports below that range are only ever taken on purpose.
    """
    import random

    low = (
        int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        if Path("/proc/sys/net/ipv4/ip_local_port_range").exists()
        else 32768
    )
    for _ in range(200):
        port = random.randint(20000, max(20001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120, log: Path | None = None) -> None:
    """Until ``url`` answers 200; an error (with the end of ``log``) if ``proc`` exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {url} {log.read_text()[-2000:] if log else ''}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} {log.read_text()[-2000:] if log else ''}")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server process on 127.0.0.1 (what the s3fs, pandas and Dask test suites use)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"moto server did not start: {log.read_text()}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The standard AWS environment pointing at the server (as a user exports it)."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "bce-eval-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint


@pytest.fixture(scope="session")
def team_stack():
    """The whole team stack of ``bce-eval stack up`` (PostgreSQL, S3, MLflow and Prefect servers, a
    worker, a Dask cluster), once per session, in a temporary folder on free loopback ports."""
    import shutil
    import tempfile

    from flows.stack.control import PG_BIN, StackPorts, start_stack, stop_stack

    if not (PG_BIN / "initdb").exists():
        pytest.skip("postgresql-15 not installed (make test installs it as root)")
    # not under pytest's root-only temporary folder: as root, the postgres user must reach it
    home = Path(tempfile.mkdtemp(prefix="bce-eval-stack-"))
    ports = StackPorts(postgres=free_port(), s3=free_port(), mlflow=free_port(), prefect=free_port(), dask=free_port())
    stack = start_stack(home, ports, say=lambda line: None)
    try:
        yield stack
    finally:
        stop_stack(home, say=lambda line: None)
        shutil.rmtree(home, ignore_errors=True)
