"""Scale features: the exact streaming fit, and the same flow on a Dask cluster."""

from __future__ import annotations

import mlflow
import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

from flows.evaluate import evaluate_flow, with_dask
from flows.settings import EvaluateSettings
from tasks.data.dataset import discover_dataset
from tasks.errors import InputError
from tasks.models.fit_streaming import fit_logistic_streaming, loss_and_gradient


def test_streaming_fit_matches_sklearn(hive_data):
    df = pl.read_parquet(hive_data, hive_partitioning=True)
    X, y = df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy()
    ds = discover_dataset(hive_data, "label", ["a", "b", "c"])
    for C in (1.0, 0.05):
        # scikit-learn converged tightly: its default tol=1e-4 stops about 1e-4 short of the optimum
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X, y)
        got = fit_logistic_streaming(ds, C=C, chunk_rows=120)  # several chunks: bounded memory
        np.testing.assert_allclose(got.coef_, ref.coef_, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.intercept_, ref.intercept_, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_gradient_is_the_derivative_of_the_objective():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(50, 3)), (rng.random(50) < 0.4).astype(float)
    params = rng.normal(size=4)
    f, g = loss_and_gradient(params, [(X[:20], y[:20]), (X[20:], y[20:])], 0.7)
    h = 1e-6
    numeric = [
        (loss_and_gradient(params + h * e, [(X, y)], 0.7)[0] - loss_and_gradient(params - h * e, [(X, y)], 0.7)[0])
        / (2 * h)
        for e in np.eye(4)
    ]
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-6)
    z = X @ params[:3] + params[3]
    assert f == pytest.approx(0.7 * np.sum(np.log1p(np.exp(z)) - y * z) + 0.5 * params[:3] @ params[:3], rel=1e-12)


def test_streaming_fit_rejects_single_class(tmp_path):
    from tests.conftest import make_frame

    make_frame(30, 1).with_columns(label=pl.lit(0)).write_parquet(tmp_path / "one.parquet")
    with pytest.raises(InputError, match="single class"):
        fit_logistic_streaming(discover_dataset(tmp_path / "one.parquet", "label", ["a", "b", "c"]))


def test_streaming_fit_through_the_flow(prefect_server, mlflow_uri, hive_data):
    ev = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], fit="streaming"))
    model = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model")
    df = pl.read_parquet(hive_data, hive_partitioning=True)
    ref = LogisticRegression(tol=1e-10, max_iter=10_000).fit(
        df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy()
    )
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-5)


def test_dask_run_equals_local_run(prefect_server, mlflow_uri, hive_data):
    from distributed import LocalCluster

    # no cache: a cached local run would leave the Dask run nothing to compute
    base = EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], chunk_rows=150, cache=False)
    local = evaluate_flow(base)
    uri = f"runs:/{local.run_id}/model"
    local = evaluate_flow(base.model_copy(update={"features": [], "model_uri": uri}))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        settings = base.model_copy(update={"features": [], "model_uri": uri, "dask": cluster.scheduler_address})
        distributed = with_dask(settings)(settings)
    assert distributed.overall["n_rows"] == local.overall["n_rows"]
    for key in ("bce", "accuracy", "brier", "roc_auc"):
        assert distributed.overall[key] == pytest.approx(local.overall[key], rel=1e-12, abs=1e-15)
    a = local.table.sort("region")
    b = distributed.table.sort("region")
    assert a.get_column("region").to_list() == b.get_column("region").to_list()
    np.testing.assert_allclose(b.get_column("bce").to_numpy(), a.get_column("bce").to_numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        b.get_column("roc_auc").to_numpy(), a.get_column("roc_auc").to_numpy(), rtol=1e-12, atol=0
    )
