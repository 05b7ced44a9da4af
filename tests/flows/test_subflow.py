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
