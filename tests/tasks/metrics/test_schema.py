"""The metric schema is the one source of every sum and figure: the kernel's layout, the table,
the overall row, the cache and the baseline reader all follow it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from tasks.data.dataset import discover_dataset, group_files
from tasks.metrics import kernels
from tasks.metrics import schema as metrics
from tasks.metrics.reduce import reduce_chunk
from tasks.models.fitting import fit_logistic
from tasks.models.scoring import make_scorer
from tests.conftest import make_frame, write_hive
from tests.tasks.metrics.test_calibration_gap import calibration_sums


def _stable_losses(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def test_kernel_layout_is_the_schema_and_each_sum_lands_in_its_named_column(tmp_path: Path):
    assert (*metrics.SUM_COLUMNS, *metrics.CHECKS) == kernels.STATS
    df = make_frame(400, 5)
    df.write_parquet(tmp_path / "one.parquet")
    ds = discover_dataset(tmp_path / "one.parquet", "label", ["a", "b", "c"])
    X, y = df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy().astype(float)
    model = fit_logistic(X, y.astype(int))
    ((rec, _),) = [reduce_chunk(ds, make_scorer(model, ds.features), chunk) for chunk in group_files(ds, 10**9)]
    z = model.decision_function(X)
    p = 1 / (1 + np.exp(-z))
    loss = _stable_losses(z, y)
    expected = {
        "n_rows": len(y),
        "n_pos": y.sum(),
        "n_neg": (1 - y).sum(),
        "sum_w": len(y),
        "sum_w_sq": len(y),
        "sum_w_pos": y.sum(),
        "sum_loss": loss.sum(),
        "sum_loss_sq": (loss**2).sum(),
        "sum_loss_pos": loss[y == 1].sum(),
        "sum_correct": ((z > 0) == (y == 1)).sum(),
        "sum_brier": ((p - y) ** 2).sum(),
        "sum_p": p.sum(),
        "n_saturated": (np.abs(z) >= kernels.SATURATED_LOGIT).sum(),
        **calibration_sums(p, y, loss),
        # every label is known: no row is estimated
        **dict.fromkeys(("n_unlabelled", "sum_w_unlabelled", "sum_entropy_unlabelled", "sum_var_unlabelled"), 0.0),
    }
    assert set(expected) == set(metrics.SUM_COLUMNS)
    row = rec.row(0, named=True)
    for name, value in expected.items():
        assert row[name] == pytest.approx(float(value), rel=1e-12), name
    for s in metrics.SUMS:
        assert rec.schema[s.name] == s.dtype


def test_interval_helper_states_and_uses_the_sample_variance():
    x = np.array([0.1, 0.4, 0.35, 2.0, 0.05])
    se = metrics.standard_error(x.sum(), (x**2).sum(), len(x))
    assert se == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=1e-12)
    low, high = metrics.normal_interval(x.mean(), se)
    assert (high - low) / 2 == pytest.approx(1.959963984540054 * se, rel=1e-15)
    frame = pl.DataFrame({"s": [x.sum()], "q": [(x**2).sum()], "n": [float(len(x))]})
    assert frame.select(metrics.standard_error(pl.col("s"), pl.col("q"), pl.col("n"))).item() == pytest.approx(
        se, rel=1e-12
    )
    assert math.isnan(metrics.standard_error(1.0, 1.0, 1))


@pytest.fixture
def throwaway_metric(monkeypatch):
    """A new figure added through the schema alone: the root mean square of the rows' losses."""
    figure = metrics.Figure(
        "loss_rms",
        "RMS loss",
        lambda: (pl.col("sum_loss_sq") / pl.col("n_rows").cast(pl.Float64)).sqrt(),
        "√(Σ loss² / n)",
    )
    monkeypatch.setattr(metrics, "FIGURES", (*metrics.FIGURES, figure))
    return figure.name


def test_a_metric_added_to_the_schema_shows_everywhere(throwaway_metric, prefect_server, mlflow_uri, tmp_path: Path):
    from flows.evaluate import evaluate_flow
    from flows.settings import EvaluateSettings
    from tasks.review.results import baseline_from
    from tasks.tracking.history import read_run_table

    parts = {"north": make_frame(300, 1), "south": make_frame(200, 2, shift=0.5, noise=0.3)}
    root = write_hive(tmp_path / "hive", parts)
    first = evaluate_flow(EvaluateSettings(data=str(root), label="label", features=["a", "b", "c"]))
    model = mlflow.sklearn.load_model(f"runs:/{first.run_id}/model")
    expected, all_losses = {}, []
    for region, df in parts.items():
        z = model.decision_function(df.select("a", "b", "c").to_numpy())
        losses = _stable_losses(z, df.get_column("label").to_numpy().astype(float))
        expected[region] = math.sqrt(np.mean(losses**2))
        all_losses.append(losses)
    overall = math.sqrt(np.mean(np.concatenate(all_losses) ** 2))

    def check(ev) -> None:
        got = dict(zip(ev.table.get_column("region").to_list(), ev.table.get_column(throwaway_metric).to_list()))
        assert got == pytest.approx(expected, rel=1e-12)  # the table
        assert ev.overall[throwaway_metric] == pytest.approx(overall, rel=1e-12)  # the overall row

    check(first)
    # the cache keeps sums, not figures: a cached rerun derives the new figure from them
    again = evaluate_flow(EvaluateSettings(data=str(root), label="label", model_uri=f"runs:/{first.run_id}/model"))
    assert again.overall["partitions_reused"] == 2
    check(again)
    run = mlflow.MlflowClient().get_run(again.run_id)
    assert run.data.metrics[throwaway_metric] == pytest.approx(overall, rel=1e-12)  # logged overall
    local = mlflow.artifacts.download_artifacts(run_id=again.run_id, artifact_path="bce_by_partition.json")
    doc = json.loads(Path(local).read_text())
    assert throwaway_metric in doc["columns"]  # the logged table
    # the baseline reader takes it for a value, not for a partition key
    baseline = baseline_from(
        again.run_id, *read_run_table(mlflow_uri, again.run_id, "bce_by_partition.json", "--baseline-run")
    )
    assert set(baseline["partitions"]) == {"region=north", "region=south"}
