"""The `bce-eval` command as a user runs it: a subprocess, its exit code and its last line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest




def run_cli(args: list[str], env_extra: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[1],
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
    "truncated file": (lambda d: _corrupt(d / "region=south" / "part-0.parquet"), ["{d}"], r"region=south/part-0.parquet: not a readable Parquet file"),
    "missing feature": (lambda d: None, ["{d}", "--features", "a,zz"], r"no feature column 'zz'"),
    "missing label": (lambda d: None, ["{d}", "--label", "nolabel"], r"no label column 'nolabel'"),
    "missing partition": (lambda d: None, ["{d}", "--partition-by", "zone"], r"no partition column 'zone'"),
    "label not binary": (lambda d: _with(d / "region=east" / "part-0.parquet", label=pl.col("label") * 2), ["{d}"], r"region=east/part-0.parquet: label column 'label' has value 2"),
    "null label": (lambda d: _with(d / "region=east" / "part-0.parquet", label=pl.when(pl.col("a") > 0).then(None).otherwise(pl.col("label"))), ["{d}"], r"region=east/part-0.parquet: label column 'label' has \d+ null"),
    "non-finite feature": (lambda d: _with(d / "region=west" / "part-0.parquet", b=pl.when(pl.col("a") > 0).then(float("inf")).otherwise(pl.col("b"))), ["{d}"], r"region=west/part-0.parquet: feature column 'b' has \d+ null or non-finite"),
    "non-numeric feature": (lambda d: [_with(p, c=pl.col("c").cast(pl.String)) for p in d.rglob("*.parquet")], ["{d}"], r"feature column 'c' has type (string|large_string)"),
    "schemas disagree": (lambda d: _with(d / "region=west" / "part-0.parquet", a=pl.col("a").cast(pl.String)), ["{d}"], r"column 'a' is .* the files' schemas disagree"),
    "single class": (lambda d: [_with(p, label=pl.lit(1, dtype=pl.Int64)) for p in d.rglob("*.parquet")], ["{d}"], r"single class"),
    "no rows": (lambda d: [_with(p, a=pl.col("a")) or pl.read_parquet(p).head(0).write_parquet(p) for p in d.rglob("*.parquet")], ["{d}"], r"has no rows"),
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
    finished = [r for r in client.search_runs([exp.experiment_id])] if exp else []
    assert not [r for r in finished if r.info.status == "FINISHED"]


def test_cold_start_error_is_still_the_last_line(tmp_path, mlflow_uri):
    """With no Prefect server running, the temporary server's shutdown must not print after the error."""
    env = {"MLFLOW_TRACKING_URI": mlflow_uri, "PREFECT_HOME": str(tmp_path / "ph")}
    env_clean = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "evaluate", str(tmp_path / "missing"), "--label", "y", "--features", "x"],
        capture_output=True, text=True, env={**env_clean, **env}, timeout=240,
    )
    assert proc.returncode == 2
    assert _last_line(proc) == f"bce-eval: error: {tmp_path / 'missing'}: no such file or directory; pass a Parquet file or a folder of them."
    assert "Stopping temporary server" not in proc.stderr
