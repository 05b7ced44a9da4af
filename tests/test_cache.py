"""Incremental evaluation: cached partitions are reused, and the merge is exact."""

from __future__ import annotations

import mlflow
import numpy as np
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tests.conftest import make_frame, write_hive


def _settings(root, **kw):
    return EvaluateSettings(data=str(root), label="label", **kw)


def test_incremental_run_equals_full_recompute(prefect_server, mlflow_uri, hive_data):
    first = evaluate_flow(_settings(hive_data, features=["a", "b", "c"]))
    uri = f"runs:/{first.run_id}/model"
    assert first.overall["partitions_reused"] == 0 and first.overall["partitions_computed"] == 4
    # the logged model has the fitted coefficients, so its scores (and cache keys) are the same
    again = evaluate_flow(_settings(hive_data, model_uri=uri))
    assert again.overall["partitions_reused"] == 4 and again.overall["bce"] == first.overall["bce"]

    # a new partition arrives, and an old file is rewritten under the same name
    write_hive(hive_data, {"central": make_frame(120, 9)})
    make_frame(300, 99).write_parquet(hive_data / "region=north" / "part-0.parquet")
    inc = evaluate_flow(_settings(hive_data, model_uri=uri))
    assert inc.overall["partitions_reused"] == 3  # south, east, west
    assert inc.overall["partitions_computed"] == 2  # central (new), north (rewritten)
    full = evaluate_flow(_settings(hive_data, model_uri=uri, full=True))
    assert full.overall["partitions_reused"] == 0
    for key in ("bce", "accuracy", "brier", "bce_se", "roc_auc", "roc_auc_bound"):
        assert inc.overall[key] == pytest.approx(full.overall[key], rel=1e-12, abs=1e-15), key
    a, b = inc.table.sort("region"), full.table.sort("region")
    for col in ("n_rows", "bce", "accuracy", "brier", "roc_auc"):
        np.testing.assert_allclose(a.get_column(col).to_numpy().astype(float), b.get_column(col).to_numpy().astype(float), rtol=1e-12)
    run = mlflow.MlflowClient().get_run(inc.run_id)
    assert run.data.metrics["partitions_reused"] == 3 and run.data.metrics["partitions_computed"] == 2


def test_overall_auc_is_within_its_stated_bound(prefect_server, mlflow_uri, hive_data):
    from sklearn.metrics import roc_auc_score

    ev = evaluate_flow(_settings(hive_data, features=["a", "b", "c"]))
    model = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model")
    df = pl.read_parquet(hive_data, hive_partitioning=True)
    exact = roc_auc_score(df.get_column("label").to_numpy(), model.decision_function(df.select("a", "b", "c").to_numpy()))
    assert abs(ev.overall["roc_auc"] - exact) <= ev.overall["roc_auc_bound"] + 1e-12
    assert ev.overall["roc_auc_bound"] < 0.01
