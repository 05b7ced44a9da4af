"""The evaluation as a subflow of a user's own flow, against a real Prefect server: the parent sees its child
flow run and the child's artifacts; a failed gate is the child's Failed state, with the evaluation as its data."""

from __future__ import annotations

import polars as pl
import pytest

from tests.conftest import REPO


def _children(parent_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        (child,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[child.id]))
        )
        return child, {a.key for a in artifacts}


def test_a_users_flow_runs_the_evaluation_as_its_child_and_reads_its_typed_result(
    prefect_server, mlflow_uri, monkeypatch
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from flows.pipeline_example import nightly_pipeline

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    demo = pl.read_parquet(REPO / "data" / "demo", hive_partitioning=True)
    X, y = demo.select("f1", "f2", "f3").to_numpy(), demo.get_column("label").to_numpy()
    expected = log_loss(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1])

    state = nightly_pipeline(str(REPO / "data" / "demo"), return_state=True)
    evaluation = state.result()
    assert evaluation.gate_passed and evaluation.overall["bce"] == pytest.approx(expected, rel=1e-12)
    child, artifacts = _children(state.state_details.flow_run_id)
    assert child.state.is_completed() and child.flow_id != state.state_details.flow_run_id
    assert {"bce-by-partition", "bce-summary", "bce-by-f1-1-0-1"} <= artifacts

    failing = nightly_pipeline(str(REPO / "data" / "demo"), max_bce=0.01, return_state=True)
    evaluation = failing.result()  # the parent decided; its own run completed
    assert failing.is_completed() and not evaluation.gate_passed
    assert evaluation.overall["bce"] == pytest.approx(expected, rel=1e-12)
    child, _ = _children(failing.state_details.flow_run_id)
    assert child.state.is_failed() and "overall bce" in child.state.message


def test_a_users_flow_evaluates_and_compares_lightgbm_and_xgboost_as_children(prefect_server, mlflow_uri, monkeypatch):
    """A non-linear flavour through the subflow: the child's figures are the Python API's and the booster's own."""
    import lightgbm as lgb
    import mlflow
    import numpy as np
    import xgboost as xgb
    from prefect import flow

    from flows.api import evaluate
    from flows.compare import compare_flow
    from flows.evaluate import evaluate_flow
    from flows.settings import CompareSettings, EvaluateSettings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    data = str(REPO / "data" / "demo")
    demo = pl.read_parquet(data, hive_partitioning=True)
    X, y = demo.select("f1", "f2", "f3").to_pandas(), demo.get_column("label").to_numpy()
    with mlflow.start_run():
        lgb_uri = mlflow.lightgbm.log_model(
            lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y), name="lgb", input_example=X.head(3)
        ).model_uri
        booster = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
        xgb_uri = mlflow.xgboost.log_model(booster, name="xgb", input_example=X.head(3)).model_uri

    @flow(name="team-pipeline")
    def team_pipeline(model_uri: str, champion: str):
        evaluation = evaluate_flow(EvaluateSettings(data=data, label="label", model_uri=model_uri, slices=["region"]))
        comparison = compare_flow(CompareSettings(data=data, label="label", champion=champion, challenger=model_uri))
        return evaluation, comparison

    state = team_pipeline(lgb_uri, xgb_uri, return_state=True)
    evaluation, comparison = state.result()
    raw = mlflow.lightgbm.load_model(lgb_uri).predict(X, raw_score=True)
    assert evaluation.overall["bce"] == pytest.approx(np.mean(np.logaddexp(0, raw) - y * raw), rel=1e-9)
    api = evaluate(data, label="label", model=lgb_uri, slices=["region"])
    assert api.bce == pytest.approx(evaluation.overall["bce"], rel=1e-12)
    got = evaluation.slices.tables["region"].sort("region").get_column("bce").to_numpy()
    np.testing.assert_allclose(api.slices["region"].sort("region").get_column("bce").to_numpy(), got, rtol=1e-12)
    margin = booster.get_booster().inplace_predict(X.to_numpy(), predict_type="margin").astype(np.float64)
    champion_bce = np.mean(np.logaddexp(0, margin) - y * margin)
    assert comparison.overall["bce_diff"] == pytest.approx(evaluation.overall["bce"] - champion_bce, rel=1e-6)
