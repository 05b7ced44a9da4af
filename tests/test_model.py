"""tasks/model.py: models loaded ahead of the flow are taken once, and failures are left to the task."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tasks.errors import InputError
from tasks.model import _AHEAD, describe_model_uri, load_model, model_feature_names, prefetch_model


def test_prefetched_model_is_taken_once_then_loaded_again(mlflow_uri, tmp_path):
    import mlflow
    import pandas as pd

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 2)), columns=["u", "v"])
    y = (X["u"] + 0.3 * rng.normal(size=200) > 0).astype(int)
    model = LogisticRegression().fit(X.to_numpy(), y)
    exp = mlflow.create_experiment("prefetch", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"], signature=mlflow.models.infer_signature(X))
    uri = f"runs:/{run.info.run_id}/model"

    prefetch_model(uri)
    assert {k for k in _AHEAD if k[1] == uri} == {("describe", uri), ("features", uri), ("model", uri)}
    first = load_model(uri)
    assert model_feature_names(uri) == ["u", "v"]
    assert describe_model_uri(uri)["model_source_run_id"] == run.info.run_id
    assert not any(k[1] == uri for k in _AHEAD)  # each result was taken once
    second = load_model(uri)  # loaded again, not a kept copy
    assert second is not first
    np.testing.assert_array_equal(second.coef_, model.coef_)


def test_a_failed_prefetch_is_left_for_the_task_to_report(mlflow_uri):
    bad = "runs:/0123456789abcdef0123456789abcdef/model"
    prefetch_model(bad)  # nothing raised here, nothing kept
    assert not any(k[1] == bad for k in _AHEAD)
    with pytest.raises(InputError, match="cannot load the model"):
        load_model(bad)
