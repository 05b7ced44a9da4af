"""Faults injected for real: a tracking server that is down, a killed process, concurrent runs,
retried flow runs, hostile partition values, credentials in URIs, and random malformed input."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tests.conftest import REPO, make_frame, write_hive
from tests.flows.test_servers import _free_port, _stop, _wait_http

#: real processes (the CLI, servers, a terminal or a browser): part of make test, not make test-fast
pytestmark = pytest.mark.system

ALLOWED_KEY = re.compile(r"^[/\w.\- :]*$")


def _cli(args, env, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def _last(proc):
    return [l for l in proc.stderr.splitlines() if l.strip()][-1]


def _start_mlflow(port: int, home: Path) -> subprocess.Popen:
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
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=300)  # a loaded machine: MLflow's imports take long
    except BaseException:
        _stop(proc)  # a server that was slow to start is not left running
        raise
    return proc


def test_tracking_server_down_then_back(prefect_server, hive_data, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "MLFLOW_TRACKING_URI": f"http://user:s3cret@127.0.0.1:{port}?token=abc123",
    }
    args = ["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"]
    down = _cli(args, env)
    assert down.returncode == 4, down.stderr
    last = _last(down)
    assert last.startswith("bce-eval: error: could not log to MLflow") and "results are saved in" in last
    assert "s3cret" not in down.stderr + down.stdout and "abc123" not in down.stderr + down.stdout
    saved = Path(re.search(r"saved in (\S+\.json)", last).group(1))
    assert saved.exists()

    server = _start_mlflow(port, tmp_path)
    try:
        env["MLFLOW_TRACKING_URI"] = (
            f"http://user:s3cret@127.0.0.1:{port}"  # a query string is no valid MLflow base URI
        )
        back = _cli(args, env)
        assert back.returncode == 0, back.stderr
        run_id = back.stdout.split("MLflow run ")[1].split()[0]
        run = mlflow.MlflowClient(f"http://127.0.0.1:{port}").get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.metrics["partitions_reused"] == 4 and run.data.metrics["partitions_computed"] == 0
        assert "s3cret" not in str(run.data.params) + str(run.data.tags)
    finally:
        _stop(server)


def test_killed_process_is_recovered_and_rerun_is_identical(prefect_server, mlflow_uri, tmp_path):
    root = write_hive(tmp_path / "big", {f"p{i:02d}": make_frame(40_000, i) for i in range(24)})
    reference = evaluate_flow(EvaluateSettings(data=str(root), label="label", features=["a", "b", "c"], cache=False))
    model_uri = f"runs:/{reference.run_id}/model"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "BCE_EVAL_CACHE": str(tmp_path / "kcache"),
    }
    args = ["evaluate", str(root), "--label", "label", "--model-uri", model_uri, "--chunk-rows", "40000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = tmp_path / "kcache"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(cache.rglob("*.entry"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cached_before = len(list(cache.rglob("*.entry")))
    assert 0 < cached_before < 24

    # a run of the same evaluation left RUNNING by a process that no longer exists
    client = mlflow.MlflowClient()
    exp_id = client.get_experiment_by_name("bce-evaluation").experiment_id
    key = client.get_run(reference.run_id).data.tags["bce_eval.evaluation_key"]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = client.create_run(
        exp_id,
        tags={"bce_eval.evaluation_key": key, "bce_eval.host": socket.gethostname(), "bce_eval.pid": str(dead.pid)},
    )
    # same settings as the reference (fitted, with the same coefficients) so the key matches
    again = evaluate_flow(EvaluateSettings(data=str(root), label="label", features=["a", "b", "c"], cache=False))
    assert client.get_run(stale.info.run_id).info.status == "FAILED"
    assert "died" in client.get_run(stale.info.run_id).data.tags["bce_eval.recovered"]
    assert again.overall["bce"] == reference.overall["bce"]

    rerun = _cli(args, env)
    assert rerun.returncode == 0, rerun.stderr
    run = client.get_run(rerun.stdout.split("MLflow run ")[1].split()[0])
    assert run.data.metrics["partitions_reused"] >= cached_before
    assert run.data.metrics["bce"] == pytest.approx(reference.overall["bce"], rel=1e-12)


def test_retried_flow_run_reuses_its_run(mlflow_uri):
    from tasks.tracking.content import RunContent
    from tasks.tracking.operations import log_evaluation

    content = RunContent(experiment="idem", run_name="r", metrics={"bce": 0.5}, tags={"prefect.flow_run_id": "fr-123"})
    first, _ = log_evaluation(content, mlflow_uri)
    second, _ = log_evaluation(content, mlflow_uri)
    assert first == second
    exp = mlflow.MlflowClient().get_experiment_by_name("idem")
    assert len(mlflow.MlflowClient().search_runs([exp.experiment_id])) == 1


def test_a_retry_after_a_half_logged_attempt_leaves_one_run(mlflow_uri):
    """An attempt that failed mid-way (or whose create request timed out on a busy server) is
    superseded by the retry of the same flow run: one visible run, the failed one deleted and tagged."""
    from tasks.tracking.content import RunContent
    from tasks.tracking.operations import log_evaluation

    client = mlflow.MlflowClient()
    exp = client.create_experiment("retried")
    failed = client.create_run(exp, run_name="r", tags={"prefect.flow_run_id": "fr-9"})
    client.set_terminated(failed.info.run_id, "FAILED")
    running = client.create_run(exp, run_name="r", tags={"prefect.flow_run_id": "fr-9"})
    content = RunContent(experiment="retried", run_name="r", metrics={"bce": 0.5}, tags={"prefect.flow_run_id": "fr-9"})
    run_id, _ = log_evaluation(content, mlflow_uri)
    assert [r.info.run_id for r in client.search_runs([exp])] == [run_id]
    for old in (failed, running):
        gone = client.get_run(old.info.run_id)
        assert gone.info.lifecycle_stage == "deleted" and gone.info.status == "FAILED"
        assert gone.data.tags["bce_eval.recovered"] == "superseded by a retry of the same flow run"


def test_uploads_refused_by_the_server_leave_no_finished_run_nor_ready_model(tmp_path, monkeypatch):
    """The files go several at a time: when the server's artifact store refuses them all (a file where
    its folder should be: every upload is answered 500), the run ends FAILED and the model it logged
    FAILED, never FINISHED or READY, and the error is the one TrackingError line."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from tasks.errors import TrackingError
    from tasks.tracking.content import RunContent
    from tasks.tracking.operations import log_evaluation

    (tmp_path / "artifacts").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the 500s at once, not after MLflow's backoff
    X = np.random.default_rng(3).normal(size=(200, 2))
    content = RunContent(
        experiment="uploads-refused",
        run_name="r",
        metrics={"bce": 0.5},
        params={"C": 1.0},
        tables={"bce_by_partition.json": {"partition": ["a", "b"], "bce": [0.4, 0.6]}},
        text_artifacts={"report.html": "<p/>"},
        model=LogisticRegression().fit(X, X[:, 0] > 0),
        model_input_example=X[:3],
        tags={"prefect.flow_run_id": "fr-refused"},
    )
    port = _free_port()
    server = _start_mlflow(port, tmp_path)
    try:
        uri = f"http://127.0.0.1:{port}"
        with pytest.raises(
            TrackingError,
            match=r"^could not log to MLflow at http://127\.0\.0\.1:\d+ \(API request to \S+/mlflow-artifacts/",
        ):
            log_evaluation(content, uri)
        client = mlflow.MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("uploads-refused").experiment_id
        assert [r.info.status for r in client.search_runs([experiment_id])] == ["FAILED"]
        assert {str(m.status) for m in client.search_logged_models([experiment_id])} <= {"FAILED"}
    finally:
        _stop(server)


def _eight_runs(env: dict[str, str], prefix: str):
    """Start 8 evaluations of the demo data at once; each must succeed. Returns the client and the runs."""
    data = str(REPO / "data" / "demo")
    args = ["evaluate", data, "--label", "label", "--features", "f1,f2,f3", "--run-name"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args, f"{prefix}{i}"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        assert "View at http" not in out + err  # no link to a temporary Prefect server that is gone at exit
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("bce-evaluation").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"{prefix}{i}" for i in range(8)]
    return client, runs


def test_eight_at_once_on_a_fresh_sqlite_store_with_temporary_servers(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", PREFECT_HOME=str(tmp_path / "ph"))
    _, runs = _eight_runs(env, "c")
    assert all(
        r.info.status == "FINISHED" and len([k for k in r.data.metrics if k.startswith("bce_by_partition/")]) == 6
        for r in runs
    )


HOSTILE = ["a b", "ünïcødé", "..x", "x" * 200, "North", "north", "%2Fslash", "semi;colon", "tab\tch"]


def test_hostile_partition_values(prefect_server, mlflow_uri, tmp_path):
    parts = {v: make_frame(60, i) for i, v in enumerate(HOSTILE)}
    root = tmp_path / "hostile"
    for value, df in parts.items():
        folder = root / f"region={value}"
        folder.mkdir(parents=True)
        df.write_parquet(folder / "part-0.parquet")
    ev = evaluate_flow(EvaluateSettings(data=str(root), label="label", features=["a", "b", "c"]))
    run = mlflow.MlflowClient().get_run(ev.run_id)
    keys = [k for k in run.data.metrics if k.startswith("bce_by_partition/")]
    assert len(keys) == len(HOSTILE) and all(ALLOWED_KEY.match(k) and len(k) <= 250 for k in keys)
    from urllib.parse import unquote

    assert sorted(ev.table.get_column("region").to_list()) == sorted(unquote(v) for v in HOSTILE)
    artifacts_root = Path(mlflow_uri.removeprefix("sqlite:///")).parent / "artifacts"
    written = [p for p in artifacts_root.rglob("*") if p.is_file()]
    assert written and all(str(p.resolve()).startswith(str(artifacts_root.resolve())) for p in written)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_random_malformed_input_is_a_result_or_one_clear_error(tmp_path_factory, data):
    """Random schemas, types, nulls, NaN/inf and layouts: a correct BCE or an InputError, nothing else."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from tasks.data.dataset import discover_dataset, group_files
    from tasks.data.training_data import collect_training_data
    from tasks.errors import InputError
    from tasks.metrics.reduce import reduce_chunk, summarize_records
    from tasks.models.scoring import make_scorer

    root = tmp_path_factory.mktemp("fuzz")
    n_parts = data.draw(st.integers(1, 3))
    label_kind = data.draw(st.sampled_from(["int", "float", "bool", "str", "bad_int"]))
    for i in range(n_parts):
        n = data.draw(st.integers(0, 12))
        vals = data.draw(
            st.lists(
                st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.none()), min_size=n, max_size=n
            )
        )
        ys = data.draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
        label = {
            "int": ys,
            "float": [float(v) for v in ys],
            "bool": [bool(v) for v in ys],
            "str": [str(v) for v in ys],
            "bad_int": [v * 2 for v in ys],
        }[label_kind]
        df = pl.DataFrame({"x": pl.Series(vals, dtype=pl.Float64), "y": label})
        if data.draw(st.booleans()):
            df = df.with_columns(pl.col("x").cast(pl.String))
        folder = root / f"k={i}"
        folder.mkdir()
        df.write_parquet(folder / "p.parquet")
    try:
        ds = discover_dataset(root, "y", ["x"])
        X, y = collect_training_data(ds)
        model = LogisticRegression().fit(X, y)
        records, hists = [], []
        for chunk in group_files(ds, 5):
            r, h = reduce_chunk(ds, make_scorer(model, ("x",)), chunk)
            records.append(r)
            hists.append(h)
        _, overall = summarize_records(records, hists, ["k"])
    except InputError as exc:
        msg = str(exc)
        assert "\n" not in msg and len(msg) < 600
        return
    assert overall["bce"] == pytest.approx(log_loss(y, model.predict_proba(X)[:, 1]), rel=1e-9)


def test_tracking_server_returning_errors(prefect_server, hive_data, tmp_path):
    """A server that answers every request with 503: bounded retries, then exit 4 and the results file."""
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def _fail(self):
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "maintenance"}')

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _fail

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_server,
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{server.server_address[1]}",
        }
        start = time.monotonic()
        proc = _cli(["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"], env)
        elapsed = time.monotonic() - start
    finally:
        server.shutdown()
    assert proc.returncode == 4, proc.stderr
    last = _last(proc)
    assert last.startswith("bce-eval: error: could not log to MLflow") and "results are saved in" in last
    assert Path(re.search(r"saved in (\S+\.json)", last).group(1)).exists()
    assert elapsed < 180  # bounded: MLflow's retries, then the task's 3 retries, then the error
    assert "Traceback" not in proc.stderr
