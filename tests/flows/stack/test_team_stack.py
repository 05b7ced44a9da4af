"""The team stack as ``bce-eval stack up`` starts it, every part a real process on 127.0.0.1:
PostgreSQL 15 (Debian's) holding the MLflow and Prefect servers' databases, moto's S3 server holding
the data and MLflow's artifacts, MLflow's tracking server with its basic-auth app, Prefect's server
with a process work pool, the deployments of ``prefect.yaml`` and a worker, and a Dask scheduler
with two worker processes. One stack per session (``team_stack`` in conftest); the last test stops
and restarts it with ``make stack-down`` / ``make stack``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from flows.evaluate import PASS_STARTED
from tests.conftest import REPO, free_port, make_frame, write_hive

#: real processes (the CLI, servers, a terminal or a browser): part of make test, not make test-fast
pytestmark = pytest.mark.system


@pytest.fixture
def stack_env(team_stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment as a user's after ``set -a; . .stack/env; set +a``."""
    env = team_stack.client_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def _upload(local: Path, url: str) -> None:
    fs = _fs()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{url}/{path.relative_to(local).as_posix()}")


def _demo_reference() -> float:
    """The BCE of scikit-learn's LogisticRegression fitted on the whole demo data (what evaluate fits)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    demo = pl.read_parquet(REPO / "data" / "demo", hive_partitioning=True)
    X, y = demo.select("f1", "f2", "f3").to_numpy(), demo.get_column("label").to_numpy()
    return log_loss(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1])


def _client(stack_env: dict[str, str]):
    import mlflow

    return mlflow.MlflowClient(stack_env["MLFLOW_TRACKING_URI"])


def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_every_server_listens_on_loopback_only(team_stack):
    ports = {getattr(team_stack.ports, name) for name in ("postgres", "s3", "mlflow", "prefect", "dask")}
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                address, port = local.rsplit(":", 1)
                listening.setdefault(int(port, 16), set()).add(address)
    for port in ports:
        assert listening.get(port) == {"0100007F"}, (port, listening.get(port))  # 127.0.0.1, nothing else


def test_eight_evaluations_at_once_on_mlflow_with_postgres_s3_and_basic_auth(team_stack, stack_env, tmp_path):
    env = {**os.environ, **stack_env, "BCE_EVAL_CACHE": str(tmp_path / "cache")}
    names = [f"concurrent-{i}" for i in range(8)]

    def evaluate(name: str) -> subprocess.CompletedProcess:
        return _cli(
            [
                "evaluate",
                str(REPO / "data" / "demo"),
                "--label",
                "label",
                "--features",
                "f1,f2,f3",
                "--run-name",
                name,
                "--no-cache",
                "--experiment",
                "stack-concurrent",
            ],
            env,
            tmp_path,
            timeout=900,
        )

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(evaluate, names))
    print(f"eight evaluations at once: {time.monotonic() - started:.1f} s")
    assert [p.returncode for p in done] == [0] * 8, [p.stderr[-500:] for p in done if p.returncode]

    expected = _demo_reference()
    client = _client(stack_env)
    runs = client.search_runs([client.get_experiment_by_name("stack-concurrent").experiment_id], max_results=100)
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == sorted(names)  # eight whole runs, none lost, none doubled
    stored = _fs().find("bce-eval/mlflow")
    password = stack_env["MLFLOW_TRACKING_PASSWORD"]
    for run in by_name.values():
        assert run.info.status == "FINISHED"
        assert run.data.metrics["bce"] == pytest.approx(expected, rel=1e-6)
        assert {"bce_by_partition/region_north", "accuracy", "roc_auc"} <= set(run.data.metrics)
        # the table and the plots are in the bucket, under the run's artifact location
        assert any(run.info.run_id in key and key.endswith("bce_by_partition.json") for key in stored)
        assert sum(run.info.run_id in key and key.endswith(".png") for key in stored) >= 3
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert password not in recorded and stack_env["AWS_SECRET_ACCESS_KEY"] not in recorded
    assert all(password not in p.stdout + p.stderr for p in done)


def test_a_wrong_password_is_one_line_before_any_work_and_is_never_shown(team_stack, stack_env, tmp_path):
    wrong = "wr0ng-pa55word-c4fe"
    env = {**os.environ, **stack_env, "MLFLOW_TRACKING_PASSWORD": wrong, "BCE_EVAL_CACHE": str(tmp_path / "cache")}
    done = _cli(
        [
            "evaluate",
            str(REPO / "data" / "demo"),
            "--label",
            "label",
            "--features",
            "f1,f2,f3",
            "--experiment",
            "stack-auth",
        ],
        env,
        tmp_path,
    )
    assert done.returncode == 2, done.stderr
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("bce-eval: error: the MLflow server at ") and "refused user 'bce-eval' (401" in last
    assert "MLFLOW_TRACKING_PASSWORD" in last
    assert "Traceback" not in done.stderr
    assert PASS_STARTED not in done.stdout + done.stderr  # refused before the pass
    for text in (done.stdout, done.stderr, *(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))):
        assert wrong not in text and stack_env["MLFLOW_TRACKING_PASSWORD"] not in text
    assert _client(stack_env).get_experiment_by_name("stack-auth") is None  # nothing was logged


def test_a_dask_cluster_of_processes_reads_its_own_partitions_from_the_bucket(
    team_stack, stack_env, tmp_path, prefect_server, mlflow_uri
):
    from distributed import Client

    from flows.evaluate import evaluate_flow, with_dask
    from flows.settings import EvaluateSettings

    hive = write_hive(
        tmp_path / "hive",
        {"north": make_frame(300, 1), "south": make_frame(200, 2, shift=0.5), "east": make_frame(150, 3, noise=0.3)},
    )
    url = "s3://bce-eval/tests/cluster"
    _upload(hive, url)
    fitted = evaluate_flow(EvaluateSettings(data=url, label="label", features=["a", "b", "c"], cache=False))
    settings = EvaluateSettings(
        data=url, label="label", model_uri=f"runs:/{fitted.run_id}/model", cache=False, chunk_rows=250
    )
    local = evaluate_flow(settings)
    on_cluster = settings.model_copy(update={"dask": team_stack.dask_address})
    with Client(team_stack.dask_address) as client:
        before = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
    remote = with_dask(on_cluster)(on_cluster)
    assert remote.overall["n_rows"] == local.overall["n_rows"] == 650
    for key in ("bce", "accuracy", "brier", "roc_auc"):
        assert remote.overall[key] == pytest.approx(local.overall[key], rel=1e-12, abs=1e-15)
    by_partition = lambda ev: {r["partition"]: r["bce"] for r in ev.table.iter_rows(named=True)}  # noqa: E731
    for key, value in by_partition(local).items():
        assert by_partition(remote)[key] == pytest.approx(value, rel=1e-12)
    # an independent figure: scikit-learn on the same rows with the same model's probabilities
    import mlflow.sklearn
    from sklearn.metrics import log_loss

    frame = pl.read_parquet(hive, hive_partitioning=True)
    model = mlflow.sklearn.load_model(f"runs:/{fitted.run_id}/model")
    p = model.predict_proba(frame.select("a", "b", "c").to_numpy())[:, 1]
    assert remote.overall["bce"] == pytest.approx(log_loss(frame["label"].to_numpy(), p), rel=1e-9)
    with Client(team_stack.dask_address) as client:
        # the chunks ran in the worker processes (three chunks over two workers)
        after = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
    assert after - before >= 3


def test_the_readme_command_on_the_stack_reads_the_bucket_on_the_dask_cluster(team_stack, stack_env, tmp_path):
    from tests.test_readme_commands import ON_STACK

    (command,) = ON_STACK
    # as written, but with this session's Dask port (the stack's default is 8786)
    args = command.replace("tcp://127.0.0.1:8786", team_stack.dask_address).split()[1:]
    env = {**os.environ, **stack_env, "BCE_EVAL_CACHE": str(tmp_path / "cache")}
    from distributed import Client

    def executed() -> int:
        # a client per count, closed: one left open keeps reconnecting after the stack stops
        with Client(team_stack.dask_address) as client:
            return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())

    before = executed()
    done = _cli(args, env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert executed() > before  # the chunks ran in the cluster's worker processes
    run_id = done.stdout.split("MLflow run ")[1].split()[0]
    run = _client(stack_env).get_run(run_id)
    assert run.data.metrics["bce"] == pytest.approx(_demo_reference(), rel=1e-6)
    assert run.data.params["data_path"] == "s3://bce-eval/demo" and run.data.metrics["n_rows"] == 6540


def _run_deployment(api: str, name: str, timeout: float = 300) -> dict:
    deployment = httpx.get(f"{api}/deployments/name/bce-evaluate/{name}").json()
    run = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={}).json()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run['id']}").json()
        if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {run['id']} of {name} still {run['state']['type']}")


def test_a_nightly_deployment_runs_on_the_worker_before_and_after_a_postgres_restart(team_stack, stack_env):
    from flows.stack.control import restart_postgres

    api, client = team_stack.prefect_api, _client(stack_env)
    expected = _demo_reference()
    flow_runs = []
    for night in (1, 2):
        started = time.monotonic()
        run = _run_deployment(api, "nightly-demo")  # as the schedule would: through the API, run by the worker
        print(f"night {night}: flow run {run['state']['type']} in {time.monotonic() - started:.1f} s")
        assert run["state"]["type"] == "COMPLETED", run["state"]
        flow_runs.append(run)
        if night == 1:
            started = time.monotonic()
            restart_postgres(team_stack)  # between the two nights; nothing else is touched
            print(f"PostgreSQL restarted in {time.monotonic() - started:.1f} s")
    experiment = client.get_experiment_by_name("bce-nightly")
    for run in flow_runs:
        found = client.search_runs([experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{run['id']}'")
        assert len(found) == 1 and found[0].info.status == "FINISHED"
        mlflow_run = found[0]
        assert mlflow_run.data.metrics["bce"] == pytest.approx(expected, rel=1e-6)
        assert mlflow_run.data.tags["prefect.deployment_id"] == run["deployment_id"]
        # the flow run's Prefect artifacts are on the server and link back to the MLflow run
        artifacts = httpx.post(
            f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
        ).json()
        assert {a["type"] for a in artifacts} >= {"markdown", "table"}, artifacts
        assert any(mlflow_run.info.run_id in str(a["data"]) for a in artifacts)


_REQUEST = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.1" (\d{3})')


def _served(access_log: Path) -> list[tuple[str, str, str]]:
    """(method, path, status) of each request the MLflow server answered, from its (uvicorn's) access
    log, once no line has come for half a second (a line is written as its response goes out)."""
    lines, last = [], None
    while lines != last:
        last, lines = lines, _REQUEST.findall(access_log.read_text(errors="replace"))
        time.sleep(0.5)
    return lines


def test_one_evaluation_is_logged_to_the_stack_in_few_requests_and_whole(
    team_stack, stack_env, prefect_server, monkeypatch
):
    """The log-to-mlflow step as the stack's MLflow server saw it: one upload per file it stored and at
    most ten other requests (one experiment lookup, two searches for an earlier attempt, the run, the
    model's entry, one log_batch, inputs, outputs, the model READY, the run FINISHED); before, 56 in
    all (43 besides the uploads): a read-back of the run per artifact call and of each metric's
    history for the model among them."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from flows.evaluate import evaluate_flow
    from flows.settings import EvaluateSettings
    from tasks.tracking.adapter import MlflowTracker

    access_log, window = team_stack.home / "logs" / "mlflow.log", {}
    log_evaluation = MlflowTracker.log_evaluation

    def observed(self: MlflowTracker, content):  # noqa: ANN001, ANN202 - the step, as the flow calls it
        window["from"], started = len(_served(access_log)), time.monotonic()
        try:
            return log_evaluation(self, content)
        finally:
            window["seconds"] = time.monotonic() - started

    monkeypatch.setattr(MlflowTracker, "log_evaluation", observed)
    settings = EvaluateSettings(
        data=str(REPO / "data" / "demo"),
        label="label",
        features=["f1", "f2", "f3"],
        experiment="stack-requests",
        cache=False,
    )
    ev = evaluate_flow(settings)
    requests = _served(access_log)[window["from"] :]  # nothing after the step asks MLflow anything

    client = _client(stack_env)
    run = client.get_run(ev.run_id)
    (model,) = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == run.info.run_id]
    prefix = f"bce-eval/mlflow/{run.info.experiment_id}/"
    stored = sorted(key[len(prefix) :] for key in _fs().find(prefix) if run.info.run_id in key or model.model_id in key)
    uploads = sorted(
        path.split("/api/2.0/mlflow-artifacts/artifacts/")[1].split(f"{run.info.experiment_id}/", 1)[1]
        for method, path, _ in requests
        if method == "PUT"
    )
    others = [f"{method} {path.split('?')[0]}" for method, path, _ in requests if method != "PUT"]
    print(f"log-to-mlflow: {len(requests)} requests ({len(uploads)} uploads) in {window['seconds']:.1f} s: {others}")
    assert uploads == stored  # each file the bucket holds for the run and its model, uploaded once, nothing else
    assert len([o for o in others if not o.endswith("/experiments/create")]) <= 10, (
        others
    )  # (a new experiment is made first)
    assert not [o for o in others if o.endswith(("/runs/get", "/metrics/get-history"))], others
    assert (
        others.count("POST /api/2.0/mlflow/runs/log-batch") == 1
        and others.count("GET /api/2.0/mlflow/experiments/get-by-name") == 1
    )
    refused = {(method, path.split("?")[0], status) for method, path, status in requests if status != "200"}
    assert refused <= {("GET", "/api/2.0/mlflow/experiments/get-by-name", "404")}  # the new experiment, not there yet

    # and the run is whole: metrics, the table, the plots, the report, the model (READY, its metrics linked)
    demo = pl.read_parquet(REPO / "data" / "demo", hive_partitioning=True)
    X, y = demo.select("f1", "f2", "f3").to_numpy(), demo.get_column("label").to_numpy()
    p = LogisticRegression().fit(X, y).predict_proba(X)[:, 1]
    assert run.info.status == "FINISHED" and model.status == "READY"
    assert run.data.metrics["bce"] == pytest.approx(log_loss(y, p), rel=1e-6)
    assert {m.key for m in model.metrics} >= {"bce", "accuracy", "roc_auc"}
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "bce_by_partition.json")).read_text())
    regions = demo.get_column("region").to_numpy()
    for row in (dict(zip(table["columns"], r)) for r in table["data"]):
        region = row["region"]
        assert run.data.metrics[f"bce_by_partition/region_{region}"] == pytest.approx(row["bce"], rel=1e-12)
        mask = regions == region
        assert row["bce"] == pytest.approx(log_loss(y[mask], p[mask], labels=[0, 1]), rel=1e-6)
    assert len(table["data"]) == 6
    assert sum(path.endswith(".png") for path in stored) >= 3 and any(path.endswith("/report.html") for path in stored)
    loaded = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    assert np.allclose(loaded.predict_proba(X)[:, 1], p, rtol=1e-9)


@pytest.fixture
def own_s3(tmp_path: Path):
    """A moto S3 server of this test's own (the test stops it): (start, stop, endpoint)."""
    port, procs = free_port(), []

    def start() -> None:
        log = open(tmp_path / f"moto-{len(procs)}.log", "wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("moto server did not start")

    def stop() -> None:
        procs[-1].send_signal(signal.SIGKILL)  # as a crash or a pulled cable: no goodbye
        procs[-1].wait()

    yield start, stop, f"http://127.0.0.1:{port}"
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_s3_server_stopped_mid_run_is_one_line_no_finished_run_and_a_rerun_completes(
    own_s3, prefect_server, mlflow_uri, tmp_path, monkeypatch
):
    import mlflow

    start, stop, endpoint = own_s3
    secret = "s3-s3cret-for-this-test"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "stopped-test",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "us-east-1",
        "PREFECT_API_URL": prefect_server,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "BCE_EVAL_CACHE": str(tmp_path / "cache"),
    }
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, env[key])
    rng = np.random.default_rng(7)
    hive = write_hive(
        tmp_path / "big", {f"{i:02d}": make_frame(100_000, int(rng.integers(1 << 30))) for i in range(24)}, key="day"
    )
    start()
    _fs().mkdir("nightly")
    _upload(hive, "s3://nightly/events")
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "evaluate",
        "s3://nightly/events",
        "--label",
        "label",
        "--features",
        "a,b,c",
        "--chunk-rows",
        "100000",
    ]

    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines, stopped_at = [], None
    for line in proc.stdout:
        lines.append(line)
        if stopped_at is None and PASS_STARTED in line:  # the pass of 24 chunks has started
            stop()
            stopped_at = time.monotonic() - started
    proc.wait(timeout=600)
    took = time.monotonic() - started
    print(
        f"S3 server stopped {stopped_at:.1f} s into the run; the command ended {took - stopped_at:.1f} s later "
        "with "
        f"{proc.returncode}"
    )
    out = "".join(lines)
    assert stopped_at is not None, out[-2000:]
    assert proc.returncode == 5, out[-2000:]
    last = [line for line in lines if line.strip()][-1]
    assert last.startswith("bce-eval: error: s3://nightly/events/day="), last
    assert "the object store did not answer" in last and "retries" in last and "rerun" in last
    assert "Traceback" not in out and secret not in out and endpoint not in last
    assert took - stopped_at < 180  # the retries are bounded
    finished = [
        r
        for r in mlflow.MlflowClient(mlflow_uri).search_runs(
            [e.experiment_id for e in mlflow.MlflowClient(mlflow_uri).search_experiments()]
        )
        if r.info.status == "FINISHED"
    ]
    assert finished == []

    # back (empty, as a new server would be) with the same objects: the same command completes
    start()
    _fs().mkdir("nightly")
    _upload(hive, "s3://nightly/events")
    rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    frame = pl.read_parquet(hive, hive_partitioning=True)
    X, y = frame.select("a", "b", "c").to_numpy(), frame["label"].to_numpy()
    run = mlflow.MlflowClient(mlflow_uri).search_runs([mlflow.get_experiment_by_name("bce-evaluation").experiment_id])[
        0
    ]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["bce"] == pytest.approx(
        log_loss(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1]), rel=1e-6
    )


def test_make_stack_down_and_up_again_keeps_every_run_and_object(team_stack, stack_env):
    """Last in this module: it restarts the session's stack through the Makefile, as a user does."""
    from flows.stack.control import SERVICES, is_running, load_stack, stack_status

    client = _client(stack_env)
    runs_before = {
        r.info.run_id
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], max_results=500)
    }
    objects_before = sorted(_fs().find("bce-eval"))
    assert runs_before and objects_before
    started = dict(load_stack(team_stack.home).processes)
    env = {**os.environ, "BCE_EVAL_STACK_HOME": str(team_stack.home)}
    # as the README says: `make stack-down`, `make stack` (the venv and PostgreSQL are in place already)
    down = subprocess.run(["make", "stack-down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    for name, record in started.items():  # exactly what it started, found by process id, has stopped
        assert not is_running(record), name
    assert not any(stack_status(team_stack.home).values())
    started_at = time.monotonic()
    up = subprocess.run(["make", "stack"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    print(f"make stack (restart): {time.monotonic() - started_at:.1f} s")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "set -a; . " in up.stdout and stack_env["MLFLOW_TRACKING_PASSWORD"] not in up.stdout
    assert all(stack_status(team_stack.home)[name] for name in SERVICES)
    runs_after = {
        r.info.run_id
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], max_results=500)
    }
    assert runs_after == runs_before
    assert sorted(_fs().find("bce-eval")) == objects_before
    # a table logged before the restart reads back whole from the restored bucket
    import json

    run = client.search_runs(
        [client.get_experiment_by_name("stack-concurrent").experiment_id], "attributes.run_name = 'concurrent-0'"
    )[0]
    rows = json.loads(Path(client.download_artifacts(run.info.run_id, "bce_by_partition.json")).read_text())
    assert len(rows["data"]) == 6 and "bce" in rows["columns"]  # the demo's six regions
