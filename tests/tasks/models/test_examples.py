"""tasks/models/examples.py without a server: the training frame it reads from a hive tree, one
logger per documented example, and the custom pyfunc example registered in a private SQLite store
(checked against its formula, computed here with numpy)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pytest

from tasks.models.examples import EXAMPLES, FEATURES, _loggers, _training_frame
from tasks.tracking.adapter import MlflowTracker


@pytest.fixture
def demo_tree(tmp_path: Path) -> Path:
    """A tiny tree in the demo's layout: ``region=<name>/part-0.parquet`` with f1, f2, f3 and label."""
    rng = np.random.default_rng(0)
    for i, region in enumerate(("north", "south", "east")):
        n = 40 + 10 * i
        X = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ np.array([1.5, -2.0, 0.75]) + 0.25)))).astype(np.int64)
        folder = tmp_path / "demo" / f"region={region}"
        folder.mkdir(parents=True)
        pl.DataFrame({"f1": X[:, 0], "f2": X[:, 1], "f3": X[:, 2], "label": y}).write_parquet(folder / "part-0.parquet")
    return tmp_path / "demo"


def test_the_training_frame_is_every_row_with_the_hive_region(demo_tree: Path):
    X, y = _training_frame(str(demo_tree) + "/", "label")
    reference = pads.dataset(demo_tree, format="parquet", partitioning="hive").to_table().to_pandas()
    assert list(X.columns) == [*FEATURES, "region"]
    got = X.assign(label=y).sort_values(["region", "f1"]).reset_index(drop=True)
    want = reference[[*FEATURES, "region", "label"]].sort_values(["region", "f1"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert sorted(set(X["region"])) == ["east", "north", "south"]


def test_each_documented_example_has_a_logger(demo_tree: Path):
    X, y = _training_frame(str(demo_tree), "label")
    assert set(_loggers(X, y)) == set(EXAMPLES)


def test_the_pyfunc_example_registers_and_predicts_its_formula(demo_tree: Path, mlflow_uri: str):
    X, y = _training_frame(str(demo_tree), "label")
    tracker = MlflowTracker(mlflow_uri)
    run_id, version = tracker.log_registered_model(
        "examples", "demo-pyfunc", _loggers(X, y)["demo-pyfunc"], "demo-pyfunc", "champion"
    )
    assert version == "1"
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_model_version_by_alias("demo-pyfunc", "champion").run_id == run_id
    model = mlflow.pyfunc.load_model("models:/demo-pyfunc@champion")
    assert model.metadata.get_input_schema().input_names() == FEATURES
    num = X[FEATURES]
    z = 1.5 * num["f1"].to_numpy() - 2.0 * num["f2"].to_numpy() + 0.75 * num["f3"].to_numpy() + 0.25
    np.testing.assert_allclose(np.asarray(model.predict(num)), 1 / (1 + np.exp(-z)), rtol=1e-12)


def test_a_folder_without_the_demo_data_is_one_line_naming_it_exit_2_and_nothing_logged(
    demo_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from tests.conftest import run_cli_in_process

    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "README.txt").write_text("not data")
    no_f3 = tmp_path / "no_f3" / "region=north"
    no_f3.mkdir(parents=True)
    pl.read_parquet(demo_tree / "region=north" / "part-0.parquet").drop("f3").write_parquet(no_f3 / "part-0.parquet")
    flat = tmp_path / "flat"  # the demo's columns, but no region=… folders
    flat.mkdir()
    pl.read_parquet(demo_tree / "region=south" / "part-0.parquet").write_parquet(flat / "part-0.parquet")
    remedy = (
        "; the examples train on the demo data's columns f1, f2, f3, label and region (its hive key): pass its "
        "folder (data/demo, written by `bce-eval demo`) with --data."
    )
    for folder, missing in (
        (empty, "no Parquet files (*.parquet) in this folder"),
        (no_f3.parent, "its Parquet files have no column 'f3'"),
        (flat, "its Parquet files have no column 'region'"),
    ):
        code, _, err = run_cli_in_process(["example-models", "--data", str(folder)], capsys)
        assert (code, err) == (2, [f"bce-eval: error: {folder}: {missing}{remedy}"])
    assert not store.exists()  # refused before MLflow was asked anything
