"""The `bce-eval` command as a user runs it: a subprocess, its exit code and its last line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest

from tests.conftest import REPO

#: real processes (the CLI, servers, a terminal or a browser): part of make test, not make test-fast
pytestmark = pytest.mark.system


def run_cli(args: list[str], env_extra: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture
def cli_env(prefect_server, mlflow_uri) -> dict[str, str]:
    return {"PREFECT_API_URL": prefect_server, "MLFLOW_TRACKING_URI": mlflow_uri}


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def test_evaluate_prints_summary(cli_env, hive_data):
    proc = run_cli(["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "overall BCE" in proc.stdout and "region=west" in proc.stdout
    run_id = proc.stdout.split("MLflow run ")[1].split()[0]
    mlflow.set_tracking_uri(cli_env["MLFLOW_TRACKING_URI"])
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert f"{run.data.metrics['bce']:.4f}" in proc.stdout


def _corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _with(df_path: Path, **exprs: pl.Expr) -> None:
    pl.read_parquet(df_path).with_columns(**exprs).write_parquet(df_path)


BAD_CASES = {
    "missing path": (lambda d: None, ["{d}/nope"], r"nope: no such file or directory"),
    "not parquet": (lambda d: (d / "notes.txt").write_text("hi"), ["{d}/notes.txt"], r"notes.txt: not a Parquet file"),
    "truncated file": (
        lambda d: _corrupt(d / "region=south" / "part-0.parquet"),
        ["{d}"],
        r"region=south/part-0.parquet: not a readable Parquet file",
    ),
    "missing feature": (lambda d: None, ["{d}", "--features", "a,zz"], r"no feature column 'zz'"),
    "missing label": (lambda d: None, ["{d}", "--label", "nolabel"], r"no label column 'nolabel'"),
    "missing partition": (lambda d: None, ["{d}", "--partition-by", "zone"], r"no partition column 'zone'"),
    "label not binary": (
        lambda d: _with(d / "region=east" / "part-0.parquet", label=pl.col("label") * 2),
        ["{d}"],
        r"region=east/part-0.parquet: label column 'label' has value 2",
    ),
    "null label": (
        lambda d: _with(
            d / "region=east" / "part-0.parquet", label=pl.when(pl.col("a") > 0).then(None).otherwise(pl.col("label"))
        ),
        ["{d}"],
        r"region=east/part-0.parquet: label column 'label' has \d+ null",
    ),
    "non-finite feature": (
        lambda d: _with(
            d / "region=west" / "part-0.parquet", b=pl.when(pl.col("a") > 0).then(float("inf")).otherwise(pl.col("b"))
        ),
        ["{d}"],
        r"region=west/part-0.parquet: feature column 'b' has \d+ null or non-finite",
    ),
    "non-numeric feature": (
        lambda d: [_with(p, c=pl.col("c").cast(pl.String)) for p in d.rglob("*.parquet")],
        ["{d}"],
        r"feature column 'c' has type (string|large_string)",
    ),
    "schemas disagree": (
        lambda d: _with(d / "region=west" / "part-0.parquet", a=pl.col("a").cast(pl.String)),
        ["{d}"],
        r"column 'a' is .* the files' schemas disagree",
    ),
    "single class": (
        lambda d: [_with(p, label=pl.lit(1, dtype=pl.Int64)) for p in d.rglob("*.parquet")],
        ["{d}"],
        r"single class",
    ),
    "no rows": (
        lambda d: [
            _with(p, a=pl.col("a")) or pl.read_parquet(p).head(0).write_parquet(p) for p in d.rglob("*.parquet")
        ],
        ["{d}"],
        r"has no rows",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_clear_last_line(case, cli_env, hive_data):
    setup, args, pattern = BAD_CASES[case]
    setup(hive_data)
    full = ["evaluate", *[a.format(d=hive_data) for a in args]]
    if "--label" not in full:
        full += ["--label", "label"]
    if "--features" not in full:
        full += ["--features", "a,b,c"]
    proc = run_cli(full, cli_env)
    assert proc.returncode == 2, proc.stderr
    last = _last_line(proc)
    assert last.startswith("bce-eval: error: "), proc.stderr
    import re

    assert re.search(pattern, last), last
    assert "Traceback" not in proc.stderr + proc.stdout
    mlflow.set_tracking_uri(cli_env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("bce-evaluation")
    finished = list(client.search_runs([exp.experiment_id])) if exp else []
    assert not [r for r in finished if r.info.status == "FINISHED"]


def test_cold_start_error_is_still_the_last_line(tmp_path, mlflow_uri):
    """With no Prefect server running, the temporary server's shutdown must not print after the error."""
    env = {"MLFLOW_TRACKING_URI": mlflow_uri, "PREFECT_HOME": str(tmp_path / "ph")}
    env_clean = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "evaluate", str(tmp_path / "missing"), "--label", "y", "--features", "x"],
        capture_output=True,
        text=True,
        env={**env_clean, **env},
        timeout=240,
    )
    assert proc.returncode == 2
    assert (
        _last_line(proc)
        == f"bce-eval: error: {tmp_path / 'missing'}: no such file or directory; pass a Parquet file or a folder of "
        "them."
    )
    assert "Stopping temporary server" not in proc.stderr


def test_every_option_of_every_subcommand_has_help_text():
    import argparse

    from flows.cli.parser import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in subs.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert missing == []
    assert all(choice.help for choice in subs._choices_actions)  # every subcommand, too


def _best_of(n: int, cmd: list[str], first_line: bool = False, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Best wall time of ``n`` starts of ``cmd`` (to its first stdout line, or to its end) and that output."""
    import time

    best, text = float("inf"), ""
    for _ in range(n):
        start = time.perf_counter()
        # a session of its own: killing it after the first line kills what it started too (the
        # temporary Prefect server, a model helper), which would otherwise outlive the test
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True, env=env
        )
        if first_line:
            text = proc.stdout.readline()
            took = time.perf_counter() - start
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            out, err = proc.communicate(timeout=120)
            took, text = time.perf_counter() - start, out + err
        proc.wait()
        best = min(best, took)
    return best, text


def test_the_first_line_and_a_path_typo_come_at_once_measured_against_an_empty_python_start():
    empty, _ = _best_of(5, [sys.executable, "-c", "pass"])
    cli = [sys.executable, "-m", "flows.cli", "evaluate"]
    typo, out = _best_of(3, [*cli, "data/dmeo", "--label", "label", "--features", "f1,f2,f3"])
    assert (
        out.strip().splitlines()[-1]
        == "bce-eval: error: data/dmeo: no such file or directory; pass a Parquet file or a folder of them."
    )
    first, line = _best_of(3, [*cli, "data/demo", "--label", "label", "--features", "f1,f2,f3"], first_line=True)
    assert line.startswith("bce-eval evaluate: checking data/demo")
    # a start that imports nothing heavy: a few empty interpreter starts, far below a second
    assert typo < 25 * empty and first < 25 * empty, (empty, typo, first)


def _session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (what ``bce-eval ui`` started, children included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_ui_answers_prints_no_warning_and_stops_everything_on_sigterm(tmp_path, request):
    import signal
    import urllib.request

    from tests.conftest import free_port

    # the least any MLflow UI server costs: importing MLflow's server app in a fresh process
    started = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", "import mlflow.server.fastapi_app"], check=True)
    app_import = time.perf_counter() - started
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "ui",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PREFECT_HOME": str(tmp_path)},
    )
    request.addfinalizer(
        lambda: proc.poll() is not None or proc.send_signal(signal.SIGTERM) or proc.wait(timeout=60)
    )  # a failed assertion leaves no server
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "ready at" in line:
            break
    assert (
        lines[-1].strip()
        == f"MLflow UI ready at http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning (Ctrl-C to stop)"
    ), lines
    ready = time.perf_counter() - started
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).status == 200
    # two imports of MLflow (its CLI, then the server's worker) and a store's migration: within 4x one
    # import, timed before and after (the other test process may load the machine meanwhile)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", "import mlflow.server.fastapi_app"], check=True)
    app_import = (app_import + time.perf_counter() - started) / 2
    assert ready <= 4.0 * app_import, (ready, app_import)
    # the page sets the model-training view for a browser that has none
    response = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    page = response.read().decode()
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"  # MLflow's security middleware still serves the page
    from flows.cli.ui_app import default_view_script

    assert (
        default_view_script() in page
        and '"mlflow.workflowType_v1"' in default_view_script()
        and "static-files/static/js/main" in page
    )
    # the server's own process and its workers: children of bce-eval, in a session of their own
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(children) == 1 and _session_members(children[0])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read().strip() == ""  # no warning, no "Child process died"
    assert _session_members(children[0]) == []  # nothing it started is left
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has stopped: a container's first process may not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(
    sys.platform != "linux", reason="the death signal is Linux's (prctl); /proc tells whether the server runs"
)
def test_temporary_server_stops_when_the_cli_is_killed_outright(tmp_path):
    # a scheduler's SIGKILL (or the OOM killer) gives the CLI no chance to stop what it started
    script = """
import os, signal
from flows.cli.prefect_server import PrefectServer
server = PrefectServer().__enter__()
server.wait()
print(server._process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**env, "PREFECT_HOME": str(tmp_path)},
        timeout=240,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    server = int(out.stdout.split()[0])  # it answered before the CLI died
    deadline = time.monotonic() + 30
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _running(server):
        os.kill(server, signal.SIGKILL)
        pytest.fail(f"the temporary server {server} outlived its CLI")


_GC_PROBE = """
import atexit, gc, sys, time
from flows.cli import main as cli
from flows.cli import process as runtime
full, after_imports = [], ["0", "None"]
gc.callbacks.append(lambda phase, info: full.append(1) if phase == "stop" and info["generation"] == 2 else None)
resume = runtime.resume_collection
def recorded_resume():  # what the imports left: frozen, and collection on again
    resume()
    after_imports[:] = [str(gc.get_freeze_count()), str(gc.isenabled())]
runtime.resume_collection = recorded_resume
def last_words():  # registered before the CLI's own exit handlers: runs after them, just before the interpreter ends
    print("EXITING", len(full), *after_imports, flush=True)
atexit.register(last_words)
mode, sys.argv = sys.argv[1], ["bce-eval", *sys.argv[2:]]
cli.run() if mode == "run" else sys.exit(cli.main())
"""


def _exit_after_last_words(mode: str, args: list[str], env: dict[str, str]) -> tuple[float, list[str]]:
    """Seconds from the CLI's last exit handler to the end of its process, and what it said then."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _GC_PROBE, mode, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
    )
    words: list[str] = []
    for line in proc.stdout:
        if line.startswith("EXITING"):
            said = time.perf_counter()
            words = line.split()[1:]
    proc.wait(timeout=240)
    assert proc.returncode == 0 and words, (proc.returncode, words)
    return time.perf_counter() - said, words


def test_the_cli_process_collects_no_garbage_while_importing_and_does_not_walk_its_heap_at_exit(cli_env, hive_data):
    args = ["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"]
    # the console script (flows.cli.main:run) against main() called as a library would be: same command, same machine,
    # in turn
    paused, (full, frozen, enabled) = _exit_after_last_words("run", args, cli_env)
    plain, (plain_full, plain_frozen, plain_enabled) = _exit_after_last_words("main", args, cli_env)
    # once the imports are done, the libraries' objects are frozen and collection is on again (a long
    # run still collects its garbage); main() as a library changes neither
    assert int(frozen) > 100_000 and enabled == "True", (frozen, enabled)
    assert (plain_frozen, plain_enabled) == ("0", "None")
    assert int(full) < int(plain_full), (full, plain_full)  # fewer walks of the whole heap
    # the interpreter's final collections no longer walk hundreds of thousands of objects (1.3 s measured)
    assert paused < 0.5 * plain, (paused, plain)


def test_a_panic_in_polars_is_one_internal_error_line_and_logs_nothing(
    prefect_server, mlflow_uri, tmp_path, monkeypatch, capsys
):
    # A Rust panic (pyo3's PanicException) derives from BaseException, not Exception. The one
    # this project met: Polars' JSON writer on a binary column, reached here by letting the
    # results file go through Polars whatever its columns (a partition key read as bytes).
    import tasks.metrics.cache
    from tests.conftest import make_frame, run_cli_in_process

    for region in ("north", "south"):
        frame = make_frame(50, len(region)).with_columns(region=pl.lit(region.encode(), pl.Binary))
        frame.write_parquet(tmp_path / f"{region}.parquet")
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    monkeypatch.setattr(tasks.metrics.cache, "_plain_json", lambda table: True)
    code, out, err = run_cli_in_process(
        [
            "evaluate",
            str(tmp_path),
            "--label",
            "label",
            "--features",
            "a,b,c",
            "--partition-by",
            "region",
            "--experiment",
            "panic",
        ],
        capsys,
    )
    assert code == 1, err
    assert err[-1].startswith(
        "bce-eval: internal error: PanicException: not yet implemented: Writing BinaryView to JSON"
    ), err[-1]
    assert "Traceback" not in out + "\n".join(err)
    # the results are saved before the MLflow run is made: no half-written run
    assert (
        mlflow.MlflowClient(mlflow_uri).get_experiment_by_name("panic") is None
        or not mlflow.search_runs(experiment_names=["panic"]).shape[0]
    )


# --- what the terminal shows: progress and the summary, Prefect's own lines only with --verbose ----


def test_the_console_shows_progress_not_prefects_task_run_lines_unless_verbose(cli_env, hive_data):
    args = ["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"]
    quiet = run_cli(args, cli_env)
    assert quiet.returncode == 0, quiet.stderr
    shown = quiet.stdout + quiet.stderr
    assert "Task run" not in shown and "Finished in state" not in shown and "Beginning flow run" not in shown, shown
    for progress in (
        "listing the Parquet files under",
        "found 4 file(s), 750 rows",
        "fitting LogisticRegression on 750 rows",
        "drawing the plots and the report",
        "logging the run to MLflow",
    ):
        assert progress in shown, (progress, shown)
    verbose = run_cli(["--verbose", *args], cli_env)
    assert verbose.returncode == 0, verbose.stderr
    told = verbose.stdout + verbose.stderr
    assert "Task run 'fit-model-" in told and "Finished in state Completed()" in told, told
    assert len(told.splitlines()) > len(shown.splitlines()) + 10  # a line per task run, and the flow run's


def _summary_run_lines(out: str, run_id: str, experiment: str, mlflow_uri: str) -> tuple[list[str], list[str]]:
    """The summary's lines naming the run and how to open it, and the same built from MLflow's own records."""
    from tasks.tracking.access import ui_command

    experiment_id = mlflow.MlflowClient(mlflow_uri).get_run(run_id).info.experiment_id
    assert mlflow.MlflowClient(mlflow_uri).get_experiment(experiment_id).name == experiment
    expected = [
        f"  MLflow run {run_id} in experiment '{experiment}' (id {experiment_id}) at {mlflow_uri}",
        f"  open it with: {ui_command(mlflow_uri)}",
    ]
    return [line for line in out.splitlines() if line.startswith(("  MLflow run", "  open it"))], expected


def test_compare_and_circles_summaries_name_the_experiment_and_how_to_open_it(
    prefect_server, mlflow_uri, hive_data, tmp_path, monkeypatch, capsys
):
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    import flows.circles
    from tests.conftest import run_cli_in_process

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    frame = pl.read_parquet(hive_data / "region=north" / "part-0.parquet").to_pandas()
    X = frame[["a", "b", "c"]]
    for name, C in (("cmp-champion", 1.0), ("cmp-challenger", 0.01)):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                LogisticRegression(C=C).fit(X, frame["label"]),
                name="model",
                signature=infer_signature(X.head(20)),
                registered_model_name=name,
            )
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
    code, out, err = run_cli_in_process(
        [
            "compare",
            str(hive_data),
            "--label",
            "label",
            "--champion",
            "models:/cmp-champion@champion",
            "--challenger",
            "models:/cmp-challenger@champion",
            "--experiment",
            "cmp-exp",
        ],
        capsys,
    )
    assert code == 0, err
    (run,) = mlflow.search_runs(experiment_names=["cmp-exp"], output_format="list")
    found, expected = _summary_run_lines(out, run.info.run_id, "cmp-exp", mlflow_uri)
    assert found == expected, out

    monkeypatch.setattr(flows.circles, "DATA", tmp_path)  # its Parquet split under tmp_path, not the repo's data/
    code, out, err = run_cli_in_process(["circles", "--epochs", "3", "--experiment", "circles-exp"], capsys)
    assert code == 0, err
    (run,) = mlflow.search_runs(experiment_names=["circles-exp"], output_format="list")
    found, expected = _summary_run_lines(out, run.info.run_id, "circles-exp", mlflow_uri)
    assert found == expected, out
    m = mlflow.MlflowClient(mlflow_uri).get_run(run.info.run_id).data.metrics
    first = out.splitlines()[1]  # after the first line (what starts), the seed's line, from the run's own figures
    assert (
        first == f"Train: {m['final_train_accuracy']:.3f}, Test: {m['final_val_accuracy']:.3f} (training "
        f"{m['training_seconds']:.2f} s)"
    ), first


def test_the_summary_of_a_run_on_a_tracking_server_says_to_open_its_url_in_a_browser():
    from tasks.review.results import Evaluation
    from tasks.review.summary import format_summary
    from tasks.tracking.access import ui_command, ui_hint

    server = "http://alice:s3cret@mlflow.example:5000/"
    view = "http://mlflow.example:5000/#/experiments?workflowType=machine_learning"
    assert ui_command(server) == view  # what prefect_artifacts and demo print: the URL itself, without the password
    assert ui_hint(server) == f"open it in a browser: {view}"
    overall = {
        "n_rows": 10,
        "n_partitions": 1,
        "bce": 0.5,
        "bce_se": 0.01,
        "accuracy": 0.7,
        "roc_auc": 0.8,
        "brier": 0.2,
    }
    ev = Evaluation(
        table=pl.DataFrame(), overall=overall, partition_by=(), run_id="abc", experiment_id="3", tracking_uri=server
    )
    lines = format_summary(ev, "hive", 5, ui_command(server), "exp").splitlines()
    assert lines[-2:] == [
        "  MLflow run abc in experiment 'exp' (id 3) at http://mlflow.example:5000/",
        f"  open it in a browser: {view}",
    ]
    local = f"sqlite:///{Path('/tmp/x/mlflow.db')}"
    assert ui_hint(local) == f"open it with: {ui_command(local)}" and ui_command(local).endswith(
        f"ui --backend-store-uri {local}"
    )


# --- model URIs: a malformed one refused at once, a missing one said once ------------------------

URI_TYPOS = {
    # (command line after the data, the model URI, what the line says)
    "evaluate model:/": (
        ["evaluate", "data/demo", "--label", "label", "--model-uri", "model:/nope@champion"],
        "--model-uri model:/nope@champion: it must start with models:/ (not model:/)",
    ),
    "evaluate runs:/ without a run": (
        ["evaluate", "data/demo", "--label", "label", "--model-uri", "runs:/"],
        "--model-uri runs:/: not a runs:/ URI MLflow reads; write runs:/<run_id>/<artifact path>",
    ),
    "compare models:/ with three parts": (
        [
            "compare",
            "data/demo",
            "--label",
            "label",
            "--champion",
            "models:/churn@champion",
            "--challenger",
            "models:/churn/7/x",
        ],
        "--challenger models:/churn/7/x: not a models:/ URI MLflow reads; write models:/<name>/<version>, "
        "models:/<name>@<alias>",
    ),
    "serve unknown scheme": (
        ["serve", "data/demo", "--label", "label", "--cron", "0 2 * * *", "--model-uri", "mdl:/churn@champion"],
        "--model-uri mdl:/churn@champion: MLflow loads no model from 'mdl:' URIs",
    ),
}


@pytest.mark.parametrize("case", list(URI_TYPOS))
def test_a_malformed_model_uri_is_refused_at_once_without_mlflow_or_the_server(case, tmp_path):
    args, said = URI_TYPOS[case]
    env = {
        **{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
        "PREFECT_HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}",
    }
    empty, _ = _best_of(5, [sys.executable, "-c", "pass"])
    took, out = _best_of(3, [sys.executable, "-m", "flows.cli", *args], env=env)
    lines = out.strip().splitlines()
    assert lines[-1].startswith(f"bce-eval: error: {said}"), out
    assert (
        len(lines) == 2 and "Traceback" not in out
    )  # what starts, then the error: no Prefect line, no MLflow scheme list
    # no MLflow, no Prefect, no waiting for the server: a few empty interpreter starts (1 s measured at most on a busy
    # machine)
    assert took < 25 * empty, (took, empty)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 2
    assert not (tmp_path / "m.db").exists()  # MLflow was never asked


def test_the_forms_mlflow_loads_a_model_from_pass_the_early_check():
    from flows.cli.preflight import check_model_uri

    for uri in (
        "models:/churn@champion",
        "models:/churn/3",
        "models:/churn/Production",
        "models:/m-0a1b2c3d",
        "runs:/0123abcd/model",
        "runs:/0123abcd/sub/model",
        "/srv/models/churn",
        "./model",
        "file:///srv/m",
        "s3://bucket/m",
        "gs://bucket/m",
        "wasbs://c@acct.blob.core.windows.net/m",
        "hdfs://nn/m",
        "dbfs:/models/m",
        "mlflow-artifacts:/1/abc/artifacts/model",
        "https://host/m",
        "http://host/m",
    ):
        check_model_uri(uri, "--model-uri")  # refusing any of these would refuse a model MLflow loads


def test_a_missing_model_is_one_line_printed_once(cli_env, hive_data, prefect_home):
    import uuid

    name = f"nope-{uuid.uuid4().hex[:8]}"
    proc = run_cli(["evaluate", str(hive_data), "--label", "label", "--model-uri", f"models:/{name}@champion"], cli_env)
    assert proc.returncode == 2, proc.stderr
    said = f"--model-uri models:/{name}@champion: cannot resolve it in the registry"
    assert _last_line(proc).startswith(f"bce-eval: error: {said}"), proc.stderr
    shown = proc.stdout + proc.stderr
    assert shown.count(said) == 1, shown  # no Prefect line echoing it
    assert "ERROR" not in shown and "Task run" not in shown and "Traceback" not in shown, shown
    # Prefect's own account of the failed task run stays in the debug log
    log = (prefect_home / "bce-eval-debug.log").read_text()
    assert f"Finished in state Failed('Task run encountered an exception InputError: {said}" in log


# --- --features with a model whose signature takes text ------------------------------------------


def _register_pipeline(hive_data: Path, name: str):
    """A Pipeline one-hot encoding the hive key ``region`` beside a, b, c (its signature: region is a string)."""
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pl.scan_parquet(f"{hive_data}/**/*.parquet", hive_partitioning=True).collect().to_pandas()
    X = frame[["a", "b", "c", "region"]]
    encode = ColumnTransformer(
        [("region", OneHotEncoder(handle_unknown="ignore"), ["region"])], remainder="passthrough"
    )
    model = make_pipeline(encode, LogisticRegression()).fit(X, frame["label"])
    signature = infer_signature(X.head(20))
    assert signature.inputs.input_dict()["region"].type.name == "string"
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", signature=signature, registered_model_name=name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
    return model, X, frame["label"].to_numpy()


def test_features_naming_a_text_column_the_models_signature_takes_are_accepted(
    prefect_server, mlflow_uri, hive_data, monkeypatch, capsys
):
    from sklearn.metrics import log_loss

    from tests.conftest import run_cli_in_process

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    model, X, y = _register_pipeline(hive_data, "pipe")
    code, out, err = run_cli_in_process(
        [
            "evaluate",
            str(hive_data),
            "--label",
            "label",
            "--features",
            "a,b,c,region",
            "--model-uri",
            "models:/pipe@champion",
            "--experiment",
            "pipe-exp",
        ],
        capsys,
    )
    assert code == 0, err
    (run,) = mlflow.search_runs(experiment_names=["pipe-exp"], output_format="list")
    assert run.data.metrics["bce"] == pytest.approx(log_loss(y, model.predict_proba(X)[:, 1]), rel=1e-9)
    # a feature column that does not exist is still refused before the flow runs
    code, out, err = run_cli_in_process(
        [
            "evaluate",
            str(hive_data),
            "--label",
            "label",
            "--features",
            "a,zz,region",
            "--model-uri",
            "models:/pipe@champion",
        ],
        capsys,
    )
    assert code == 2, err
    assert re.search(r"bce-eval: error: .*part-0\.parquet: no feature column 'zz'; columns are \[", err[-1]), err[-1]
    assert not [line for line in err if "Flow run" in line], err
