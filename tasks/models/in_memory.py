"""A model already in memory (a notebook's fitted estimator or booster, an MLflow ``PyFuncModel``):
its flavour, its checks, its features and its :class:`Scorer`, exactly as a logged model of that
flavour gets them (:mod:`tasks.models.flavors`)."""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

from tasks.errors import InputError
from tasks.models.flavors import FLAVORS, ModelFlavor
from tasks.models.scoring import ScoreKind, Scorer

#: how a refusal names a model that has no URI
IN_MEMORY = "given in memory"


def flavor_of_object(model: Any) -> ModelFlavor:
    """The flavour that scores ``model``: by its library (a booster or its scikit-learn estimator), an
    MLflow ``PyFuncModel``, else scikit-learn's API (``predict_proba`` or ``decision_function``)."""
    by_name = {f.name: f for f in FLAVORS}
    library = type(model).__module__.split(".")[0]
    if library in ("xgboost", "lightgbm", "catboost"):
        return by_name[library]
    if library == "mlflow":
        return by_name["python_function"]
    if not (hasattr(model, "predict_proba") or hasattr(model, "decision_function")):
        raise InputError(
            f"model: a {type(model).__name__} object is not a classifier bce-eval scores; pass a fitted binary "
            "classifier (scikit-learn, XGBoost, LightGBM, CatBoost, an MLflow PyFuncModel), a model URI, or the name "
            "of a column of scores."
        )
    return by_name["sklearn"]


def object_features(model: Any) -> list[str]:
    """The feature columns ``model`` names (scikit-learn's ``feature_names_in_``, a booster's own), else none."""
    for names in (
        getattr(model, "feature_names_in_", None),
        getattr(model, "feature_names", None),  # xgboost.Booster
        getattr(model, "feature_names_", None),  # CatBoost
        _lightgbm_names(model),
        _pyfunc_names(model),
    ):
        if names is not None and len(names) and not callable(names):
            return [str(n) for n in names]
    return []


def _lightgbm_names(model: Any) -> list[str] | None:
    booster = getattr(model, "booster_", model) if type(model).__module__.startswith("lightgbm") else None
    if booster is None or not hasattr(booster, "feature_name"):
        return None
    names = booster.feature_name()
    return None if names == [f"Column_{i}" for i in range(len(names))] else names


def _pyfunc_names(model: Any) -> list[str] | None:
    schema = model.metadata.get_input_schema() if type(model).__module__.startswith("mlflow") else None
    return schema.input_names() if schema is not None and schema.has_input_names() else None


def object_scorer(model: Any, features: list[str] | tuple[str, ...], score_kind: ScoreKind = "probability") -> Scorer:
    """The :class:`Scorer` of ``model`` on ``features``, after its flavour's checks; keyed by its pickle."""
    if isinstance(model, (str, bytes)) or model is None:
        raise InputError(f"model {model!r}: expected a fitted model object here.")
    flavor = flavor_of_object(model)
    checked = flavor.checked(model, IN_MEMORY, score_kind)
    try:
        identity = hashlib.blake2b(pickle.dumps(model, protocol=5), digest_size=16).hexdigest()
    except (pickle.PicklingError, TypeError, AttributeError):
        identity = f"object-{id(model)}"  # nothing is cached from here: the identity names this process's object
    takes_frame = getattr(model, "feature_names_in_", None) is not None
    return flavor.scorer(checked, tuple(features), identity, takes_frame)
