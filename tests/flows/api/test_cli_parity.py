"""The Python API gives the figures ``bce-eval evaluate`` gives on the same rows (the CLI against a real Prefect
server and MLflow store), and logs where ``log_to`` says."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from flows.api import evaluate
from tests.conftest import run_cli_in_process as run_cli


@pytest.fixture
def cli(prefect_server, mlflow_uri, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    return lambda args: run_cli(args, capsys)


def _write(root: Path) -> pd.DataFrame:
    rng = np.random.default_rng(17)
    frames = []
    for day in ("2026-01-01", "2026-01-02"):
        n = 1500
        a, b = rng.normal(size=n), rng.normal(size=n)
        df = pd.DataFrame(
            {
                "a": a,
                "b": b,
                "y": (rng.uniform(size=n) < 1 / (1 + np.exp(-(a - 0.5 * b)))).astype(int),
                "region": rng.choice(["eu", "us", "apac"], n),
                "age": rng.uniform(15, 80, n),
                "w": rng.exponential(1.0, n),
            }
        )
        (root / f"day={day}").mkdir(parents=True)
        pl.from_pandas(df).write_parquet(root / f"day={day}" / "part.parquet")
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _logged_table(run_id: str, path: str, tmp: Path) -> pd.DataFrame:
    local = mlflow.MlflowClient().download_artifacts(run_id, path, str(tmp))
    logged = json.loads(Path(local).read_text())
    return pd.DataFrame(logged["data"], columns=logged["columns"])


def _same(api: pl.DataFrame, cli: pd.DataFrame, key: str, figures: tuple[str, ...]) -> None:
    merged = cli.merge(api.to_pandas(), on=key, suffixes=("_cli", "_api"))
    assert len(merged) == len(cli) == api.height
    for f in figures:
        np.testing.assert_allclose(merged[f"{f}_api"], merged[f"{f}_cli"], rtol=1e-12, atol=0, err_msg=f)


FIGURES = ("n_rows", "bce", "bce_low", "bce_high", "brier", "accuracy", "normalized_entropy", "d2_log_loss", "roc_auc")


def test_the_api_and_the_cli_give_the_same_figures_fitted_and_xgboost(cli, mlflow_uri, tmp_path):
    import xgboost as xgb

    rows = _write(tmp_path / "data")
    data = str(tmp_path / "data")
    slicing = ["--slice", "region", "--slice", "age:30,60", "--weight-col", "w"]
    code, out, err = cli(["evaluate", data, "--label", "y", "--features", "a,b", *slicing])
    assert code == 0, err
    run_id = out.split("MLflow run ")[1].split()[0]
    api = evaluate(data, label="y", features=["a", "b"], slices=["region", "age:30,60"], weights="w")
    assert api.bce == pytest.approx(mlflow.MlflowClient().get_run(run_id).data.metrics["bce"], rel=1e-12)
    _same(api.table, _logged_table(run_id, "bce_by_partition.json", tmp_path / "p"), "day", FIGURES)
    _same(api.slices["region"], _logged_table(run_id, "slices/bce_by_region.json", tmp_path / "r"), "region", FIGURES)

    model = xgb.XGBClassifier(n_estimators=25, max_depth=3).fit(rows[["a", "b"]], rows["y"])
    with mlflow.start_run() as run:
        mlflow.xgboost.log_model(model, name="model", input_example=rows[["a", "b"]].head(3))
    uri = f"runs:/{run.info.run_id}/model"
    code, out, err = cli(["evaluate", data, "--label", "y", "--model-uri", uri, "--slice", "region"])
    assert code == 0, err
    run_id = out.split("MLflow run ")[1].split()[0]
    logged = _logged_table(run_id, "slices/bce_by_region.json", tmp_path / "x")
    for given in (uri, model):  # the same model by its URI and as the object in memory
        api = evaluate(data, label="y", model=given, slices=["region"])
        _same(api.slices["region"], logged, "region", FIGURES)


def test_log_to_a_tracking_uri_makes_a_run_and_active_logs_into_the_open_one(mlflow_uri, tmp_path):
    rows = _write(tmp_path / "data")
    result = evaluate(str(tmp_path / "data"), label="y", features=["a", "b"], slices=["region"], log_to=mlflow_uri)
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["bce"] == result.bce
    assert run.data.metrics["n_rows"] == len(rows) and "slice.region.region_eu.bce" in run.data.metrics
    with mlflow.start_run(description="my own notes") as mine:
        again = evaluate(rows, label="y", model=None, features=["a", "b"], log_to="active")
        assert again.run_id == mine.info.run_id
        assert client.get_run(mine.info.run_id).info.status == "RUNNING"  # left open for the notebook
    logged = client.get_run(mine.info.run_id)
    assert logged.data.metrics["bce"] == again.bce == pytest.approx(result.bce, rel=1e-12)  # one partition, not two
    assert logged.data.tags["mlflow.note.content"] == "my own notes"
    assert "report.html" in {a.path for a in client.list_artifacts(mine.info.run_id)}
