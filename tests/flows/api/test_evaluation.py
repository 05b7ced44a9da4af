"""The Python API (``flows.api.evaluate``) on every kind of data and model it takes, against scikit-learn."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, d2_log_loss_score, log_loss

from flows.api import BceEvaluation, evaluate
from tasks.errors import InputError
from tests.conftest import REPO


def _rows(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    p_true = 1 / (1 + np.exp(-(0.8 * a - 1.1 * b + 0.2)))
    return pd.DataFrame(
        {
            "a": a,
            "b": b,
            "y": (rng.uniform(size=n) < p_true).astype(int),
            "region": rng.choice(["eu", "us", "apac"], n),
            "age": rng.uniform(15, 80, n),
            "w": rng.exponential(1.0, n),
            "p": np.clip(p_true + rng.normal(0, 0.05, n), 0.01, 0.99),
        }
    )


def test_slices_and_weights_equal_scikit_learn_per_slice_and_overall():
    rows = _rows()
    r = evaluate(pl.from_pandas(rows), label="y", model="p", slices=["region", "age:30,60"], weights="w")
    y, p, w = rows["y"], rows["p"], rows["w"]
    assert r.bce == pytest.approx(log_loss(y, p, sample_weight=w), rel=1e-12)
    assert r.overall["brier"] == pytest.approx(brier_score_loss(y, p, sample_weight=w), rel=1e-12)
    assert r.overall["d2_log_loss"] == pytest.approx(d2_log_loss_score(y, p, sample_weight=w), rel=1e-12)
    table = r.slices["region"]
    assert isinstance(table, pl.DataFrame) and table.height == 3
    for region, g in rows.groupby("region"):
        row = table.filter(pl.col("region") == region).row(0, named=True)
        assert row["n_rows"] == len(g)
        assert row["bce"] == pytest.approx(log_loss(g["y"], g["p"], sample_weight=g["w"], labels=[0, 1]), rel=1e-12)
    ages = r.slices["age_30_60_"]
    young = rows[rows["age"] < 30]
    (row,) = ages.filter(pl.col("age[30,60]") == "< 30").to_dicts()
    assert row["bce"] == pytest.approx(log_loss(young["y"], young["p"], sample_weight=young["w"]), rel=1e-12)
    gap = r.gaps["region"].filter(pl.col("figure") == "bce").row(0, named=True)
    per_slice = [log_loss(g["y"], g["p"], sample_weight=g["w"]) for _, g in rows.groupby("region")]
    assert gap["difference"] == pytest.approx(max(per_slice) - min(per_slice), rel=1e-9)


def test_a_path_a_polars_frame_a_lazy_frame_and_a_pandas_frame_give_the_same_bits(tmp_path):
    rows = _rows()
    path = tmp_path / "rows.parquet"
    pl.from_pandas(rows).write_parquet(path)
    kw = dict(label="y", features=["a", "b"], slices=["region"])
    results = [evaluate(data, **kw) for data in (str(path), pl.read_parquet(path), pl.scan_parquet(path), rows)]
    first = results[0]
    for other in results[1:]:
        assert other.overall["bce"] == first.overall["bce"]
        assert other.slices["region"].equals(first.slices["region"])
    # the fitted model is scikit-learn's LogisticRegression on the same rows
    fitted = LogisticRegression().fit(rows[["a", "b"]].to_numpy(), rows["y"])
    want = log_loss(rows["y"], fitted.predict_proba(rows[["a", "b"]].to_numpy())[:, 1])
    assert first.bce == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("library", ["sklearn", "xgboost", "lightgbm"])
def test_a_fitted_model_object_is_scored_as_its_library_scores_it(library):
    rows = _rows(2000, seed=8)
    X, y = rows[["a", "b"]], rows["y"]
    if library == "sklearn":
        model = LogisticRegression().fit(X, y)
        p = model.predict_proba(X)[:, 1]
    elif library == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(X, y)
        margin = model.get_booster().inplace_predict(X.to_numpy(), predict_type="margin")
        p = 1 / (1 + np.exp(-margin.astype(np.float64)))
    else:
        import lightgbm as lgb

        model = lgb.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, y)
        raw = model.predict(X, raw_score=True)
        p = 1 / (1 + np.exp(-raw))
    r = evaluate(rows, label="y", model=model, slices=["region"])  # features: the model's own names
    assert r.bce == pytest.approx(log_loss(y, p), rel=1e-9)
    for region, g in rows.groupby("region"):
        got = r.slices["region"].filter(pl.col("region") == region)["bce"][0]
        assert got == pytest.approx(log_loss(g["y"], p[g.index]), rel=1e-9)


def test_gates_decide_and_a_gate_that_needs_earlier_runs_is_refused():
    rows = _rows()
    bces = {k: log_loss(g["y"], g["p"]) for k, g in rows.groupby("region")}
    bound = (max(bces.values()) + min(bces.values())) / 2
    r = evaluate(rows, label="y", model="p", slices=["region"], gates=[f"bce <= {bound} per slice on point"])
    verdicts = dict(r.slices["region"].select("region", "verdict").iter_rows())
    assert {k for k, v in verdicts.items() if v == "failed"} == {k for k, v in bces.items() if v > bound}
    assert not r.passed and "region" in r.gate.message
    assert evaluate(rows, label="y", model="p", gates=[f"bce <= {log_loss(rows['y'], rows['p']) + 0.01}"]).passed
    with pytest.raises(InputError, match="earlier runs"):
        evaluate(rows, label="y", model="p", gates=["bce drift <= 3"])


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        (dict(label="nope", model="p"), "data (the DataFrame): no label column 'nope'"),
        (dict(label="y", model="p", slices=["age:60,30"]), "--slice"),
        (dict(label="y", model="p", weights="region"), "region"),
        (dict(label="y", model="no_such_column"), "no_such_column"),
        (dict(label="y", model=object()), "object"),
        (dict(label="y", model="p", fdr=2.0), "--fdr"),
    ],
)
def test_bad_input_raises_one_line_value_error_not_system_exit(kwargs, said):
    with pytest.raises(ValueError) as info:
        evaluate(_rows(200), **kwargs)
    assert isinstance(info.value, InputError)
    message = str(info.value)
    assert said in message and "\n" not in message and "bce-eval-" not in message  # no temporary path


def test_the_result_renders_the_report_inline_and_reads_as_text():
    rows = _rows(500)
    r = evaluate(rows, label="y", model="p", slices=["region"])
    assert isinstance(r, BceEvaluation)
    page = r._repr_html_()
    assert page.startswith("<iframe srcdoc=") and "BCE by slice of region" in r.report_html
    assert "&lt;h2&gt;By partition&lt;/h2&gt;" in page  # the report, escaped into the frame
    assert {"plots/slices/bce_by_region.png"} <= set(r.figures())
    assert f"{log_loss(rows['y'], rows['p']):.6f}" in str(r)


def test_importing_the_api_loads_neither_prefect_mlflow_nor_matplotlib():
    """And its import time against ``import sklearn.metrics``, each in a fresh interpreter (best of 3)."""
    code = (
        "import sys, time; t = time.perf_counter(); import {m}; d = time.perf_counter() - t; "
        "print(d, *[n in sys.modules for n in ('prefect', 'mlflow', 'matplotlib')])"
    )

    def timed(module: str) -> tuple[float, list[str]]:
        runs = [
            subprocess.run([sys.executable, "-c", code.format(m=module)], capture_output=True, text=True, cwd=REPO)
            for _ in range(3)
        ]
        outs = [r.stdout.split() for r in runs]
        return min(float(o[0]) for o in outs), outs[0][1:]

    api, loaded = timed("flows.api")
    sklearn, _ = timed("sklearn.metrics")
    assert loaded == ["False", "False", "False"], loaded
    print(f"import flows.api {api:.3f} s, import sklearn.metrics {sklearn:.3f} s ({api / sklearn:.2f}x)")
    assert math.isfinite(api) and api < 5 * sklearn


def test_the_notebook_example_runs(monkeypatch):
    """docs/notebook.ipynb's cells, run in order as plain Python in docs/ (where Jupyter starts its kernel)."""
    import json

    monkeypatch.chdir(REPO / "docs")
    notebook = json.loads((REPO / "docs" / "notebook.ipynb").read_text())
    source = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    scope: dict = {}
    exec(compile(source, "notebook.ipynb", "exec"), scope)  # noqa: S102 - the shipped example, as a user runs it
    results = [v for v in scope.values() if isinstance(v, BceEvaluation)]
    assert results and results[0]._repr_html_().startswith("<iframe")
    events = pl.read_parquet(REPO / "data" / "events.parquet")
    fitted = LogisticRegression().fit(events.select("a", "b").to_numpy(), events["clicked"].to_numpy())
    p = fitted.predict_proba(events.select("a", "b").to_numpy())[:, 1]
    assert results[0].bce == pytest.approx(log_loss(events["clicked"], p, sample_weight=events["weight"]), rel=1e-9)


def test_a_slicing_on_a_hive_key_is_a_table_of_its_own():
    """``--slice region`` where region is the hive key: every slicing gets its table, even one of partition keys."""
    demo = pl.read_parquet(REPO / "data" / "demo", hive_partitioning=True).to_pandas()
    r = evaluate(str(REPO / "data" / "demo"), label="label", model=None, features=["f1", "f2", "f3"], slices=["region"])
    fitted = LogisticRegression().fit(demo[["f1", "f2", "f3"]].to_numpy(), demo["label"])
    p = fitted.predict_proba(demo[["f1", "f2", "f3"]].to_numpy())[:, 1]
    table = r.slices["region"]
    assert table.height == demo["region"].nunique()
    for region, g in demo.groupby("region"):
        got = table.filter(pl.col("region") == region)["bce"][0]
        assert got == pytest.approx(log_loss(g["label"], p[g.index], labels=[0, 1]), rel=1e-9)
        assert got == r.table.filter(pl.col("region") == region)["bce"][0]  # the same sums, the same bits
