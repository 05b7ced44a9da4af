"""An MLflow tracking server on PostgreSQL (Debian's) with its artifacts in an S3 bucket (moto's
server), every part a real process on loopback, and bce-eval logging to it as a team would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import free_port, wait_http

REPO = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="postgresql-15 not installed (make test installs it as root)")


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: as root, run them as Debian's postgres user
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL 15 server of its own (a fresh cluster in a temporary folder), on 127.0.0.1."""
    import tempfile

    # not under pytest's root-only temporary folder: the postgres user must reach it
    home = Path(tempfile.mkdtemp(prefix="bce-eval-pg-"))
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
    data, port = home / "data", free_port()
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    server = subprocess.Popen(
        _as_postgres([str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(home)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    yield f"postgresql://postgres@127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=60)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres: str, s3_env: str, tmp_path: Path):
    """``mlflow server`` with its runs in a new PostgreSQL database and its artifacts in a bucket."""
    import s3fs

    db = f"mlflow_{os.getpid()}_{free_port()}"
    subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", postgres.rsplit(":", 1)[1], "-U", "postgres", db], check=True)
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(db.replace("_", "-"))
    port, log = free_port(), tmp_path / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_env}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{postgres}/{db}",
           "--artifacts-destination", f"s3://{db.replace('_', '-')}/mlflow", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, 180, log)
        yield url, db.replace("_", "-")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def test_eight_evaluations_at_once_against_mlflow_on_postgres_with_s3_artifacts(prefect_server, mlflow_server, tmp_path):
    import mlflow
    import s3fs
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    url, bucket = mlflow_server
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "PREFECT_API_URL": prefect_server, "BCE_EVAL_CACHE": str(tmp_path / "cache")}
    names = [f"concurrent-{i}" for i in range(8)]

    def evaluate(name: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "flows.cli", "evaluate", str(REPO / "data" / "demo"), "--label", "label",
               "--features", "f1,f2,f3", "--run-name", name, "--no-cache"]
        return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)

    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(evaluate, names))
    assert [p.returncode for p in done] == [0] * 8, [p.stderr[-500:] for p in done if p.returncode]

    demo = pl.read_parquet(REPO / "data" / "demo", hive_partitioning=True)
    X, y = demo.select("f1", "f2", "f3").to_numpy(), demo.get_column("label").to_numpy()
    expected = log_loss(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1])
    client = mlflow.MlflowClient(url)
    runs = client.search_runs([client.get_experiment_by_name("bce-evaluation").experiment_id], max_results=100)
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == sorted(names)  # eight whole runs, none lost, none doubled
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for run in by_name.values():
        assert run.info.status == "FINISHED"
        assert run.data.metrics["bce"] == pytest.approx(expected, rel=1e-6)
        assert {"bce_by_partition/region_north", "accuracy", "roc_auc"} <= set(run.data.metrics)
        # the table and the plots are in the bucket, under the run's artifact location
        stored = fs.find(f"{bucket}/mlflow")
        assert any(run.info.run_id in key and key.endswith("bce_by_partition.json") for key in stored)
        assert sum(run.info.run_id in key and key.endswith(".png") for key in stored) >= 3
    assert np.isfinite(expected)
