"""Decisions at a threshold from the merged histograms, against scikit-learn on the same rows (weighted too):
the confusion counts, precision, recall, F1, FPR, recall at an FPR, the expected cost and the best threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_curve

from flows.api import evaluate
from tasks.metrics.auc import HIST_BINS
from tasks.metrics.decision_kernel import decide_sorted
from tasks.metrics.decisions import Decisions, decision_columns, decision_figures


def _decide_dense(hist_n: np.ndarray, hist_pos: np.ndarray, d: Decisions) -> dict[str, np.ndarray]:
    """The decision figures of each row of dense histograms (groups × bins), by numpy's cumulative sums: the
    compiled walk must add the same floats in the same order."""
    # tails[:, j]: the weight of rows in bins ≥ j, for every edge j = 0..HIST_BINS (the last: none)
    zeros = np.zeros((hist_n.shape[0], 1))
    tail_n = np.hstack([np.cumsum(hist_n[:, ::-1], axis=1)[:, ::-1], zeros])
    tail_pos = np.hstack([np.cumsum(hist_pos[:, ::-1], axis=1)[:, ::-1], zeros])
    P, W = tail_pos[:, 0], tail_n[:, 0]
    N = W - P
    with np.errstate(all="ignore"):
        fpr_at = (tail_n - tail_pos) / N[:, None]
        best_tp = np.where(fpr_at <= d.at_fpr, tail_pos, -np.inf).max(axis=1)  # the empty edge always qualifies
        fp_c, fn_c = (d.cost_fp, d.cost_fn) if d.costs else (0.0, 0.0)
        cost = (fp_c * (tail_n - tail_pos) + fn_c * (P[:, None] - tail_pos)) / W[:, None]
        best = HIST_BINS - np.argmin(cost[:, ::-1], axis=1)  # the highest edge of the lowest cost
        rows = np.arange(len(best))
        return decision_figures(
            tail_pos[:, d.edge], tail_n[:, d.edge], P, W, best_tp, cost[:, d.edge], cost[rows, best], best, d
        )


def _rows(seed: int = 4, n: int = 6000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    return pd.DataFrame(
        {
            "p": 1 / (1 + np.exp(-z)),
            "y": (rng.uniform(size=n) < 1 / (1 + np.exp(-1.3 * z))).astype(int),
            "part": rng.choice(["p1", "p2"], n),
            "g": rng.choice(["a", "b", "c"], n),
            "w": rng.exponential(1.0, n),
        }
    )


def _reference(g: pd.DataFrame, d: Decisions, weighted: bool) -> dict[str, float]:
    y, p = g["y"].to_numpy(), g["p"].to_numpy()
    w = g["w"].to_numpy() if weighted else np.ones(len(g))
    t = d.grid_threshold
    tn, fp, fn, tp = confusion_matrix(y, p >= t, labels=[0, 1], sample_weight=w).ravel()
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, p >= t, average="binary", sample_weight=w, zero_division=np.nan
    )
    # ROC points at the histogram's bin edges: scikit-learn's curve over each row's bin
    bins = np.minimum((p * HIST_BINS).astype(int), HIST_BINS - 1)
    fpr, tpr, _ = roc_curve(y, bins, sample_weight=w)
    out = dict(tp=tp, fp=fp, fn=fn, tn=tn, precision=precision, recall=recall, f1=f1, fpr=fp / (fp + tn))
    out["recall_at_fpr"] = tpr[fpr <= d.at_fpr].max()
    n_pos, n_neg = w[y == 1].sum(), w[y == 0].sum()
    cost = (d.cost_fp * fpr * n_neg + d.cost_fn * (1 - tpr) * n_pos) / w.sum()
    out["best_cost"] = cost.min()
    out["expected_cost"] = _cost(y, p >= t, w, d)
    return out


def _cost(y: np.ndarray, pred: np.ndarray, w: np.ndarray, d: Decisions) -> float:
    return (d.cost_fp * w[pred & (y == 0)].sum() + d.cost_fn * w[~pred & (y == 1)].sum()) / w.sum()


@pytest.mark.parametrize(("threshold", "weighted"), [(0.5, False), (0.5, True), (0.3, True), (0.8125, False)])
def test_decision_figures_equal_scikit_learn_per_partition_per_slice_and_overall(threshold, weighted):
    rows = _rows()
    d = Decisions(threshold, 0.1, 1.0, 5.0)
    r = evaluate(
        rows,
        label="y",
        model="p",
        partition_by=["part"],
        slices=["g"],
        weights="w" if weighted else None,
        decide={"threshold": threshold, "costs": "fp=1,fn=5"},
    )
    groups = [("overall", rows, r.overall)]
    groups += [(k, g, r.table.filter(pl.col("part") == k).row(0, named=True)) for k, g in rows.groupby("part")]
    groups += [(k, g, r.slices["g"].filter(pl.col("g") == k).row(0, named=True)) for k, g in rows.groupby("g")]
    for name, g, got in groups:
        for figure, want in _reference(g, d, weighted).items():
            assert got[figure] == pytest.approx(want, rel=1e-12, abs=1e-12), (name, figure)
        # the best threshold: deciding there costs the lowest cost (equal costs may tie between thresholds)
        y, p = g["y"].to_numpy(), g["p"].to_numpy()
        w = g["w"].to_numpy() if weighted else np.ones(len(g))
        assert _cost(y, p >= got["best_threshold"], w, d) == pytest.approx(got["best_cost"], rel=1e-12), name


def test_a_threshold_off_the_grid_is_taken_at_its_nearest_bin_edge_and_says_so():
    d = Decisions(0.3)
    assert d.edge == 1229 and d.grid_threshold == 1229 / 4096 and abs(d.grid_threshold - 0.3) <= 0.5 / HIST_BINS


def test_costs_must_name_both_errors():
    with pytest.raises(ValueError, match="fp=COST,fn=COST"):
        evaluate(_rows(n=100), label="y", model="p", decide={"costs": "fp=1"})
    with pytest.raises(ValueError, match="unknown key"):
        evaluate(_rows(n=100), label="y", model="p", decide={"treshold": 0.2})


def test_the_walk_over_unsorted_rows_asks_for_a_sort_and_then_equals_the_dense_histograms():
    rng = np.random.default_rng(9)
    group, bins = rng.integers(0, 30, 20000), rng.integers(0, HIST_BINS, 20000)
    n = rng.exponential(1.0, 20000)
    n_pos = n * (rng.uniform(size=20000) < 0.3)
    out = np.zeros((30, 9))
    assert not decide_sorted(group, bins, n, n_pos, np.zeros_like(n), 2048, 0.1, 1.0, 5.0, 10, out)  # refused
    d = Decisions(0.5, 0.1, 1.0, 5.0)
    got = decision_columns(group, bins, n, n_pos, 30, d)
    flat = group * HIST_BINS + bins
    dense = [np.bincount(flat, weights=w, minlength=30 * HIST_BINS).reshape(30, HIST_BINS) for w in (n, n_pos)]
    want = _decide_dense(*dense, d)
    assert all(np.array_equal(got[k], want[k], equal_nan=True) for k in want)  # the same sums, the same bits


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sliced", [False, True], ids=["plain", "sliced"])
def test_further_thresholds_equal_scikit_learn_per_partition_per_slice_and_overall(weighted, sliced):
    rows = _rows(seed=5)
    r = evaluate(
        rows,
        label="y",
        model="p",
        partition_by=["part"],
        slices=["g"] if sliced else [],
        weights="w" if weighted else None,
        decide={"threshold": 0.5, "also_at": [0.25, 0.75], "costs": "fp=1,fn=5"},
    )
    groups = [("overall", rows, r.overall)]
    groups += [(k, g, r.table.filter(pl.col("part") == k).row(0, named=True)) for k, g in rows.groupby("part")]
    if sliced:
        groups += [(k, g, r.slices["g"].filter(pl.col("g") == k).row(0, named=True)) for k, g in rows.groupby("g")]
    for t in (0.25, 0.75):
        d = Decisions(t, 0.1, 1.0, 5.0)
        for name, g, got in groups:
            want = _reference(g, d, weighted)
            for figure in ("tp", "fp", "fn", "tn", "precision", "recall", "f1", "fpr", "expected_cost"):
                assert got[f"at_{t:g}/{figure}"] == pytest.approx(want[figure], rel=1e-12, abs=1e-12), (name, t)
    # the first threshold keeps the plain names, and the terminal line names every threshold
    assert r.overall["precision"] == pytest.approx(
        _reference(rows, Decisions(0.5, 0.1, 1.0, 5.0), weighted)["precision"]
    )
    assert r.overall["also_at"] == [0.25, 0.75]
