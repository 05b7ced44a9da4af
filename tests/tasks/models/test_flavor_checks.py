"""tasks/models/flavors.py without MLflow: small in-memory boosters are scored by their margin as
the libraries compute it (σ(margin) is their own ``predict_proba``), models that are not binary
0/1 classifiers are refused in one line naming the model, and a pyfunc's output is read as P(y=1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
import xgboost as xgb
from lightgbm import LGBMClassifier, LGBMRegressor
from scipy.special import expit

from tasks.errors import InputError
from tasks.models.flavors import LightGBMRaw, PyfuncOutput, XGBoostMargin, class1_scores

URI = "models:/churn@champion"


def _data(n: int = 400, classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    z = X @ np.array([1.5, -1.0, 0.5])
    y = np.digitize(z + rng.normal(scale=0.5, size=n), np.quantile(z, np.linspace(0, 1, classes + 1)[1:-1]))
    return X, y


# --- class1_scores ------------------------------------------------------------------------------


def test_class1_scores_of_one_and_two_columns():
    p = np.array([0.1, 0.7, 0.4])
    assert class1_scores(p, URI).tolist() == p.tolist()
    assert class1_scores([0.1, 0.7, 0.4], URI).tolist() == p.tolist()
    assert class1_scores(p.reshape(-1, 1), URI).tolist() == p.tolist()
    assert class1_scores(np.c_[1 - p, p], URI).tolist() == p.tolist()
    assert class1_scores(pd.DataFrame({"0": 1 - p, "1": p}), URI).tolist() == p.tolist()
    assert class1_scores(pd.Series(p), URI).tolist() == p.tolist()
    assert class1_scores(np.array([1, 0, 1], dtype=np.int64), URI).dtype == np.float64


@pytest.mark.parametrize(
    "output, said",
    [
        (np.zeros((4, 3)), "returns 3 columns"),
        (np.zeros((2, 2, 2)), r"returns \(2, 2, 2\) columns"),
        (np.array(["a", "b"]), "returns <U1 values, not numbers"),
    ],
)
def test_class1_scores_of_other_shapes_and_types_are_refused(output, said):
    with pytest.raises(InputError, match=rf"^model {URI}: its predict {said}") as err:
        class1_scores(output, URI)
    assert "\n" not in str(err.value)


class _Predicts:
    def __init__(self, output: np.ndarray) -> None:
        self.output = output

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.output[: len(X)]


def test_a_pyfunc_returning_labels_or_logits_as_probabilities_is_refused_on_a_sample():
    sample = pl.DataFrame({"a": [1.0, 2.0, 3.0]})
    PyfuncOutput(_Predicts(np.array([0.2, 0.9, 0.5])), "probability", URI).probe(sample)
    with pytest.raises(InputError, match=rf"^model {URI}: its predict returns labels \(0/1\), not probabilities"):
        PyfuncOutput(_Predicts(np.array([0, 1, 1])), "probability", URI).probe(sample)
    with pytest.raises(
        InputError, match=r"returns values outside \[0, 1\] \(from -2 to 3\.5\), not probabilities; if they are logits"
    ):
        PyfuncOutput(_Predicts(np.array([-2.0, 3.5, 0.5])), "probability", URI).probe(sample)
    PyfuncOutput(_Predicts(np.array([-2.0, 3.5, 0.5])), "logit", URI).probe(sample)  # logits may be anything finite


# --- XGBoost --------------------------------------------------------------------------------------


def test_xgboost_margin_equals_the_boosters_margin_and_its_sigmoid_predict_proba():
    X, y = _data()
    clf = xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1).fit(X, y)
    model = XGBoostMargin.of(clf.get_booster(), URI)
    assert model.kind == "logit" and model.objective == "binary:logistic"
    margin = model.score(X)
    reference = clf.get_booster().predict(xgb.DMatrix(X), output_margin=True)
    np.testing.assert_array_equal(margin, reference.astype(np.float64))
    np.testing.assert_allclose(expit(margin), clf.predict_proba(X)[:, 1], rtol=1e-6)


def test_xgboost_margin_stops_at_the_best_iteration_as_predict_proba_does():
    X, y = _data(600, seed=1)
    clf = xgb.XGBClassifier(n_estimators=200, max_depth=4, learning_rate=0.5, early_stopping_rounds=3, n_jobs=1)
    clf.fit(X[:400], y[:400], eval_set=[(X[400:], y[400:])], verbose=False)
    assert clf.best_iteration < 199  # stopped early: trees after the best one exist but do not count
    model = XGBoostMargin.of(clf.get_booster(), URI)
    np.testing.assert_allclose(expit(model.score(X)), clf.predict_proba(X)[:, 1], rtol=1e-6)
    all_trees = clf.get_booster().predict(xgb.DMatrix(X), output_margin=True, iteration_range=(0, 0))
    assert not np.allclose(model.score(X), all_trees)


def test_xgboost_scorer_checks_the_number_of_features():
    X, y = _data()
    model = XGBoostMargin.of(xgb.XGBClassifier(n_estimators=2, n_jobs=1).fit(X, y).get_booster(), URI)
    assert model.scorer(("a", "b", "c"), "id").kind == "logit"
    with pytest.raises(
        InputError, match=rf"^model {URI}: the XGBoost model takes 3 features but 2 were given \(a, b\)"
    ):
        model.scorer(("a", "b"), "id")


@pytest.mark.parametrize(
    "make, what",
    [
        (
            lambda X, y: xgb.XGBClassifier(n_estimators=2, n_jobs=1).fit(X, y),
            "a multiclass model (objective multi:softprob)",
        ),
        (lambda X, y: xgb.XGBRegressor(n_estimators=2, n_jobs=1).fit(X, y), "a regressor (objective reg:squarederror)"),
        (
            lambda X, y: xgb.XGBRanker(n_estimators=2, n_jobs=1).fit(X, y, qid=np.repeat(np.arange(30), 10)),
            "not a binary logistic model (objective rank:ndcg)",
        ),
    ],
    ids=["multiclass", "regressor", "ranker"],
)
def test_an_xgboost_model_that_is_not_binary_logistic_is_refused_naming_the_model(make, what):
    X, y = _data(300, classes=3)
    with pytest.raises(InputError) as err:
        XGBoostMargin.of(make(X, y).get_booster(), URI)
    assert str(err.value) == (
        f"model {URI}: the XGBoost model is {what}; "
        "BCE needs a binary classifier trained with objective binary:logistic on 0/1 labels."
    )


# --- LightGBM -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigmoid", [1.0, 0.4])
def test_lightgbm_raw_score_times_sigmoid_is_the_logit_of_predict_proba(sigmoid):
    X, y = _data()
    clf = LGBMClassifier(n_estimators=20, num_leaves=7, sigmoid=sigmoid, verbose=-1, n_jobs=1).fit(X, y)
    model = LightGBMRaw.of(clf.booster_, URI)
    assert (model.kind, model.objective, model.sigmoid) == ("logit", "binary", sigmoid)
    score = model.score(X)
    np.testing.assert_array_equal(score, clf.booster_.predict(X, raw_score=True) * sigmoid)
    np.testing.assert_allclose(expit(score), clf.predict_proba(X)[:, 1], rtol=1e-12, atol=1e-15)
    with pytest.raises(InputError, match=rf"^model {URI}: the LightGBM model takes 3 features but 4 were given"):
        model.scorer(("a", "b", "c", "d"), "id")


def test_lightgbm_names_from_a_frame_are_checked():
    X, y = _data()
    frame = pd.DataFrame(X, columns=["x1", "x2", "x3"])
    model = LightGBMRaw.of(LGBMClassifier(n_estimators=2, verbose=-1, n_jobs=1).fit(frame, y).booster_, URI)
    assert model.scorer(("x1", "x2", "x3"), "id").features == ("x1", "x2", "x3")
    with pytest.raises(
        InputError, match=r"was trained on columns \['x1', 'x2', 'x3'\] but the evaluation gives \['x2', 'x1', 'x3'\]"
    ):
        model.scorer(("x2", "x1", "x3"), "id")


@pytest.mark.parametrize(
    "make, what",
    [
        (
            lambda X, y: LGBMClassifier(n_estimators=2, verbose=-1, n_jobs=1).fit(X, y),
            "a multiclass model (objective multiclass)",
        ),
        (
            lambda X, y: LGBMRegressor(n_estimators=2, verbose=-1, n_jobs=1).fit(X, y),
            "a regressor (objective regression)",
        ),
    ],
    ids=["multiclass", "regressor"],
)
def test_a_lightgbm_model_that_is_not_binary_is_refused_naming_the_model(make, what):
    X, y = _data(300, classes=3)
    with pytest.raises(InputError) as err:
        LightGBMRaw.of(make(X, y).booster_, URI)
    assert str(err.value) == (
        f"model {URI}: the LightGBM model is {what}; "
        "BCE needs a binary classifier trained with objective binary on 0/1 labels."
    )
