"""Fit a classifier, load one from MLflow, and turn it into a scorer for the streaming reduce.

A scorer says how to get each row's score from its features, and whether that score is a logit
(exact BCE) or a probability (BCE clipped like scikit-learn, see :mod:`tasks.bce`):

- linear models (``LogisticRegression`` and any binary ``LinearClassifierMixin``) become one
  Polars expression ``Σ wᵢ·xᵢ + b``, evaluated inside the scan;
- any other classifier is called on numpy batches: ``decision_function`` when it has one (a logit
  for binary classifiers), else ``predict_proba``;
- stored predictions are a column of the data, already a logit or a probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks._prefect import as_task
from tasks.errors import InputError
from tasks.scoring import check_binary_model

ModelInfoTags = dict[str, str]


def fit_logistic(X: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    """Fit scikit-learn's ``LogisticRegression`` with its defaults (overridden by ``params``)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**params).fit(X, y)


def _download(model_uri: str, tracking_uri: str, into: str) -> str:
    """The model's artifacts in a local folder, resolved against this tracking and registry URI."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tasks.tracking import scoped_tracking_uri

    try:
        # MLflow 3 resolves a run's logged model partly through the process-wide URI: scope it
        with scoped_tracking_uri(tracking_uri):
            return mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=into, tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model-uri {model_uri}: cannot load the model ({first}).") from exc


def load_model(model_uri: str, tracking_uri: str) -> Any:
    """Load a scikit-learn binary 0/1 classifier from MLflow (``runs:/…``, ``models:/name/1``, ``models:/name@alias``).

    Raises :class:`InputError` naming the URI when it cannot be loaded or is not such a classifier.
    """
    import tempfile

    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="bce-eval-model-") as tmp:
        local = _download(model_uri, tracking_uri, tmp)
        try:
            model = mlflow.sklearn.load_model(local)
        except (MlflowException, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"--model-uri {model_uri}: cannot load the model ({first}).") from exc
    # here, not in the callers: evaluate, compare and serve's pre-flight all load through this
    # function, so none of them can score a model that is not a 0/1 classifier
    check_binary_model(model, f"model {model_uri}")
    return model


def model_feature_names(model_uri: str, tracking_uri: str) -> list[str] | None:
    """The input column names in the logged model's signature, if it has one."""
    import tempfile

    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="bce-eval-model-") as tmp:
        sig = Model.load(_download(model_uri, tracking_uri, tmp)).signature
    if sig is None or sig.inputs is None:
        return None
    names = sig.inputs.input_names()
    return [str(n) for n in names] if names and all(isinstance(n, str) for n in names) else None


def fit_model(X: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> Any:
    """Fit the default classifier (scikit-learn's ``LogisticRegression``) on X, y."""
    return fit_logistic(X, y, **params)


fit_model_task = as_task(fit_model, name="fit-model")
load_model_task = as_task(load_model, name="load-model", retries=3)
model_features_task = as_task(model_feature_names, name="model-features", retries=3)
