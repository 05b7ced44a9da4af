"""One example model per flavour, trained on the demo data and registered, to try ``--model-uri`` with.

``bce-eval example-models`` registers, each with the alias ``@champion``:

- ``demo-pipeline``: a scikit-learn ``Pipeline``, a ``OneHotEncoder`` on the text column ``region``
  (the hive key) beside ``f1, f2, f3``, then ``LogisticRegression``;
- ``demo-xgboost``: an ``XGBClassifier`` (binary:logistic);
- ``demo-lightgbm``: an ``LGBMClassifier`` (binary);
- ``demo-catboost``: a ``CatBoostClassifier`` (Logloss);
- ``demo-pyfunc``: a custom ``mlflow.pyfunc.PythonModel`` returning P(y=1) from fixed weights.

Each model's signature names its input columns and types, so no ``--features`` is needed.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from tasks.errors import InputError

FEATURES = ["f1", "f2", "f3"]
#: name -> (what it is, the pip package its flavour needs)
EXAMPLES = {
    "demo-pipeline": "scikit-learn Pipeline: OneHotEncoder(region) + LogisticRegression",
    "demo-xgboost": "XGBClassifier, 100 trees of depth 3",
    "demo-lightgbm": "LGBMClassifier, 100 trees of 15 leaves",
    "demo-catboost": "CatBoostClassifier, 100 trees of depth 4",
    "demo-pyfunc": "a custom pyfunc: P(y=1) = σ(1.5·f1 − 2·f2 + 0.75·f3 + 0.25)",
}
#: what to pass instead, when --data holds other data
_REMEDY = (
    "the examples train on the demo data's columns f1, f2, f3, label and region (its hive key): pass its folder "
    "(data/demo, written by `bce-eval demo`) with --data."
)


def _training_frame(data: str, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The demo data's rows under ``data``: the features, the hive key ``region`` and the label;
    :class:`InputError` naming the folder when it holds no Parquet files or they lack those columns."""
    pattern = f"{data.rstrip('/')}/**/*.parquet"
    # the files Polars' glob reads (hidden ones too): with none, its scan fails with a ComputeError
    if not glob.glob(pattern, recursive=True, include_hidden=True):
        raise InputError(f"{data}: no Parquet files (*.parquet) in this folder; {_REMEDY}")
    scan = pl.scan_parquet(pattern, hive_partitioning=True)
    found = scan.collect_schema().names()
    missing = [c for c in (*FEATURES, label, "region") if c not in found]
    if missing:
        named = f"column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}"
        raise InputError(f"{data}: its Parquet files have no {named}; {_REMEDY}")
    frame = scan.collect()
    X = frame.select(*FEATURES, "region").to_pandas()
    return X, frame.get_column(label).to_numpy()


def _loggers(X: pd.DataFrame, y: np.ndarray) -> dict[str, Callable[[str], Any]]:
    """For each example, a call that fits it and logs it registered under the name given."""
    import mlflow.catboost
    import mlflow.lightgbm
    import mlflow.sklearn
    import mlflow.xgboost
    from catboost import CatBoostClassifier
    from lightgbm import LGBMClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder
    from xgboost import XGBClassifier

    num = X[FEATURES]

    def pipeline(name: str) -> Any:
        encode = ColumnTransformer(
            [("region", OneHotEncoder(handle_unknown="ignore"), ["region"])], remainder="passthrough"
        )
        model = make_pipeline(encode, LogisticRegression()).fit(X, y)
        return mlflow.sklearn.log_model(model, registered_model_name=name, **_log_kwargs(model, X, "scikit-learn"))

    def xgboost(name: str) -> Any:
        model = XGBClassifier(n_estimators=100, max_depth=3, n_jobs=2).fit(num, y)
        return mlflow.xgboost.log_model(
            model, registered_model_name=name, model_format="ubj", **_log_kwargs(model, num, "xgboost-cpu")
        )

    def lightgbm(name: str) -> Any:
        model = LGBMClassifier(n_estimators=100, num_leaves=15, verbose=-1).fit(num, y)
        return mlflow.lightgbm.log_model(model, registered_model_name=name, **_log_kwargs(model, num, "lightgbm"))

    def catboost(name: str) -> Any:
        model = CatBoostClassifier(
            iterations=100, depth=4, verbose=0, thread_count=2, random_seed=0, allow_writing_files=False
        ).fit(num, y)
        return mlflow.catboost.log_model(model, registered_model_name=name, **_log_kwargs(model, num, "catboost"))

    return {
        "demo-pipeline": pipeline,
        "demo-xgboost": xgboost,
        "demo-lightgbm": lightgbm,
        "demo-catboost": catboost,
        "demo-pyfunc": _pyfunc_logger(num),
    }


def _log_kwargs(model: Any, inputs: pd.DataFrame, package: str) -> dict[str, Any]:
    """What every example's ``log_model`` takes: its signature and input example, the package it needs."""
    from mlflow.models import infer_signature

    out = model.predict_proba(inputs) if hasattr(model, "predict_proba") else None
    return dict(
        name="model",
        signature=infer_signature(inputs.head(20), out[:20] if out is not None else None),
        input_example=inputs.head(5),
        pip_requirements=[f"{package}=={version(package)}"],
        await_registration_for=0,
    )


def _pyfunc_logger(num: pd.DataFrame) -> Callable[[str], Any]:
    """The custom pyfunc example's call (its class is defined in here: see ``FixedLogistic``)."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class FixedLogistic(mlflow.pyfunc.PythonModel):
        """A custom pyfunc: P(y=1) from fixed weights over f1, f2, f3 (the demo data's true model).

        Defined here so that cloudpickle stores it by value: the model loads without bce-eval."""

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
            z = model_input[["f1", "f2", "f3"]].to_numpy(dtype=np.float64) @ np.array([1.5, -2.0, 0.75]) + 0.25
            return 1.0 / (1.0 + np.exp(-z))

    def pyfunc(name: str) -> Any:
        kw = _log_kwargs(FixedLogistic(), num, "mlflow")
        kw["signature"] = infer_signature(num.head(20), np.zeros(20))
        return mlflow.pyfunc.log_model(python_model=FixedLogistic(), registered_model_name=name, **kw)

    return pyfunc


def register_example_models(
    data: str, tracking_uri: str, label: str = "label", alias: str = "champion"
) -> dict[str, str]:
    """Fit and register every example on ``data`` (the demo's layout); returns ``{name: version}``."""
    from tasks.tracking.adapter import MlflowTracker

    tracker = MlflowTracker(tracking_uri)
    X, y = _training_frame(data, label)
    versions = {}
    for name, log in _loggers(X, y).items():
        _, versions[name] = tracker.log_registered_model("bce-eval-example-models", name, log, name, alias)
    return versions
