"""How the evaluation gets a score per row: the scoring side of the model seam.

A :class:`Scorer` says where each row's score comes from and whether it is a logit (exact BCE) or a
probability (BCE clipped like scikit-learn, see :mod:`tasks.metrics.loss`):

- linear models (``LogisticRegression`` and any binary ``LinearClassifierMixin``) become one
  Polars expression ``Σ wᵢ·xᵢ + b``, evaluated inside the scan;
- any other model is a :class:`BatchModel` called on each batch: a scikit-learn classifier's
  ``decision_function`` (a logit for binary classifiers), else its ``predict_proba``; an XGBoost
  margin, a LightGBM raw score, a pyfunc's output (:mod:`tasks.models.flavors`);
- stored predictions are a column of the data, already a logit or a probability.

Every caller scores through :meth:`Scorer.score_frame` (or reads :meth:`Scorer.scan_expression`
inside a scan): the dispatch on the three kinds lives here only. A scorer's :attr:`Scorer.identity`
keys the per-partition cache: it changes whenever the scores could.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl

from tasks.errors import InputError

ScoreKind = Literal["logit", "probability"]


class BatchModel(Protocol):
    """A loaded model as the pass calls it: one batch of rows in, one score per row out."""

    #: "logit" (exact BCE) or "probability" (BCE clipped like scikit-learn)
    kind: ScoreKind
    #: True: a pandas DataFrame of the columns with their own types; False: a float64 matrix
    takes_frame: bool
    #: how the scores are obtained, in words (a run tag)
    method: str

    def score(self, X: Any) -> np.ndarray:
        """One float64 score per row of ``X``."""


@dataclass(frozen=True)
class SklearnBatch:
    """A scikit-learn classifier (or ``Pipeline``): ``decision_function`` if it has one, else ``predict_proba``."""

    model: Any
    takes_frame: bool = False

    @property
    def kind(self) -> ScoreKind:
        return "logit" if hasattr(self.model, "decision_function") else "probability"

    @property
    def method(self) -> str:
        name = type(self.model).__name__
        return f"{name}.decision_function (logit)" if self.kind == "logit" else f"{name}.predict_proba (clipped at eps)"

    def score(self, X: Any) -> np.ndarray:
        if self.kind == "logit":
            return np.asarray(self.model.decision_function(X), dtype=np.float64).ravel()
        return np.asarray(self.model.predict_proba(X), dtype=np.float64)[:, 1]


@dataclass(frozen=True)
class Scorer:
    """How a row's score is obtained.

    Exactly one of ``expression`` (a Polars expression over the feature columns), ``model`` (an
    object scored on numpy batches) or ``column`` (stored predictions) is set.
    """

    kind: ScoreKind
    features: tuple[str, ...]
    expression: pl.Expr | None = None
    model: BatchModel | None = None
    column: str | None = None
    description: str = ""
    #: a digest that changes whenever the scores could (for cache keys)
    identity: str = ""

    def scan_expression(self) -> pl.Expr:
        """The score as a Polars expression (a stored column or a linear logit), as Float64."""
        if self.column is not None:
            return pl.col(self.column).cast(pl.Float64)
        if self.expression is not None:
            return self.expression
        raise TypeError(f"{self.description}: scored on numpy batches, not inside the scan")

    def score_frame(self, frame: pl.DataFrame, text_features: tuple[str, ...] = ()) -> np.ndarray:
        """Scores of every row of ``frame`` (which holds the feature or score columns), as float64.

        ``text_features`` are passed to the model as text; the other features as float64.
        """
        if self.model is None:
            return frame.select(self.scan_expression()).to_series().to_numpy()
        return self.model.score(model_input(self.model, frame.select(self.features), text_features))


def model_input(model: BatchModel, features: pl.DataFrame, text_features: tuple[str, ...] = ()) -> Any:
    """A batch of feature columns as ``model`` takes it: a pandas frame, or a float64 matrix."""
    if model.takes_frame:
        return features.to_pandas()
    text = [c for c in text_features if c in features.columns]
    if text:
        raise InputError(
            f"{model.method}: takes numbers only, but {', '.join(text)} are text; cast them or drop them from "
            "--features."
        )
    return features.select(pl.all().cast(pl.Float64)).to_numpy(order="c")  # row-major: what tree libraries read


def check_binary_model(model: Any, source: str) -> None:
    """Raise :class:`InputError` unless ``model`` is a fitted binary classifier of 0/1 (or False/True).

    ``source`` names the model in the message (its URI). The scorers take column 1 of
    ``predict_proba`` (or the sign of ``decision_function``) as "label 1", which is only right for
    exactly these two classes, so anything else is refused before any data is read.
    """
    name = type(model).__name__
    if not (hasattr(model, "predict_proba") or hasattr(model, "decision_function")):
        raise InputError(
            f"{source}: {name} is not a classifier (it has neither predict_proba nor decision_function); "
            "pass a binary classifier trained on 0/1 labels."
        )
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise InputError(
            f"{source}: {name} has no classes_ (not a fitted scikit-learn classifier); pass a fitted binary classifier."
        )
    values = [v.item() if hasattr(v, "item") else v for v in np.asarray(classes, dtype=object).ravel()]
    if len(values) != 2:
        raise InputError(
            f"{source}: {name} has {len(values)} classes {values}; BCE needs a binary classifier of the classes 0 and "
            "1."
        )
    # numbers or booleans equal to 0 and 1 (bool is an int); text such as "0"/"1" is not a label here
    if not all(isinstance(v, (bool, int, float)) for v in values) or sorted(values) != [0, 1]:
        raise InputError(
            f"{source}: {name} was trained on the classes {values}, not 0 and 1 (or False and True); "
            "its scores cannot be matched to 0/1 labels, so retrain it on 0/1 labels."
        )


@dataclass(frozen=True, eq=False)
class LinearModel:
    """A fitted linear binary classifier as its coefficients: all the scan needs of it, and no
    scikit-learn to import. A model loaded in the CLI's helper process arrives as this
    (:mod:`flows.cli.model_preload`); it scores exactly as the estimator it was taken from."""

    #: the estimator's class name (``LogisticRegression``): in cache keys and run tags, as before
    type_name: str
    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    n_features_in_: int | None = None
    feature_names_in_: np.ndarray | None = None

    @classmethod
    def of(cls, model: Any) -> "LinearModel":
        """The coefficients of a linear scikit-learn classifier (:func:`is_linear`)."""
        return cls(
            type(model).__name__,
            np.asarray(model.coef_),
            np.asarray(model.intercept_),
            np.asarray(model.classes_),
            getattr(model, "n_features_in_", None),
            getattr(model, "feature_names_in_", None),
        )


def model_type_name(model: Any) -> str:
    """The model's class name (a :class:`LinearModel` keeps its estimator's)."""
    return model.type_name if isinstance(model, LinearModel) else type(model).__name__


def is_linear(model: Any) -> bool:
    """True for a model scored as ``Σ wᵢ·xᵢ + b`` in the scan: any binary ``LinearClassifierMixin``."""
    if isinstance(model, LinearModel):
        return True
    from sklearn.linear_model._base import LinearClassifierMixin

    return isinstance(model, LinearClassifierMixin) and np.ndim(getattr(model, "coef_", None)) == 2


def _check_features(model: Any, features: tuple[str, ...]) -> None:
    n_in = getattr(model, "n_features_in_", None)
    if n_in is not None and n_in != len(features):
        raise InputError(
            f"the model takes {n_in} features but {len(features)} were given ({', '.join(features)}); "
            "pass the columns it was trained on with --features."
        )
    names = getattr(model, "feature_names_in_", None)
    if names is not None and tuple(str(n) for n in names) != features:
        raise InputError(
            f"the model was trained on columns {list(names)} but --features gives {list(features)}; "
            "pass the same columns in the same order."
        )


def _digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"|")
    return h.hexdigest()


def make_scorer(
    model: Any,
    features: tuple[str, ...] | list[str],
    model_identity: str | None = None,
    takes_frame: bool | None = None,
) -> Scorer:
    """A :class:`Scorer` for a fitted scikit-learn binary classifier on the named feature columns.

    ``model_identity`` (a registry version or an artifact digest, from the loader) keys the cache
    for models that are not linear; a linear model is keyed by its coefficients, and a model with
    neither (fitted in this process) by its pickle. ``takes_frame`` (default: the model was fitted
    on a frame with column names) passes it pandas frames, as a ``ColumnTransformer`` needs.
    """
    features = tuple(features)
    _check_features(model, features)
    name = model_type_name(model)
    if is_linear(model):
        w = np.ascontiguousarray(model.coef_, dtype=np.float64)
        b = np.ascontiguousarray(model.intercept_, dtype=np.float64)
        if w.size != len(features):  # zip() would drop the extra coefficients or features silently
            raise InputError(
                f"the model has {w.size} coefficients but {len(features)} features were given ({', '.join(features)}); "
                "pass the columns it was trained on with --features."
            )
        expr = pl.lit(float(b.ravel()[0]), dtype=pl.Float64)
        for col, wi in zip(features, w.ravel()):
            expr = expr + pl.col(col).cast(pl.Float64) * float(wi)
        identity = _digest("logit", repr(features), name, w.tobytes(), b.tobytes())
        return Scorer("logit", features, expression=expr, description=f"linear logit of {name}", identity=identity)
    if not model_identity:
        import pickle

        model_identity = _digest(pickle.dumps(model, protocol=5))  # fitted here, no artifact yet
    if takes_frame is None:
        takes_frame = getattr(model, "feature_names_in_", None) is not None
    return batch_scorer(SklearnBatch(model, takes_frame), features, model_identity)


def batch_scorer(model: BatchModel, features: tuple[str, ...] | list[str], model_identity: str) -> Scorer:
    """A :class:`Scorer` calling ``model`` on each batch; ``model_identity`` (its artifact digest) keys the cache."""
    features = tuple(features)
    identity = _digest(model.kind, repr(features), model.method, model_identity)
    return Scorer(model.kind, features, model=model, description=model.method, identity=identity)


def stored_scorer(column: str, kind: ScoreKind) -> Scorer:
    """A :class:`Scorer` reading predictions already stored in ``column``."""
    if kind not in ("logit", "probability"):
        raise InputError(f"--score-kind must be 'logit' or 'probability', not {kind!r}.")
    return Scorer(
        kind,
        (),
        column=column,
        description=f"stored {kind} column {column!r}",
        identity=_digest("stored", kind, column),
    )
