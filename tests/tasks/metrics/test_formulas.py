"""The interval of a weighted mean: reliability weights over the effective n, against numpy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.metrics.formulas import Z95, normal_interval, per_weight, weighted_standard_error


def test_the_weighted_standard_error_is_the_reliability_weighted_variance_over_the_effective_n():
    rng = np.random.default_rng(5)
    x, w = rng.gamma(2.0, 0.3, 500), rng.exponential(1.0, 500)
    mean = np.average(x, weights=w)
    v1, v2 = w.sum(), (w**2).sum()
    var = np.sum(w * (x - mean) ** 2) / (v1 - v2 / v1)
    want = np.sqrt(var / (v1**2 / v2))  # s² / n_eff, n_eff = (Σw)² / Σw²
    frame = pl.DataFrame({"sx": [np.sum(w * x)], "sq": [np.sum(w * x * x)], "sw": [v1], "sw2": [v2], "sum_w": [v1]})
    got = frame.select(weighted_standard_error(pl.col("sx"), pl.col("sq"), pl.col("sw"), pl.col("sw2"))).item()
    assert got == pytest.approx(want, rel=1e-10)
    assert frame.select(per_weight("sx")).item() == pytest.approx(mean, rel=1e-12)
    low, high = normal_interval(mean, got)
    assert high - mean == pytest.approx(Z95 * want, rel=1e-10) and mean - low == pytest.approx(Z95 * want, rel=1e-10)
    ones = np.ones_like(x)  # unit weights: the sample variance over n
    frame = pl.DataFrame({"sx": [x.sum()], "sq": [(x * x).sum()], "sw": [ones.sum()], "sw2": [ones.sum()]})
    got = frame.select(weighted_standard_error(pl.col("sx"), pl.col("sq"), pl.col("sw"), pl.col("sw2"))).item()
    assert got == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)), rel=1e-10)
