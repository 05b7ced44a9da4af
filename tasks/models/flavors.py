"""The model flavours bce-eval evaluates: one small class per MLflow flavour, as MLflow's own.

Each flavour loads a model from its local copy, refuses what is not a binary 0/1 classifier (a
multiclass model, a regressor, a pyfunc that returns labels) with one line naming the model, and
scores it exactly where the library allows:

============== ================================================ ==========================
flavour        score                                            BCE
============== ================================================ ==========================
sklearn        linear: ``Σ wᵢ·xᵢ + b`` in the scan; else        exact from the logit
               ``decision_function``, or ``predict_proba``      (clipped from probabilities)
xgboost        ``inplace_predict(predict_type="margin")``       exact from the margin
lightgbm       ``predict(raw_score=True)`` × its ``sigmoid``    exact from the raw score
catboost       ``predict(prediction_type="RawFormulaVal")``     exact from the raw score
python_function ``predict``: P(y=1), or a logit (``--score-kind``) clipped as ``log_loss`` / exact
============== ================================================ ==========================

A binary logistic booster's margin is the logit (σ(margin) is its ``predict_proba``): the loss
``softplus(z) − y·z`` needs no clipping, even where a probability rounds to 0 or 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import polars as pl

from tasks.errors import InputError
from tasks.models.scoring import (
    BatchModel,
    ScoreKind,
    Scorer,
    batch_scorer,
    check_binary_model,
    make_scorer,
)


class ModelFlavor(Protocol):
    """How one MLflow flavour is loaded, checked and scored."""

    #: the flavour's key in an ``MLmodel`` file
    name: str

    def load(self, local_path: str, model_uri: str, score_kind: ScoreKind) -> Any:
        """The checked model from its local copy (:meth:`checked`)."""

    def checked(self, model: Any, source: str, score_kind: ScoreKind) -> Any:
        """``model`` if bce-eval can score it (a binary 0/1 classifier), else :class:`InputError` naming ``source``."""

    def scorer(self, model: Any, features: tuple[str, ...], identity: str, takes_frame: bool) -> Scorer:
        """The :class:`Scorer` of the loaded ``model`` on ``features`` (``identity`` keys the cache)."""


def _load_error(model_uri: str, exc: BaseException) -> InputError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"--model-uri {model_uri}: cannot load the model ({first}).")


def _load_with(module: Any, local_path: str, model_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return module.load_model(local_path)
    except (MlflowException, OSError, ImportError, ValueError) as exc:
        raise _load_error(model_uri, exc) from exc


def _check_names(model_uri: str, what: str, names: list[str] | None, n: int | None, features: tuple[str, ...]) -> None:
    if n is not None and n != len(features):
        raise InputError(
            f"model {model_uri}: {what} takes {n} features but {len(features)} were given ({', '.join(features)}); "
            "pass the columns it was trained on with --features."
        )
    if names and tuple(names) != features:
        raise InputError(
            f"model {model_uri}: {what} was trained on columns {list(names)} but the evaluation gives "
            f"{list(features)}; "
            "pass the same columns in the same order with --features."
        )


class _Loads:
    """``load`` as every flavour loads: MLflow's flavour ``module`` reads the copy, then :meth:`checked`."""

    module = ""

    def load(self, local_path: str, model_uri: str, score_kind: ScoreKind) -> Any:
        import importlib

        model = _load_with(importlib.import_module(self.module), local_path, model_uri)
        return self.checked(model, model_uri, score_kind)  # type: ignore[attr-defined]


class _BatchFlavor(_Loads):
    """A flavour whose ``load`` returns a batch model that makes its own :class:`Scorer`."""

    def scorer(self, model: Any, features: tuple[str, ...], identity: str, takes_frame: bool) -> Scorer:
        return model.scorer(features, identity)


# --- scikit-learn -----------------------------------------------------------------------------


class SklearnFlavor(_Loads):
    """``mlflow.sklearn``: a fitted binary classifier or ``Pipeline`` of 0/1 (XGBoost and LightGBM
    estimators logged this way are still scored by their margin)."""

    name = "sklearn"
    module = "mlflow.sklearn"

    def checked(self, model: Any, source: str, score_kind: ScoreKind) -> Any:
        check_binary_model(model, f"model {source}")
        margin = _margin_model(model, source)
        return margin if margin is not None else model

    def scorer(self, model: Any, features: tuple[str, ...], identity: str, takes_frame: bool) -> Scorer:
        if isinstance(model, (XGBoostMargin, LightGBMRaw)):
            return model.scorer(features, identity)
        return make_scorer(model, features, identity, takes_frame or None)


def _margin_model(model: Any, model_uri: str) -> BatchModel | None:
    """The margin scorer of an XGBoost or LightGBM scikit-learn estimator, else None."""
    module = type(model).__module__.split(".")[0]
    if module == "xgboost":
        return XGBoostMargin.of(model.get_booster(), model_uri)
    if module == "lightgbm":
        return LightGBMRaw.of(model.booster_, model_uri)
    return None


# --- XGBoost ----------------------------------------------------------------------------------

_XGB_BINARY = {"binary:logistic", "binary:logitraw"}


@dataclass(frozen=True)
class XGBoostMargin:
    """An XGBoost booster with a binary logistic objective, scored by its margin (the logit)."""

    booster: Any
    objective: str
    source: str
    kind: ScoreKind = "logit"
    takes_frame: bool = False

    @property
    def method(self) -> str:
        return f"xgboost margin (inplace_predict predict_type='margin', objective {self.objective})"

    @classmethod
    def of(cls, booster: Any, model_uri: str) -> "XGBoostMargin":
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        if objective not in _XGB_BINARY:
            what = (
                "a multiclass model"
                if objective.startswith("multi:")
                else (
                    "a regressor"
                    if objective.startswith(("reg:", "count:", "survival:"))
                    else "not a binary logistic model"
                )
            )
            raise InputError(
                f"model {model_uri}: the XGBoost model is {what} (objective {objective}); "
                "BCE needs a binary classifier trained with objective binary:logistic on 0/1 labels."
            )
        return cls(booster, objective, model_uri)

    def score(self, X: Any) -> np.ndarray:
        best = self.booster.attr("best_iteration")
        # as XGBClassifier.predict_proba does: up to the best iteration when training stopped early
        rounds = (0, int(best) + 1) if best is not None else (0, 0)
        margin = self.booster.inplace_predict(X, predict_type="margin", iteration_range=rounds, validate_features=False)
        return np.asarray(margin, dtype=np.float64).ravel()

    def scorer(self, features: tuple[str, ...], identity: str) -> Scorer:
        _check_names(
            self.source, "the XGBoost model", self.booster.feature_names, self.booster.num_features(), features
        )
        return batch_scorer(self, features, identity)


class XGBoostFlavor(_BatchFlavor):
    """``mlflow.xgboost``: an ``XGBClassifier`` or a raw ``Booster``."""

    name = "xgboost"
    module = "mlflow.xgboost"

    def checked(self, model: Any, source: str, score_kind: ScoreKind) -> Any:
        return XGBoostMargin.of(_booster(model, source, lambda m: m.get_booster()), source)


def _booster(model: Any, model_uri: str, booster_of: Any) -> Any:
    """The booster itself, or the one inside a scikit-learn-API estimator once its kind and classes
    are checked (``booster_of`` reaches it)."""
    if type(model).__name__.endswith("Regressor"):
        raise InputError(
            f"model {model_uri}: {type(model).__name__} is a regressor; BCE needs a binary classifier of the classes 0 "
            "and 1."
        )
    if not hasattr(model, "predict_proba"):
        return model  # a raw Booster: its objective is checked next
    check_binary_model(model, f"model {model_uri}")
    return booster_of(model)


# --- LightGBM ---------------------------------------------------------------------------------

_LGB_BINARY = {"binary", "cross_entropy", "xentropy"}


@dataclass(frozen=True)
class LightGBMRaw:
    """A LightGBM booster with a binary objective, scored by its raw score times its ``sigmoid``
    parameter (the logit: LightGBM's probability is ``1 / (1 + exp(−sigmoid · raw))``)."""

    booster: Any
    objective: str
    sigmoid: float
    source: str
    kind: ScoreKind = "logit"
    takes_frame: bool = False

    @property
    def method(self) -> str:
        scale = f" × sigmoid {self.sigmoid:g}" if self.sigmoid != 1.0 else ""
        return f"lightgbm raw score (predict raw_score=True{scale}, objective {self.objective})"

    @classmethod
    def of(cls, booster: Any, model_uri: str) -> "LightGBMRaw":
        params = booster.params or {}
        objective = str(params.get("objective", "")).split()[0] if params.get("objective") else ""
        if objective not in _LGB_BINARY:
            what = (
                "a multiclass model"
                if objective.startswith("multiclass")
                else ("not a binary classifier" if objective in {"lambdarank", "rank_xendcg"} else "a regressor")
            )
            raise InputError(
                f"model {model_uri}: the LightGBM model is {what} (objective {objective or 'unknown'}); "
                "BCE needs a binary classifier trained with objective binary on 0/1 labels."
            )
        sigmoid = float(params.get("sigmoid", 1.0)) if objective == "binary" else 1.0
        return cls(booster, objective, sigmoid, model_uri)

    def score(self, X: Any) -> np.ndarray:
        raw = np.asarray(self.booster.predict(X, raw_score=True), dtype=np.float64).ravel()
        return raw if self.sigmoid == 1.0 else raw * self.sigmoid

    def scorer(self, features: tuple[str, ...], identity: str) -> Scorer:
        names = self.booster.feature_name()
        default = [f"Column_{i}" for i in range(len(names))]  # trained on a matrix: no names to match
        _check_names(
            self.source, "the LightGBM model", None if names == default else names, self.booster.num_feature(), features
        )
        return batch_scorer(self, features, identity)


class LightGBMFlavor(_BatchFlavor):
    """``mlflow.lightgbm``: an ``LGBMClassifier`` or a raw ``Booster``."""

    name = "lightgbm"
    module = "mlflow.lightgbm"

    def checked(self, model: Any, source: str, score_kind: ScoreKind) -> Any:
        return LightGBMRaw.of(_booster(model, source, lambda m: m.booster_), source)


# --- CatBoost ---------------------------------------------------------------------------------

_CATBOOST_BINARY = {"Logloss", "CrossEntropy"}


@dataclass(frozen=True)
class CatBoostRaw:
    """A CatBoost classifier with a log-loss objective, scored by its raw formula value (the logit)."""

    model: Any
    takes_frame: bool
    source: str
    kind: ScoreKind = "logit"
    method: str = "catboost raw score (predict prediction_type='RawFormulaVal')"

    def score(self, X: Any) -> np.ndarray:
        raw = self.model.predict(X, prediction_type="RawFormulaVal", thread_count=-1)
        return np.asarray(raw, dtype=np.float64).ravel()

    def scorer(self, features: tuple[str, ...], identity: str) -> Scorer:
        _check_names(self.source, "the CatBoost model", list(self.model.feature_names_), None, features)
        return batch_scorer(self, features, identity)


class CatBoostFlavor(_BatchFlavor):
    """``mlflow.catboost``: a ``CatBoostClassifier`` trained with ``Logloss``."""

    name = "catboost"
    module = "mlflow.catboost"

    def checked(self, model: Any, source: str, score_kind: ScoreKind) -> Any:
        model_uri = source
        loss = str(model.get_all_params().get("loss_function", ""))
        if loss not in _CATBOOST_BINARY:
            what = (
                "a multiclass model"
                if loss.startswith("MultiClass")
                else "not a binary classifier (a regressor or ranker)"
            )
            raise InputError(
                f"model {model_uri}: the CatBoost model is {what} (loss_function {loss or 'unknown'}); "
                "BCE needs a CatBoostClassifier trained with Logloss on 0/1 labels."
            )
        check_binary_model(model, f"model {model_uri}")
        return CatBoostRaw(model, bool(model.get_cat_feature_indices()), model_uri)


# --- any other pyfunc -------------------------------------------------------------------------


@dataclass(frozen=True)
class PyfuncOutput:
    """Any pyfunc: its ``predict`` output, read as P(y=1) (one column, or column 1 of two) or a logit."""

    model: Any
    kind: ScoreKind
    source: str
    takes_frame: bool = True

    @property
    def method(self) -> str:
        if self.kind == "logit":
            return "pyfunc predict, read as a logit (--score-kind logit; exact BCE)"
        return "pyfunc predict, read as P(y=1), clipped to [eps, 1-eps] as sklearn.metrics.log_loss clips"

    def score(self, X: Any) -> np.ndarray:
        return class1_scores(self.model.predict(X), self.source)

    def scorer(self, features: tuple[str, ...], identity: str) -> Scorer:
        return batch_scorer(self, features, identity)

    def probe(self, sample: pl.DataFrame) -> None:
        """Refuse, on a few rows, a pyfunc that returns labels, or not probabilities when it should."""
        raw = self.model.predict(sample.to_pandas())
        s = class1_scores(raw, self.source)
        dtype = np.asarray(getattr(raw, "values", raw)).dtype
        if dtype.kind in "biu" or (len(s) >= 2 and np.isin(s, (0.0, 1.0)).all()):
            raise InputError(
                f"model {self.source}: its predict returns labels (0/1), not probabilities; log a pyfunc that returns "
                "the probability of class 1 (or a logit, with --score-kind logit)."
            )
        if self.kind == "probability" and not ((s >= 0) & (s <= 1)).all():
            raise InputError(
                f"model {self.source}: its predict returns values outside [0, 1] (from {s.min():.4g} to "
                f"{s.max():.4g}), "
                "not probabilities; if they are logits, pass --score-kind logit."
            )


def class1_scores(output: Any, source: str) -> np.ndarray:
    """P(y=1) (or the logit) per row from a pyfunc's output: a column, or column 1 of two."""
    values = output.to_numpy() if hasattr(output, "to_numpy") else np.asarray(output)
    if values.ndim == 2 and values.shape[1] == 2:
        values = values[:, 1]  # a probability frame: column 1 is class 1
    elif values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    elif values.ndim != 1:
        raise InputError(
            f"model {source}: its predict returns {values.shape[1] if values.ndim == 2 else values.shape} columns; "
            "bce-eval reads one column (P(y=1)) or two (P(y=0), P(y=1))."
        )
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"model {source}: its predict returns {values.dtype} values, not numbers; it must return P(y=1)."
        ) from exc


class PyfuncFlavor(_BatchFlavor):
    """``python_function``: any MLflow model, through its generic ``predict``."""

    name = "python_function"
    module = "mlflow.pyfunc"

    def checked(self, model: Any, source: str, score_kind: ScoreKind) -> Any:
        return PyfuncOutput(model, score_kind, source)


#: The flavours bce-eval loads, in order of preference (the generic pyfunc last: every model has it)
FLAVORS: tuple[ModelFlavor, ...] = (
    SklearnFlavor(),
    XGBoostFlavor(),
    LightGBMFlavor(),
    CatBoostFlavor(),
    PyfuncFlavor(),
)
