"""The benchmark's own arithmetic and contenders: Amdahl's law, the scale model, and the in-process
contenders computing the same BCE as an independent reference (on a small dataset)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flows.bench.run import _amdahl, projected_ratio, write_dataset
from flows.bench.scale import CHUNK_ROWS, project


def test_amdahl_recovers_the_serial_fraction_it_was_built_from():
    t1, f, n = 12.0, 0.2, 2
    tn = t1 * (f + (1 - f) / n)
    law = _amdahl(t1, tn, n)
    assert law["serial_fraction"] == pytest.approx(f)
    assert law["t16"] == pytest.approx(t1 * (f + (1 - f) / 16))
    assert law["t64"] == pytest.approx(t1 * (f + (1 - f) / 64))
    # slower with more threads (contention): all serial, never a negative parallel share
    assert _amdahl(10.0, 11.0, 2)["serial_fraction"] == 1.0


def test_the_projected_ratio_adds_the_pass_to_the_query_at_its_measured_ratio():
    # a query 1.1x the floor, and a pass of 0.5 ns/row against a floor of 5 ns/row at 16 cores
    assert projected_ratio(1.1, 0.5, 5.0) == pytest.approx(1.2)
    # a pass that costs nothing leaves the query's own ratio; a slower floor dilutes the pass
    assert projected_ratio(1.05, 0.0, 5.0) == pytest.approx(1.05)
    assert projected_ratio(1.05, 0.5, 10.0) < projected_ratio(1.05, 0.5, 5.0)


def test_the_scale_model_adds_fixed_per_row_per_partition_and_per_task_costs():
    costs = {"fixed_s": 8.0, "row_s": 50e-9, "partition_s": 150e-6, "task_s": 0.07}
    rows, parts = 1e9, 1e5
    expected = 8.0 + (rows * 50e-9 + parts * 150e-6 + math.ceil(rows / CHUNK_ROWS) * 0.07) / 64
    assert project(costs, rows, parts, 64) == pytest.approx(expected)
    assert project(costs, rows, parts, 8) > project(costs, rows, parts, 64) > costs["fixed_s"]


def _reference_bce(root, w: np.ndarray, b: float) -> float:
    """The stable BCE of the logistic model (w, b) on every row, summed exactly (fsum)."""
    import polars as pl

    from flows.bench.hot import FEATURES

    df = pl.read_parquet(root / "**" / "*.parquet")
    z = df.select(FEATURES).to_numpy() @ w + b
    y = df.get_column("label").to_numpy().astype(float)
    return math.fsum((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).tolist()) / len(z)


def test_the_contenders_compute_the_same_bce_as_a_reference(tmp_path):
    from flows.bench import hot as bench_hot

    root = write_dataset(tmp_path / "d", 30_000, 3, seed=5)
    model = bench_hot._model(root)
    w, b = model.coef_.ravel(), float(model.intercept_[0])
    reference = _reference_bce(root, w, b)
    assert bench_hot.bce_eval_bce(root, model) == pytest.approx(reference, rel=1e-12)
    assert bench_hot.hand_written_bce(root, w, b) == pytest.approx(reference, rel=1e-12)
    assert bench_hot.floor_scan(root) == 30_000
    assert bench_hot.decode_into_memory(root) == 30_000
    assert bench_hot.bce_eval_scan(root, model) == 30_000


def test_duckdb_computes_the_same_bce_as_a_reference(tmp_path):
    pytest.importorskip("duckdb", reason="a benchmark-only dependency: make bench installs it")
    from flows.bench import hot as bench_hot

    root = write_dataset(tmp_path / "d", 20_000, 2, seed=6)
    model = bench_hot._model(root)
    w, b = model.coef_.ravel(), float(model.intercept_[0])
    reference = _reference_bce(root, w, b)
    assert bench_hot.duckdb_bce(root, w, b, 2) == pytest.approx(reference, rel=1e-12)


def test_the_pass_in_the_flow_is_timed_on_every_row_once(tmp_path):
    from flows.bench import hot as bench_hot
    from tasks.metrics import lanes as parallel_pass

    root = write_dataset(tmp_path / "d", 30_000, 3, seed=7)
    model = bench_hot._model(root)
    run = parallel_pass._Lane.run
    seconds, rows = bench_hot.lane_time(root, model)
    assert rows == 30_000  # each row in exactly one lane's share
    assert 0 < seconds < 30.0
    assert parallel_pass._Lane.run is run  # the timing wrapper is gone: later passes run unwrapped
