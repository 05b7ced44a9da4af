"""tasks/models/loading.py: models load against the tracking URI they are given, with no process-wide state."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tasks.errors import InputError
from tasks.models.loading import load_model, model_feature_names
from tasks.tracking.operations import describe_model


def test_a_model_loads_from_the_store_it_is_given(mlflow_uri, tmp_path, monkeypatch):
    import mlflow
    import pandas as pd

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 2)), columns=["u", "v"])
    y = (X["u"] + 0.3 * rng.normal(size=200) > 0).astype(int)
    model = LogisticRegression().fit(X.to_numpy(), y)
    exp = mlflow.create_experiment("explicit-uri", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"], signature=mlflow.models.infer_signature(X)
        )
    uri = f"runs:/{run.info.run_id}/model"
    # the process-wide default points elsewhere: only the explicit URI can find the run
    mlflow.set_tracking_uri(None)  # (this also clears MLFLOW_TRACKING_URI)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    loaded = load_model(uri, mlflow_uri)
    np.testing.assert_array_equal(loaded.model.coef_, model.coef_)
    assert model_feature_names(uri, mlflow_uri) == ["u", "v"]
    assert describe_model(uri, mlflow_uri)["model_source_run_id"] == run.info.run_id
    assert mlflow.get_tracking_uri().endswith("elsewhere.db")  # nothing set the global URI


def test_registered_and_run_models_load_without_the_process_wide_uri(mlflow_uri, tmp_path, monkeypatch):
    """Logged and registered through the adapter; runs:/, models:/name/N and models:/name@alias then
    load from the store given while the process-wide URI points elsewhere and may not be set."""
    import mlflow

    from tasks.tracking.adapter import MlflowTracker
    from tasks.tracking.content import RunContent

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    model = LogisticRegression().fit(X, [0, 1, 0, 1])
    tracker = MlflowTracker(mlflow_uri)
    content = RunContent("registry", "r", model=model, model_input_example=X, register=("bce-model", "champion"))
    run_id, _ = tracker.log_evaluation(content)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["registered_model_version"] == "1"
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")

    def refuse(uri):
        raise AssertionError("loading set the process-wide tracking URI")

    with monkeypatch.context() as patched:
        patched.setattr(mlflow, "set_tracking_uri", refuse)
        for uri in (f"runs:/{run_id}/model", "models:/bce-model/1", "models:/bce-model@champion"):
            np.testing.assert_array_equal(load_model(uri, mlflow_uri).model.coef_, model.coef_)
        info = describe_model("models:/bce-model@champion", mlflow_uri)
    assert (info["model_name"], info["model_version"], info["model_source_run_id"]) == ("bce-model", "1", run_id)


def test_a_missing_model_is_one_clear_error(mlflow_uri):
    bad = "runs:/0123456789abcdef0123456789abcdef/model"
    with pytest.raises(
        InputError, match=r"--model-uri runs:/0123456789abcdef0123456789abcdef/model: cannot load the model"
    ):
        load_model(bad, mlflow_uri)


def test_model_inputs_name_and_type_each_column(mlflow_uri, tmp_path):
    import mlflow
    import pandas as pd

    from tasks.models.loading import model_inputs

    X = pd.DataFrame({"u": [0.1, 0.2, 0.3, 0.4], "n": [1, 2, 3, 4]})
    model = LogisticRegression().fit(X.to_numpy(), [0, 1, 0, 1])
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            model, name="model", pip_requirements=["scikit-learn"], signature=mlflow.models.infer_signature(X)
        )
    inputs = model_inputs(f"runs:/{run.info.run_id}/model", mlflow_uri)
    assert inputs.names == ("u", "n") and inputs.types == ("double", "long")


def test_a_flavour_bce_eval_does_not_load_is_one_clear_error(mlflow_uri, tmp_path):
    """A model folder whose MLmodel names only a flavour bce-eval has no class for (not even python_function)."""
    import mlflow

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("artifact_path: model\nflavors:\n  h2o:\n    data: model.h2o\n")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
    uri = f"runs:/{run.info.run_id}/model"
    with pytest.raises(
        InputError,
        match=r"--model-uri runs:/.*/model: its flavours \['h2o'\] are not supported; bce-eval loads sklearn, xgboost, "
        r"lightgbm, catboost, python_function models",
    ):
        load_model(uri, mlflow_uri)
