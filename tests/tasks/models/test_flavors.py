"""Every model flavour, logged and registered with MLflow for real, evaluated by ``models:/name@alias``.

The reference is each model's own output, computed here without bce-eval: ``sklearn.metrics.log_loss``
on its probabilities (where they are not clipped), or the exact formula ``softplus(z) − y·z`` on
its margin (where they are: margins beyond ±40).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import log_loss

from flows.evaluate import PASS_STARTED, evaluate_flow
from flows.settings import EvaluateSettings
from tests.conftest import run_cli_in_process as run_cli
from tests.conftest import write_hive

REGIONS = {"north": (700, 0.0), "south": (500, 0.7), "east": (400, -0.6)}
COLOURS = np.array(["red", "green", "blue"])


def _frame(n: int, shift: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)
    c = rng.integers(0, 5, n)
    colour = COLOURS[rng.integers(0, 3, n)]
    z = 1.1 * a - 0.9 * b + 0.3 * c - 0.6 + np.where(colour == "red", 0.8, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return pl.DataFrame({"a": a, "b": b, "c": c, "colour": colour, "y": y})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_hive(tmp_path / "data", {r: _frame(n, s, i) for i, (r, (n, s)) in enumerate(REGIONS.items())})


def _read(root: Path) -> pd.DataFrame:
    return pl.scan_parquet(str(root / "**/*.parquet"), hive_partitioning=True).collect().to_pandas()


def _register(log, name: str) -> str:
    """Log with ``log(name)`` (a ``mlflow.<flavour>.log_model`` registering ``name``) and set @champion."""
    with mlflow.start_run():
        info = log(name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
    return f"models:/{name}@champion"


def _signature(X: pd.DataFrame):
    return mlflow.models.infer_signature(X.head(20))


# --- the models: (log call, its own probabilities of class 1 or margins on a frame) --------------


def _pipeline(df: pd.DataFrame):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = df[["a", "b", "colour"]]
    encode = ColumnTransformer([("colour", OneHotEncoder(), ["colour"])], remainder="passthrough")
    model = make_pipeline(encode, LogisticRegression()).fit(X, df["y"])
    log = lambda n: mlflow.sklearn.log_model(model, name="model", signature=_signature(X), registered_model_name=n)
    return log, lambda d: model.predict_proba(d[["a", "b", "colour"]])[:, 1], None


def _xgb_classifier(df: pd.DataFrame):
    from xgboost import XGBClassifier

    X = df[["a", "b", "c"]]
    model = XGBClassifier(n_estimators=40, max_depth=3).fit(X, df["y"])
    log = lambda n: mlflow.xgboost.log_model(model, name="model", signature=_signature(X), registered_model_name=n)
    return log, lambda d: model.predict_proba(d[["a", "b", "c"]])[:, 1], lambda d: _xgb_margin(model.get_booster(), d)


def _xgb_margin(booster, d: pd.DataFrame) -> np.ndarray:
    """The margin through XGBoost's DMatrix path (bce-eval uses inplace_predict)."""
    import xgboost as xgb

    matrix = xgb.DMatrix(d[["a", "b", "c"]].to_numpy(np.float64), feature_names=booster.feature_names)
    return booster.predict(matrix, output_margin=True).astype(np.float64)


def _xgb_booster(df: pd.DataFrame):
    import xgboost as xgb

    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(df[["a", "b", "c"]].to_numpy(), df["y"]), 30
    )
    log = lambda n: mlflow.xgboost.log_model(booster, name="model", registered_model_name=n)
    return log, lambda d: booster.predict(xgb.DMatrix(d[["a", "b", "c"]].to_numpy())), lambda d: _xgb_margin(booster, d)


def _lgbm_classifier(df: pd.DataFrame):
    from lightgbm import LGBMClassifier

    X = df[["a", "b", "c"]]
    model = LGBMClassifier(n_estimators=40, num_leaves=7, verbose=-1).fit(X, df["y"])
    log = lambda n: mlflow.lightgbm.log_model(model, name="model", signature=_signature(X), registered_model_name=n)
    return log, lambda d: model.predict_proba(d[["a", "b", "c"]])[:, 1], None


def _lgbm_booster(df: pd.DataFrame):
    import lightgbm as lgb

    # sigmoid 2: the logit is 2 × the raw score, P(y=1) = 1 / (1 + exp(−2·raw))
    params = {"objective": "binary", "sigmoid": 2.0, "num_leaves": 7, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(df[["a", "b", "c"]].to_numpy(), df["y"]), 30)
    log = lambda n: mlflow.lightgbm.log_model(booster, name="model", registered_model_name=n)
    return log, lambda d: booster.predict(d[["a", "b", "c"]].to_numpy()), None


def _catboost(df: pd.DataFrame):
    from catboost import CatBoostClassifier

    X = df[["a", "b", "c"]]
    model = CatBoostClassifier(iterations=40, depth=3, verbose=0, allow_writing_files=False, random_seed=0).fit(
        X, df["y"]
    )
    log = lambda n: mlflow.catboost.log_model(model, name="model", signature=_signature(X), registered_model_name=n)
    return log, lambda d: model.predict_proba(d[["a", "b", "c"]])[:, 1], None


class _TwoColumnProba(mlflow.pyfunc.PythonModel):
    """A custom pyfunc returning a frame of P(y=0), P(y=1)."""

    def predict(self, context, model_input, params=None):
        z = 0.9 * model_input["a"].to_numpy() - 0.7 * model_input["b"].to_numpy() - 0.2
        p = 1 / (1 + np.exp(-z))
        return pd.DataFrame({"0": 1 - p, "1": p})


def _pyfunc(df: pd.DataFrame):
    X = df[["a", "b"]]
    log = lambda n: mlflow.pyfunc.log_model(
        name="model", python_model=_TwoColumnProba(), signature=_signature(X), registered_model_name=n
    )
    return log, lambda d: _TwoColumnProba().predict(None, d)["1"].to_numpy(), None


MODELS = {
    "pipeline": _pipeline,
    "xgb-classifier": _xgb_classifier,
    "xgb-booster": _xgb_booster,
    "lgbm-classifier": _lgbm_classifier,
    "lgbm-booster": _lgbm_booster,
    "catboost": _catboost,
    "pyfunc": _pyfunc,
}
#: what the run says about how scores were obtained
METHODS = {
    "pipeline": ("sklearn", "Pipeline.decision_function"),
    "xgb-classifier": ("xgboost", "xgboost margin"),
    "xgb-booster": ("xgboost", "xgboost margin"),
    "lgbm-classifier": ("lightgbm", "lightgbm raw score"),
    "lgbm-booster": ("lightgbm", "× sigmoid 2"),
    "catboost": ("catboost", "RawFormulaVal"),
    "pyfunc": ("python_function", "read as P(y=1)"),
}


def _stable_loss(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z) - y * z


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_each_flavour_equals_its_own_probabilities_per_partition(kind, prefect_server, mlflow_uri, data):
    df = _read(data)
    log, proba, margin = MODELS[kind](df)
    uri = _register(log, f"m-{kind}")
    features = ["a", "b", "c"] if kind.endswith("booster") else []  # a raw booster has no column names
    ev = evaluate_flow(EvaluateSettings(data=str(data), label="y", model_uri=uri, features=features))
    by_region = {r["partition"].split("=")[1]: r for r in ev.table.iter_rows(named=True)}
    for region, part in [*df.groupby("region", observed=True), ("all", df)]:
        y = part["y"].to_numpy()
        p = proba(part)
        assert p.min() > 1e-12 and p.max() < 1 - 1e-12  # not clipped: log_loss is exact here
        expected = log_loss(y, p, labels=[0, 1])
        if margin is not None:
            # XGBoost's own probabilities are float32 (log_loss on them is off by ~1e-8): its margin,
            # whose sigmoid they are, gives the exact figure
            z = margin(part)
            np.testing.assert_allclose(1 / (1 + np.exp(-z)), p, atol=1e-6)
            assert abs(float(np.mean(_stable_loss(y, z))) - expected) < 1e-6
            expected = float(np.mean(_stable_loss(y, z)))
        got = ev.overall["bce"] if region == "all" else by_region[region]["bce"]
        assert got == pytest.approx(expected, abs=1e-9), (kind, region)
    tags = mlflow.MlflowClient().get_run(ev.run_id).data.tags
    flavour, method = METHODS[kind]
    assert tags["model_flavor"] == flavour and method in tags["score_method"]
    assert len(tags["model_digest"]) == 32 and tags["model_version"] == "1"


# --- margins beyond ±40: exact from the margin, where the probabilities are clipped ---------------


def _scaled_leaves(booster, factor: float):
    """The same trees with every leaf value times ``factor`` (margins far beyond ±40)."""
    import xgboost as xgb

    doc = json.loads(booster.save_raw("json"))
    for tree in doc["learner"]["gradient_booster"]["model"]["trees"]:
        for i, left in enumerate(tree["left_children"]):
            if left == -1:
                tree["split_conditions"][i] *= factor
                tree["base_weights"][i] *= factor
    scaled = xgb.Booster()
    scaled.load_model(bytearray(json.dumps(doc).encode()))
    return scaled


def test_margins_beyond_40_are_scored_exactly_not_clipped(prefect_server, mlflow_uri, data):
    import xgboost as xgb

    df = _read(data)
    X = df[["a", "b", "c"]].to_numpy()
    base = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 1.0}, xgb.DMatrix(X, df["y"]), 20)
    booster = _scaled_leaves(base, 20.0)
    z = booster.predict(xgb.DMatrix(X), output_margin=True).astype(np.float64)
    assert (np.abs(z) > 40).sum() > 200
    uri = _register(lambda n: mlflow.xgboost.log_model(booster, name="model", registered_model_name=n), "m-wide")
    ev = evaluate_flow(EvaluateSettings(data=str(data), label="y", model_uri=uri, features=["a", "b", "c"]))
    y = df["y"].to_numpy()
    exact = float(np.mean(_stable_loss(y, z)))
    assert ev.overall["bce"] == pytest.approx(exact, rel=1e-12)
    # the model's own probabilities round to 0 or 1 there: log_loss clips them and is far off
    clipped = log_loss(y, booster.predict(xgb.DMatrix(X)).astype(np.float64), labels=[0, 1])
    assert abs(clipped - exact) > 0.05
    for region, part in df.groupby("region", observed=True):
        zp = z[part.index.to_numpy()]
        row = ev.table.filter(pl.col("partition") == f"region={region}").row(0, named=True)
        assert row["bce"] == pytest.approx(float(np.mean(_stable_loss(part["y"].to_numpy(), zp))), rel=1e-12)


class _Logit(mlflow.pyfunc.PythonModel):
    """A pyfunc returning a logit, beyond ±40 for large |a|."""

    def predict(self, context, model_input, params=None):
        return 30.0 * model_input["a"].to_numpy()


def test_a_pyfunc_logit_with_score_kind_logit_is_exact(prefect_server, mlflow_uri, data, capsys):
    df = _read(data)
    X = df[["a", "b"]]
    uri = _register(
        lambda n: mlflow.pyfunc.log_model(
            name="model", python_model=_Logit(), signature=_signature(X), registered_model_name=n
        ),
        "m-logit",
    )
    code, out, err = run_cli(
        ["evaluate", str(data), "--label", "y", "--model-uri", uri, "--score-kind", "logit"], capsys
    )
    assert code == 0, err
    run = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("bce-evaluation").experiment_id])[0]
    exact = float(np.mean(_stable_loss(df["y"].to_numpy(), 30.0 * df["a"].to_numpy())))
    assert run.data.metrics["bce"] == pytest.approx(exact, rel=1e-12)
    assert "read as a logit" in run.data.tags["score_method"]


# --- bad models: exit 2, one line naming the model and what is wrong, before any data is read -----


def _bad_models(df: pd.DataFrame) -> dict:
    import lightgbm as lgb
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from xgboost import XGBClassifier, XGBRegressor

    X = df[["a", "b", "c"]]
    three = np.asarray(df["c"].to_numpy() % 3)

    class Labels(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return (model_input["a"].to_numpy() > 0).astype(np.int64)

    class Wide(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return 3.0 * model_input["a"].to_numpy()

    text_c = X.assign(c=X["c"].astype(str))
    return {
        "xgb-multiclass": (
            lambda n: mlflow.xgboost.log_model(
                XGBClassifier(n_estimators=3).fit(X, three),
                name="model",
                signature=_signature(X),
                registered_model_name=n,
            ),
            "has 3 classes",
        ),
        "lgbm-multiclass": (
            lambda n: mlflow.lightgbm.log_model(
                lgb.train(
                    {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(X.to_numpy(), three), 3
                ),
                name="model",
                registered_model_name=n,
            ),
            "LightGBM model is a multiclass model",
        ),
        "xgb-regressor": (
            lambda n: mlflow.xgboost.log_model(
                XGBRegressor(n_estimators=3).fit(X, df["a"]),
                name="model",
                signature=_signature(X),
                registered_model_name=n,
            ),
            "XGBRegressor is a regressor",
        ),
        "sklearn-regressor": (
            lambda n: mlflow.sklearn.log_model(
                LinearRegression().fit(X, df["a"]), name="model", signature=_signature(X), registered_model_name=n
            ),
            "LinearRegression is not a classifier",
        ),
        "pyfunc-labels": (
            lambda n: mlflow.pyfunc.log_model(
                name="model", python_model=Labels(), signature=_signature(X), registered_model_name=n
            ),
            "returns labels (0/1), not probabilities",
        ),
        "pyfunc-not-probability": (
            lambda n: mlflow.pyfunc.log_model(
                name="model", python_model=Wide(), signature=_signature(X), registered_model_name=n
            ),
            "returns values outside [0, 1]",
        ),
        "missing-column": (
            lambda n: mlflow.sklearn.log_model(
                LogisticRegression().fit(X.rename(columns={"c": "d"}), df["y"]),
                name="model",
                signature=_signature(X.rename(columns={"c": "d"})),
                registered_model_name=n,
            ),
            "no feature column 'd' (model models:/bad-missing-column@champion needs it)",
        ),
        "mistyped-column": (
            lambda n: mlflow.pyfunc.log_model(
                name="model", python_model=_TwoColumnProba(), signature=_signature(text_c), registered_model_name=n
            ),
            "feature column 'c' has type int64, but model models:/bad-mistyped-column@champion takes string there",
        ),
    }


def test_each_bad_model_is_refused_in_one_line_before_any_data_is_read(prefect_server, mlflow_uri, data, capsys):
    bad = _bad_models(_read(data))
    uris = {kind: _register(log, f"bad-{kind}") for kind, (log, _) in bad.items()}
    for kind, (_, message) in bad.items():
        code, out, err = run_cli(["evaluate", str(data), "--label", "y", "--model-uri", uris[kind]], capsys)
        assert code == 2, (kind, err)
        assert err[-1].startswith("bce-eval: error: ") and message in err[-1], (kind, err[-1])
        assert f"bad-{kind}" in err[-1] and "Traceback" not in out + "\n".join(err)
        assert PASS_STARTED not in out + "\n".join(err), kind  # refused before the pass
    assert mlflow.get_experiment_by_name("bce-evaluation") is None  # no run, not even a failed one


# --- compare an XGBoost champion with a LightGBM challenger, through the CLI ---------------------


def test_compare_xgboost_champion_with_lightgbm_challenger(prefect_server, mlflow_uri, data, capsys):
    df = _read(data)
    log_x, proba_x, margin_x = _xgb_classifier(df)
    log_l, proba_l, _ = _lgbm_classifier(df)
    champion, challenger = _register(log_x, "churn-xgb"), _register(log_l, "churn-lgbm")
    code, out, err = run_cli(
        ["compare", str(data), "--label", "y", "--champion", champion, "--challenger", challenger], capsys
    )
    assert code == 0, err
    # independent: the paired per-row difference of the two models' own losses
    y = df["y"].to_numpy()
    d = _stable_loss(y, _stable_logit(proba_l(df))) - _stable_loss(y, margin_x(df))
    mean, se = d.mean(), d.std(ddof=1) / np.sqrt(len(d))
    client = mlflow.MlflowClient()
    run = client.search_runs([mlflow.get_experiment_by_name("bce-comparison").experiment_id])[0]
    m = run.data.metrics
    assert m["bce_diff"] == pytest.approx(mean, abs=1e-9)
    assert m["bce_diff_low"] == pytest.approx(mean - 1.959963984540054 * se, abs=1e-9)
    assert m["bce_diff_high"] == pytest.approx(mean + 1.959963984540054 * se, abs=1e-9)
    assert (
        run.data.tags["champion.model_flavor"] == "xgboost" and run.data.tags["challenger.model_flavor"] == "lightgbm"
    )
    assert f"{m['bce_diff']:+.5f}" in out


def _stable_logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


# --- the cache knows a model by its artifacts ------------------------------------------------------


def test_the_cache_knows_a_model_by_its_registered_artifacts(prefect_server, mlflow_uri, data):
    df = _read(data)
    log, _, _ = _xgb_classifier(df)
    uri = _register(log, "m-cached")
    settings = EvaluateSettings(data=str(data), label="y", model_uri=uri)
    first, again = evaluate_flow(settings), evaluate_flow(settings)
    assert first.overall["partitions_computed"] == 3 and again.overall["partitions_reused"] == 3
    assert again.overall["bce"] == first.overall["bce"]
    # a new version (other trees) under the same alias: every partition is computed again
    from xgboost import XGBClassifier

    X = df[["a", "b", "c"]]
    other = XGBClassifier(n_estimators=7, max_depth=2).fit(X, df["y"])
    _register(
        lambda n: mlflow.xgboost.log_model(other, name="model", signature=_signature(X), registered_model_name=n),
        "m-cached",
    )
    new = evaluate_flow(settings)
    assert new.overall["partitions_reused"] == 0
    z = other.get_booster().inplace_predict(X.to_numpy(), predict_type="margin").astype(np.float64)
    assert new.overall["bce"] == pytest.approx(float(np.mean(_stable_loss(df["y"].to_numpy(), z))), abs=1e-9)


# --- on Dask worker processes: a booster travels to them and scores there --------------------------


def test_a_booster_scores_on_dask_worker_processes_as_locally(prefect_server, mlflow_uri, data):
    from distributed import LocalCluster

    from flows.evaluate import with_dask

    log, _, margin = _xgb_classifier(_read(data))
    settings = EvaluateSettings(
        data=str(data), label="y", model_uri=_register(log, "m-dask"), chunk_rows=500, cache=False
    )
    local = evaluate_flow(settings)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = settings.model_copy(update={"dask": cluster.scheduler_address})
        distributed = with_dask(remote)(remote)
    assert distributed.overall["bce"] == pytest.approx(local.overall["bce"], rel=1e-12)
    a, b = local.table.sort("partition"), distributed.table.sort("partition")
    np.testing.assert_allclose(b.get_column("bce").to_numpy(), a.get_column("bce").to_numpy(), rtol=1e-12, atol=0)
