"""bce-eval as an MLflow evaluator, through ``mlflow.models.evaluate`` itself, on a real (SQLite) tracking store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from flows.api import evaluate


def _rows(n: int = 2000, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(a - b)))).astype(int)
    return pd.DataFrame({"a": a, "b": b, "y": y, "region": rng.choice(["eu", "us"], n)})


def _logged(model, X: pd.DataFrame) -> str:
    return mlflow.sklearn.log_model(model, name="model", input_example=X.head(3)).model_uri


def test_the_entry_point_names_the_evaluator():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="mlflow.model_evaluator") if e.name == "bce-eval"]
    assert ep.load().__name__ == "BceEvaluator"


def test_beside_the_default_evaluator_bce_equals_its_log_loss_and_slices_equal_scikit_learn(mlflow_uri, tmp_path):
    rows = _rows()
    X, y = rows[["a", "b"]], rows["y"]
    model = LogisticRegression().fit(X, y)
    with mlflow.start_run() as run:
        uri = _logged(model, X)
        result = mlflow.models.evaluate(
            uri,
            rows[["a", "b", "y"]],
            targets="y",
            model_type="classifier",
            evaluators=["default", "bce-eval"],
            evaluator_config={"bce-eval": {"slices": ["a:-1,0,1"]}},
        )
    m = result.metrics
    assert m["bce_eval/bce"] == pytest.approx(m["log_loss"], rel=1e-12)  # no probability within ε of 0 or 1
    assert m["bce_eval/n_rows_clipped"] == 0 and m["bce_eval/log_loss_clipped"] == pytest.approx(m["log_loss"])
    assert abs(m["bce_eval/roc_auc"] - m["roc_auc"]) <= m["bce_eval/roc_auc_bound"] + 1e-12  # each its own key
    p = model.predict_proba(X)[:, 1]
    stored = mlflow.MlflowClient().get_run(run.info.run_id)
    assert stored.data.metrics["bce_eval/bce"] == m["bce_eval/bce"] and "log_loss" in stored.data.metrics
    table = result.artifacts["bce_eval_slices_bce_by_a_-1_0_1_"].content
    frame = pd.DataFrame(table)  # column → values, as the run's table holds them
    bins = pd.cut(rows["a"], [-np.inf, -1, 0, 1, np.inf], right=False)
    assert len(frame) == 4
    for got, (_, g) in zip(
        frame.sort_values("n_rows")["bce"], sorted(rows.groupby(bins, observed=True), key=lambda t: len(t[1]))
    ):
        assert got == pytest.approx(log_loss(g["y"], p[g.index], labels=[0, 1]), rel=1e-12)
    listed = {t["path"] for t in json.loads(stored.data.tags["mlflow.loggedArtifacts"])}
    assert {"bce_by_partition.json", "slices/bce_by_a_-1_0_1_.json"} <= listed
    report = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/report.html", dst_path=str(tmp_path)))
    assert "BCE by slice of a_-1_0_1_" in report.read_text()
    assert stored.info.status == "FINISHED"  # the run MLflow opened, ended by it, not by bce-eval


def test_alone_with_weights_and_a_slice_column_that_is_not_a_feature(mlflow_uri):
    rows = _rows(seed=9)
    rows["w"] = np.random.default_rng(1).exponential(1.0, len(rows))
    X, y = rows[["a", "b"]], rows["y"]
    model = LogisticRegression().fit(X, y)
    with mlflow.start_run():
        uri = _logged(model, X)
        m = mlflow.models.evaluate(
            uri,
            mlflow.data.from_polars(pl.from_pandas(rows), targets="y"),  # a Polars frame, as an mlflow.data dataset
            model_type="classifier",
            evaluators=["bce-eval"],
            evaluator_config={"bce-eval": {"slices": "region", "weights": "w"}},
        ).metrics
    p = model.predict_proba(X)[:, 1]
    assert m["bce_eval/bce"] == pytest.approx(log_loss(y, p, sample_weight=rows["w"]), rel=1e-12)
    for region, g in rows.groupby("region"):
        got = m[f"bce_eval/slice.region.region_{region}.bce"]
        assert got == pytest.approx(log_loss(g["y"], p[g.index], sample_weight=g["w"]), rel=1e-12)
    # the Python API on the same rows gives the same figures (and the API equals the CLI: test_cli_parity)
    api = evaluate(rows, label="y", model=model, slices=["region"], weights="w")
    assert api.bce == m["bce_eval/bce"]


def test_where_clipping_bites_it_says_so_and_stays_exact(mlflow_uri):
    rows = _rows(seed=2)
    rows["y"] = (rows["a"] > rows["b"]).astype(int)  # separable: a weakly regularised fit has logits of ±100s
    X, y = rows[["a", "b"]], rows["y"]
    model = LogisticRegression(C=1e6, max_iter=1000).fit(X, y)
    with mlflow.start_run():
        m = mlflow.models.evaluate(
            _logged(model, X),
            rows[["a", "b", "y"]],
            targets="y",
            model_type="classifier",
            evaluators=["default", "bce-eval"],
        ).metrics
    z = model.decision_function(X)
    exact = np.mean(np.logaddexp(0, z) - y * z)
    assert m["bce_eval/bce"] == pytest.approx(exact, rel=1e-12)
    p, eps = model.predict_proba(X)[:, 1], np.finfo(np.float64).eps  # scikit-learn's clip: [eps, 1 - eps]
    assert m["bce_eval/n_rows_clipped"] == np.count_nonzero((p < eps) | (p > 1 - eps))
    assert m["bce_eval/n_rows_clipped"] > 0 and m["bce_eval/log_loss_clipped"] == pytest.approx(m["log_loss"], rel=1e-9)


def test_an_xgboost_model_and_stored_predictions(mlflow_uri):
    import xgboost as xgb

    rows = _rows(seed=12)
    X, y = rows[["a", "b"]], rows["y"]
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    with mlflow.start_run():
        uri = mlflow.xgboost.log_model(model, name="model", input_example=X.head(3)).model_uri
        m = mlflow.models.evaluate(
            uri, rows[["a", "b", "y"]], targets="y", model_type="classifier", evaluators=["bce-eval"]
        ).metrics
    margin = model.get_booster().inplace_predict(X.to_numpy(), predict_type="margin").astype(np.float64)
    assert m["bce_eval/bce"] == pytest.approx(np.mean(np.logaddexp(0, margin) - y * margin), rel=1e-9)
    scored = rows.assign(p=model.predict_proba(X)[:, 1].astype(np.float64))  # float32 in XGBoost
    with mlflow.start_run():
        m = mlflow.models.evaluate(
            data=scored[["p", "y"]], targets="y", predictions="p", model_type="classifier", evaluators=["bce-eval"]
        ).metrics
    assert m["bce_eval/bce"] == pytest.approx(log_loss(y, scored["p"]), rel=1e-12)
    assert abs(m["bce_eval/roc_auc"] - roc_auc_score(y, scored["p"])) <= m["bce_eval/roc_auc_bound"] + 1e-12


def test_an_unknown_config_key_is_one_line(mlflow_uri):
    rows = _rows(200)
    with mlflow.start_run(), pytest.raises(ValueError, match=r"unknown key\(s\) \['slice'\]"):
        mlflow.models.evaluate(
            data=rows.assign(p=0.5)[["p", "y"]],
            targets="y",
            predictions="p",
            model_type="classifier",
            evaluators=["bce-eval"],
            evaluator_config={"bce-eval": {"slice": ["region"]}},
        )
