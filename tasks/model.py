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

from typing import Any, Callable

import numpy as np

from tasks._prefect import as_task
from tasks.errors import InputError
from tasks.scoring import check_binary_model

ModelInfoTags = dict[str, str]


def fit_logistic(X: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    """Fit scikit-learn's ``LogisticRegression`` with its defaults (overridden by ``params``)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**params).fit(X, y)


#: Results computed ahead by :func:`prefetch_model`, each taken (once) by the first call that needs it.
_AHEAD: dict[tuple[str, str], Any] = {}


def prefetch_model(model_uri: str) -> None:
    """Describe, read and load ``model_uri`` now, for the flow's tasks to take later.

    The CLI calls this while Prefect's temporary server starts, so the model loads in time that is
    otherwise spent waiting. Each result is taken by the first call for the same URI and then
    forgotten (an alias that moves later is resolved again). A failure is left for the task to
    report: it repeats the call, with its retries and its error message.
    """
    try:
        ahead = {(kind, model_uri): fn(model_uri) for kind, fn in (("describe", _describe_model_uri), ("features", _model_feature_names), ("model", _load_model))}
    except Exception:  # noqa: BLE001 - not swallowed: the task makes the same call and reports it
        return
    _AHEAD.update(ahead)


def _take(kind: str, model_uri: str, fn: Callable[[str], Any]) -> Any:
    key = (kind, model_uri)
    return _AHEAD.pop(key) if key in _AHEAD else fn(model_uri)


def load_model(model_uri: str) -> Any:
    """Load a scikit-learn binary 0/1 classifier from MLflow (``runs:/…``, ``models:/name/1``, ``models:/name@alias``).

    Raises :class:`InputError` naming the URI when it cannot be loaded or is not such a classifier.
    """
    return _take("model", model_uri, _load_model)


def _load_model(model_uri: str) -> Any:
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    from tasks.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri())
    try:
        model = mlflow.sklearn.load_model(model_uri)
    except MlflowException as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model-uri {model_uri}: cannot load the model ({first}).") from exc
    except OSError as exc:
        raise InputError(f"--model-uri {model_uri}: cannot load the model ({exc}).") from exc
    # here, not in the callers: evaluate, compare, serve's pre-flight and the prefetch all load
    # through this function, so none of them can score a model that is not a 0/1 classifier
    check_binary_model(model, f"model {model_uri}")
    return model


def model_feature_names(model_uri: str) -> list[str] | None:
    """The input column names in the logged model's signature, if it has one."""
    return _take("features", model_uri, _model_feature_names)


def _model_feature_names(model_uri: str) -> list[str] | None:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    from tasks.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri())
    try:
        sig = get_model_info(model_uri).signature
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model-uri {model_uri}: cannot read the model ({first}).") from exc
    if sig is None or sig.inputs is None:
        return None
    names = sig.inputs.input_names()
    return [str(n) for n in names] if names and all(isinstance(n, str) for n in names) else None


def describe_model_uri(model_uri: str) -> dict[str, str]:
    """Registry name, version and source run of a ``models:/`` or ``runs:/`` URI, as tags."""
    return _take("describe", model_uri, _describe_model_uri)


def _describe_model_uri(model_uri: str) -> dict[str, str]:
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.tracking import resolve_tracking_uri

    info: dict[str, str] = {"model_uri": model_uri}
    client = mlflow.MlflowClient(resolve_tracking_uri())
    try:
        if model_uri.startswith("models:/"):
            ref = model_uri[len("models:/") :].strip("/")
            if "@" in ref:
                name, alias = ref.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
                info["model_alias"] = alias
            else:
                name, version = ref.split("/", 1)
                mv = client.get_model_version(name, version)
            info.update(model_name=mv.name, model_version=str(mv.version))
            if mv.run_id:
                info["model_source_run_id"] = mv.run_id
        elif model_uri.startswith("runs:/"):
            info["model_source_run_id"] = model_uri[len("runs:/") :].split("/", 1)[0]
    except (MlflowException, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model-uri {model_uri}: cannot resolve it in the registry ({first}).") from exc
    return info


def fit_model(X: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> Any:
    """Fit the default classifier (scikit-learn's ``LogisticRegression``) on X, y."""
    return fit_logistic(X, y, **params)


fit_model_task = as_task(fit_model, name="fit-model")
load_model_task = as_task(load_model, name="load-model", retries=3)
describe_model_task = as_task(describe_model_uri, name="describe-model", retries=3)
model_features_task = as_task(model_feature_names, name="model-features", retries=3)
