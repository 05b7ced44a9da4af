"""The expected calibration error over equal-mass bins: against numpy per partition, per slice and overall, weighted
and unweighted, on the plain pass, the sliced pass and the pass of many cells; close to the usual quantile-binned
ECE; its bins hold about equal weight; gateable; drawn on the reliability diagram and said in the terminal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from flows.api import evaluate
from tasks.metrics.auc import HIST_BINS
from tasks.metrics.calibration import ECE_EQUAL_MASS, MASS_BINS, reliability_points
from tasks.review.summary import calibration_line


def _rows(n: int, seed: int, scale: float = 1.0, n_parts: int = 3) -> pd.DataFrame:
    """Labels drawn from the model's own probabilities; ``scale`` multiplies the logits it reports."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(int)
    return pd.DataFrame(
        {
            "z": z * scale,
            "y": y,
            "part": rng.choice([f"p{i}" for i in range(n_parts)], n),
            "w": rng.exponential(1.0, n),
            "g": rng.choice(["a", "b", "c"], n),
            "h": rng.integers(0, 150, n),  # 150 values × 3 partitions: more cells than dense histograms are kept for
        }
    )


def _mass_of_rows(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each row's equal-mass bin, from the rows themselves: its score bin's weight below, over the total."""
    b = np.minimum((p * HIST_BINS).astype(np.int64), HIST_BINS - 1)
    dense = np.bincount(b, weights=w, minlength=HIST_BINS)
    below = np.cumsum(dense[::-1])[::-1]  # weight at or above each score bin
    total = below[0]
    return np.minimum((MASS_BINS * (total - below) / total).astype(np.int64), MASS_BINS - 1)[b]


def _ece_equal_mass(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Σ over the equal-mass bins of (W_k / W)·|weighted mean p − weighted mean y| (the usual form, per bin means)."""
    mass = _mass_of_rows(p, w)
    total = 0.0
    for k in range(MASS_BINS):
        m = mass == k
        if w[m].sum() > 0:
            gap = abs(np.average(p[m], weights=w[m]) - np.average(y[m], weights=w[m]))
            total += w[m].sum() / w.sum() * gap
    return total


@pytest.mark.parametrize("weighted", [False, True], ids=["counts", "weights"])
@pytest.mark.parametrize("slicing", [None, "g", "h"], ids=["plain", "sliced", "many-cells"])
def test_ece_over_equal_mass_bins_equals_numpy_per_partition_per_slice_and_overall(weighted, slicing):
    rows = _rows(30_000, seed=21, scale=1.8)  # over-confident: the gaps are far from 0
    r = evaluate(
        rows,
        label="y",
        model="z",
        score_kind="logit",
        partition_by=["part"],
        slices=[slicing] if slicing else [],
        weights="w" if weighted else None,
    )
    p = 1 / (1 + np.exp(-rows["z"].to_numpy()))
    y, w = rows["y"].to_numpy(), (rows["w"].to_numpy() if weighted else np.ones(len(rows)))
    assert r.overall[ECE_EQUAL_MASS] == pytest.approx(_ece_equal_mass(p, y, w), rel=1e-12)
    tables = [("part", r.table)] + ([(slicing, r.slices[slicing])] if slicing else [])
    checked = 0
    for column, table in tables:
        for value, g in rows.groupby(column):
            i = g.index.to_numpy()
            got = table.filter(pl.col(column) == value)[ECE_EQUAL_MASS][0]
            assert got == pytest.approx(_ece_equal_mass(p[i], y[i], w[i]), rel=1e-12), (column, value)
            checked += 1
    assert checked == 3 + {None: 0, "g": 3, "h": 150}[slicing]
    assert r.overall[ECE_EQUAL_MASS] > 0.05


def test_each_equal_mass_bin_holds_about_a_tenth_and_the_figure_is_close_to_the_quantile_binned_ece():
    rows = _rows(50_000, seed=22, scale=1.5, n_parts=1)
    r = evaluate(rows, label="y", model="z", score_kind="logit")
    p, y = 1 / (1 + np.exp(-rows["z"].to_numpy())), rows["y"].to_numpy()
    counts = np.bincount(_mass_of_rows(p, np.ones(len(p))), minlength=MASS_BINS)
    # a bin is cut at a score bin's edge: it may be short or long by the rows of one score bin (a few hundred here)
    assert np.all(np.abs(counts - len(p) / MASS_BINS) < 0.02 * len(p))
    # the usual equal-mass ECE, its edges at the quantiles of p, differs only by the rows near the edges
    edges = np.quantile(p, np.linspace(0, 1, MASS_BINS + 1))
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, MASS_BINS - 1)
    quantile_ece = sum(abs(p[b == k].sum() - y[b == k].sum()) for k in range(MASS_BINS)) / len(p)
    assert abs(r.overall[ECE_EQUAL_MASS] - quantile_ece) < 0.003
    assert r.overall[ECE_EQUAL_MASS] > 0.03


def test_a_calibrated_model_passes_a_gate_on_it_and_an_over_confident_one_fails():
    gate = [f"{ECE_EQUAL_MASS} <= 0.02 per partition"]
    calibrated = evaluate(_rows(40_000, seed=23), label="y", model="z", score_kind="logit", partition_by=["part"])
    assert calibrated.table.get_column(ECE_EQUAL_MASS).max() < 0.02
    over = evaluate(
        _rows(40_000, seed=23, scale=2.0), label="y", model="z", score_kind="logit", partition_by=["part"], gates=gate
    )
    assert (over.table.get_column(ECE_EQUAL_MASS) > 0.02).all()
    assert set(over.table.get_column("verdict")) == {"failed"} and not over.passed
    passed = evaluate(
        _rows(40_000, seed=23), label="y", model="z", score_kind="logit", partition_by=["part"], gates=gate
    )
    assert passed.passed


def test_the_reliability_points_are_each_equal_mass_bins_means_over_every_row_and_the_terminal_says_both_eces():
    rows = _rows(20_000, seed=24, scale=1.6, n_parts=1)
    r = evaluate(rows, label="y", model="z", score_kind="logit", weights="w")
    p, y, w = 1 / (1 + np.exp(-rows["z"].to_numpy())), rows["y"].to_numpy(), rows["w"].to_numpy()
    mass = _mass_of_rows(p, w)
    points = r.overall["reliability"]
    assert points["mean_p"] == pytest.approx([np.average(p[mass == k], weights=w[mass == k]) for k in range(10)])
    assert points["rate"] == pytest.approx([np.average(y[mass == k], weights=w[mass == k]) for k in range(10)])
    assert points["weight"] == pytest.approx([w[mass == k].sum() for k in range(10)], rel=1e-12)
    line = calibration_line(r.overall)
    assert f"{r.overall['ece']:.4f} over 10 equal-width bins" in line
    assert f"{r.overall[ECE_EQUAL_MASS]:.4f} over 10 equal-mass bins" in line
    # no row, no point
    empty = reliability_points(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty == {"mean_p": [], "rate": [], "weight": []}
