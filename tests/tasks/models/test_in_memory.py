"""A model already in memory: its flavour, its features and its checks, as a logged model of its flavour gets them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from tasks.errors import InputError
from tasks.models.in_memory import flavor_of_object, object_features, object_scorer


def _xy(n: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"u": rng.normal(size=n), "v": rng.normal(size=n)})
    return X, (X["u"] + rng.normal(size=n) > 0).astype(int).to_numpy()


def test_each_library_gets_its_own_flavour_and_the_names_it_was_trained_on():
    import lightgbm as lgb
    import xgboost as xgb

    X, y = _xy()
    models = {
        "sklearn": LogisticRegression().fit(X, y),
        "xgboost": xgb.XGBClassifier(n_estimators=5).fit(X, y),
        "lightgbm": lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y),
    }
    for name, model in models.items():
        assert flavor_of_object(model).name == name
        assert object_features(model) == ["u", "v"], name
    assert object_features(LogisticRegression().fit(X.to_numpy(), y)) == []  # fitted on a matrix: no names


def test_the_scorer_scores_as_the_library_does():
    import polars as pl
    import xgboost as xgb

    X, y = _xy()
    model = xgb.XGBClassifier(n_estimators=5).fit(X, y)
    scorer = object_scorer(model, ["u", "v"])
    margin = model.get_booster().inplace_predict(X.to_numpy(), predict_type="margin")
    assert scorer.kind == "logit"
    np.testing.assert_allclose(scorer.score_frame(pl.from_pandas(X)), margin, rtol=1e-6)


def test_what_is_not_a_binary_classifier_is_refused_in_one_line():
    X, y = _xy()
    with pytest.raises(InputError, match="object is not a classifier"):
        flavor_of_object(LinearRegression().fit(X, y))
    with pytest.raises(InputError, match="3 classes"):
        object_scorer(LogisticRegression().fit(X, np.arange(len(y)) % 3), ["u", "v"])
    with pytest.raises(InputError, match="expected a fitted model object"):
        object_scorer("models:/x/1", ["u", "v"])
