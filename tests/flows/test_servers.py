"""Against real servers started here: `mlflow server` and `prefect server start` on loopback ports,
with temporary homes. The project logs over HTTP, registers a model, evaluates it by alias, compares
a challenger, fails a gate, and a served cron deployment runs to completion with results in MLflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import mlflow
import pytest

from tests.conftest import REPO
from tests.conftest import free_port as _free_port
from tests.conftest import wait_http as _wait_http

#: real processes (the CLI, servers, a terminal or a browser): part of make test, not make test-fast
pytestmark = pytest.mark.system


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination",
            (home / "artifacts").as_uri(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=home,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", proc, timeout=180)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def env(mlflow_server, prefect_api, tmp_path_factory):
    home = tmp_path_factory.mktemp("client-home")
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(home),
    }


def cli(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def _run_id(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.split("MLflow run ")[1].split()[0]


def test_registry_alias_comparison_and_gate_over_http(env, mlflow_server, prefect_api):
    data = str(REPO / "data" / "demo")
    common = [data, "--label", "label"]
    first = cli(["evaluate", *common, "--features", "f1,f2,f3", "--register", "demo-model", "--alias", "champion"], env)
    assert first.returncode == 0, first.stderr
    client = mlflow.MlflowClient(mlflow_server)
    assert client.get_model_version_by_alias("demo-model", "champion").version == "1"
    run1 = client.get_run(_run_id(first))
    assert run1.data.tags["registered_model_version"] == "1"
    assert run1.info.artifact_uri.startswith("mlflow-artifacts:")  # logged over HTTP

    by_alias = cli(["evaluate", *common, "--model-uri", "models:/demo-model@champion"], env)
    assert by_alias.returncode == 0, by_alias.stderr
    run2 = client.get_run(_run_id(by_alias))
    assert run2.data.tags["model_name"] == "demo-model" and run2.data.tags["model_version"] == "1"
    assert run2.data.metrics["bce"] == pytest.approx(run1.data.metrics["bce"], rel=1e-12)

    # a weaker challenger (strong regularisation) as version 2: never promoted
    weak = cli(["evaluate", *common, "--features", "f1,f2,f3", "--C", "0.001", "--register", "demo-model"], env)
    assert weak.returncode == 0, weak.stderr
    cmp_ = cli(
        [
            "compare",
            data,
            "--label",
            "label",
            "--champion",
            "models:/demo-model@champion",
            "--challenger",
            "models:/demo-model/2",
            "--promote",
            "--margin",
            "0.0",
        ],
        env,
    )
    assert cmp_.returncode == 0, cmp_.stderr
    assert "champion better" in cmp_.stdout and "promotion: no" in cmp_.stdout
    assert client.get_model_version_by_alias("demo-model", "champion").version == "1"
    run3 = client.get_run(_run_id(cmp_))
    assert run3.data.metrics["bce_diff"] == pytest.approx(
        client.get_run(_run_id(weak)).data.metrics["bce"] - run1.data.metrics["bce"], rel=1e-9
    )
    assert run3.data.metrics["bce_diff_low"] > 0

    # the other way round the challenger (version 1) is better: the alias moves to it
    client.set_registered_model_alias("demo-model", "champion", "2")
    back = cli(
        [
            "compare",
            data,
            "--label",
            "label",
            "--champion",
            "models:/demo-model@champion",
            "--challenger",
            "models:/demo-model/1",
            "--promote",
            "--margin",
            "0.001",
        ],
        env,
    )
    assert back.returncode == 0, back.stderr
    assert client.get_model_version_by_alias("demo-model", "champion").version == "1"
    assert "is now @champion" in client.get_run(_run_id(back)).data.tags["comparison.promoted"]

    # a failing gate: FINISHED run tagged failed, Failed flow run naming the partition, exit 3
    gate = cli(
        [
            "evaluate",
            *common,
            "--model-uri",
            "models:/demo-model@champion",
            "--max-partition-bce",
            "0.65",
            "--min-rows",
            "100",
        ],
        env,
    )
    assert gate.returncode == 3, gate.stderr
    last = [l for l in gate.stderr.splitlines() if l.strip()][-1]
    assert last.startswith("bce-eval: quality gate failed") and "region=west" in last
    run4 = client.get_run(_run_id(gate))
    assert run4.info.status == "FINISHED"
    assert run4.data.tags["quality_gate"] == "failed" and "region=west" in run4.data.tags["quality_gate.partitions"]
    flow_run_id = run4.data.tags["prefect.flow_run_id"]
    state = httpx.get(f"{prefect_api}/flow_runs/{flow_run_id}").json()["state"]
    assert state["type"] == "FAILED" and "region=west" in state["message"]


def _serve(name: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``bce-eval serve --name NAME ARGS`` started (its logs drained), and the run-it-now hint it printed."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--cron", "0 2 * * *", "--name", name, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    hint = next((line for line in serve.stdout if "run it now from another shell:" in line), "")
    import threading

    threading.Thread(target=serve.stdout.read, daemon=True).start()  # keep draining the served flow's logs
    return serve, hint


def _deployment(prefect_api: str, name: str) -> dict:
    deployment, deadline = None, time.monotonic() + 120
    while time.monotonic() < deadline and deployment is None:
        r = httpx.get(f"{prefect_api}/deployments/name/bce-evaluate/{name}")
        deployment = r.json() if r.status_code == 200 else None
        time.sleep(1)
    assert deployment is not None, "the served deployment never appeared"
    return deployment


def _finished(prefect_api: str, flow_run_id: str, timeout: float = 240) -> str:
    state, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{prefect_api}/flow_runs/{flow_run_id}").json()["state"]["type"]
        if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            break
        time.sleep(1)
    return state


def test_served_cron_deployment_runs_and_logs(env, mlflow_server, prefect_api):
    args = [str(REPO / "data" / "demo"), "--label", "label", "--features", "f1,f2,f3", "--experiment", "served"]
    serve, hint = _serve("nightly-test", args, env)
    try:
        deployment = _deployment(prefect_api, "nightly-test")
        crons = [s["schedule"].get("cron") for s in deployment["schedules"]]
        assert crons == ["0 2 * * *"]

        # the hint as printed, from a second shell that knows no PREFECT_API_URL
        import re

        shell_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        triggered = subprocess.run(
            ["bash", "-c", hint.split("run it now from another shell:", 1)[1].strip()],
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr
        run = {"id": re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout).group(1)}
        assert _finished(prefect_api, run["id"]) == "COMPLETED"
        client = mlflow.MlflowClient(mlflow_server)
        exp = client.get_experiment_by_name("served")
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{run['id']}'")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert runs[0].data.tags["prefect.deployment_id"] == deployment["id"]
        assert runs[0].data.metrics["bce"] > 0
    finally:
        _stop(serve)


def _nights(root, seed: int = 11):
    """Three days of a calibrated model's logits ``z`` and labels ``y``: (labels as the first night has them, all)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    frames = {}
    for day in ("2026-12-01", "2026-12-02", "2026-12-03"):
        z = rng.normal(0, 1.5, 3000)
        frames[day] = pl.DataFrame({"z": z, "y": (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(np.int8)})
    first = {
        "2026-12-01": frames["2026-12-01"],
        # half of a day's labels have come by the first night, none of the last day's
        "2026-12-02": frames["2026-12-02"].with_columns(
            pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.col("y")).otherwise(None).alias("y")
        ),
        "2026-12-03": frames["2026-12-03"].with_columns(pl.lit(None, pl.Int8).alias("y")),
    }
    return first, frames


def _write_days(root, frames) -> None:
    for day, df in frames.items():
        (root / f"date={day}").mkdir(parents=True, exist_ok=True)
        df.write_parquet(root / f"date={day}" / "part.parquet")


def _night_run(client, prefect_api: str, deployment: dict) -> mlflow.entities.Run:
    flow_run = httpx.post(f"{prefect_api}/deployments/{deployment['id']}/create_flow_run", json={}).json()
    assert _finished(prefect_api, flow_run["id"]) == "COMPLETED"
    exp = client.get_experiment_by_name("late-labels")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run['id']}'")
    return run


def test_a_deployment_estimates_a_night_without_labels_then_realizes_it_and_records_the_error(
    env, mlflow_server, prefect_api, tmp_path
):
    import numpy as np
    from sklearn.metrics import log_loss

    from tasks.data.naming import metric_key_suffix

    data = tmp_path / "nightly"
    first, full = _nights(data)
    _write_days(data, first)
    args = [str(data), "--label", "y", "--score-col", "z", "--score-kind", "logit", "--partition-by", "date"]
    serve, _ = _serve("late-labels", [*args, "--late-labels", "--experiment", "late-labels"], env)
    key = {day: metric_key_suffix({"date": day}) for day in full}

    def h(z: np.ndarray) -> float:  # mean H(p): the BCE a calibrated model expects
        p = 1 / (1 + np.exp(-z))
        return float(np.mean(-(p * np.log(p) + (1 - p) * np.log1p(-p))))

    try:
        deployment = _deployment(prefect_api, "late-labels")
        client = mlflow.MlflowClient(mlflow_server)
        night1 = _night_run(client, prefect_api, deployment).data
        late, partly = first["2026-12-03"], first["2026-12-02"]
        got = night1.metrics
        assert f"bce_by_partition/{key['2026-12-03']}" not in got  # nothing estimated is shown as realized
        assert got[f"estimated_bce_by_partition/{key['2026-12-03']}"] == pytest.approx(h(late["z"].to_numpy()), 1e-12)
        labelled, waiting = partly.filter(partly["y"].is_not_null()), partly.filter(partly["y"].is_null())
        p = 1 / (1 + np.exp(-labelled["z"].to_numpy()))
        assert got[f"bce_by_partition/{key['2026-12-02']}"] == pytest.approx(log_loss(labelled["y"], p), rel=1e-12)
        assert got[f"estimated_bce_by_partition/{key['2026-12-02']}"] == pytest.approx(
            h(waiting["z"].to_numpy()), rel=1e-12
        )
        assert got["n_unlabelled"] == 3000 + 1500
        assert set(night1.tags["bce_eval.estimated_partitions"].split(",")) == {"date=2026-12-02", "date=2026-12-03"}

        _write_days(data, {"2026-12-02": full["2026-12-02"], "2026-12-03": full["2026-12-03"]})  # labels come
        night2 = _night_run(client, prefect_api, deployment).data
        got = night2.metrics
        done = full["2026-12-03"]
        realized = log_loss(done["y"], 1 / (1 + np.exp(-done["z"].to_numpy())))
        assert got[f"bce_by_partition/{key['2026-12-03']}"] == pytest.approx(realized, rel=1e-12)
        error = got[f"estimate_error_by_partition/{key['2026-12-03']}"]
        assert error == pytest.approx(
            realized - night1.metrics[f"estimated_bce_by_partition/{key['2026-12-03']}"], 1e-9
        )
        assert got["n_estimates_checked"] == 1  # the partly labelled day: its estimate covered other rows
        assert not any(k.startswith("estimated_bce_by_partition/") for k in got)
        assert "bce_eval.estimated_partitions" not in night2.tags
    finally:
        _stop(serve)
