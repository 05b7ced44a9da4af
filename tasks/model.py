"""The model seam's loading side: fit the mission's classifier, or load a logged one by its flavour.

A logged model is read from its local copy (downloaded against the tracking URI given, never a
process-wide one): its ``MLmodel`` file names its flavours and holds its signature (input names and
types); the first flavour here that it has loads it (:data:`FLAVORS`, scikit-learn first). Turning
a loaded model into row scores is :mod:`tasks.scoring`'s side of the seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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
    from mlflow.exceptions import MlflowException

    from tasks.tracking import MlflowTracker  # (here: neither module imports the other at module level)

    try:
        return MlflowTracker(tracking_uri).download_model(model_uri, into)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model-uri {model_uri}: cannot load the model ({first}).") from exc


class ModelFlavor(Protocol):
    """How one MLflow flavour is loaded (one implementation per flavour, as MLflow's own)."""

    #: the flavour's key in an ``MLmodel`` file
    name: str

    def load(self, local_path: str, model_uri: str) -> Any:
        """The model object from its local copy; :class:`InputError` naming ``model_uri`` if it cannot be."""


class SklearnFlavor:
    """``mlflow.sklearn``: a fitted scikit-learn binary classifier of 0/1."""

    name = "sklearn"

    def load(self, local_path: str, model_uri: str) -> Any:
        import mlflow.sklearn
        from mlflow.exceptions import MlflowException

        try:
            model = mlflow.sklearn.load_model(local_path)
        except (MlflowException, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"--model-uri {model_uri}: cannot load the model ({first}).") from exc
        # here, not in the callers: evaluate, compare and serve's pre-flight all load through this
        # flavour, so none of them can score a model that is not a 0/1 classifier
        check_binary_model(model, f"model {model_uri}")
        return model


#: The flavours bce-eval loads, in order of preference
FLAVORS: tuple[ModelFlavor, ...] = (SklearnFlavor(),)


@dataclass(frozen=True)
class ModelInputs:
    """The columns a logged model's signature names, with their types (None without a signature)."""

    names: tuple[str, ...]
    types: tuple[str, ...]


def _flavor_of(local_path: str, model_uri: str) -> ModelFlavor:
    from mlflow.models import Model

    logged = set(Model.load(local_path).flavors)
    for flavor in FLAVORS:
        if flavor.name in logged:
            return flavor
    raise InputError(
        f"--model-uri {model_uri}: its flavours {sorted(logged)} are not supported; "
        f"bce-eval loads {', '.join(f.name for f in FLAVORS)} models."
    )


def load_model(model_uri: str, tracking_uri: str) -> Any:
    """Load a binary 0/1 classifier from MLflow (``runs:/…``, ``models:/name/1``, ``models:/name@alias``).

    Raises :class:`InputError` naming the URI when it cannot be loaded, its flavour is not one of
    :data:`FLAVORS`, or it is not such a classifier.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bce-eval-model-") as tmp:
        local = _download(model_uri, tracking_uri, tmp)
        return _flavor_of(local, model_uri).load(local, model_uri)


def model_inputs(model_uri: str, tracking_uri: str) -> ModelInputs | None:
    """The input columns and types of the logged model's signature, if it has one with names."""
    import tempfile

    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="bce-eval-model-") as tmp:
        sig = Model.load(_download(model_uri, tracking_uri, tmp)).signature
    if sig is None or sig.inputs is None:
        return None
    names = sig.inputs.input_names()
    if not names or not all(isinstance(n, str) for n in names):
        return None
    types = tuple(getattr(getattr(spec, "type", None), "name", str(getattr(spec, "type", ""))) for spec in sig.inputs.inputs)
    return ModelInputs(tuple(names), types)


def model_feature_names(model_uri: str, tracking_uri: str) -> list[str] | None:
    """The input column names in the logged model's signature, if it has one."""
    inputs = model_inputs(model_uri, tracking_uri)
    return list(inputs.names) if inputs is not None else None


def fit_model(X: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> Any:
    """Fit the default classifier (scikit-learn's ``LogisticRegression``) on X, y."""
    return fit_logistic(X, y, **params)


fit_model_task = as_task(fit_model, name="fit-model")
load_model_task = as_task(load_model, name="load-model", retries=3)
model_features_task = as_task(model_feature_names, name="model-features", retries=3)
