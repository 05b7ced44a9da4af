"""Decisions at a threshold, from the score histograms that already merge exactly: the confusion counts,
precision, recall, F1 and false-positive rate at the declared threshold, recall at a false-positive rate,
and, given a cost matrix, the expected cost and the threshold that minimises it on this data.

A row is predicted positive when p ≥ t. The histograms count rows in bins [b/4096, (b + 1)/4096), so every
figure here is exact at a threshold on that grid (0.5, 0.25, 0.1 → 410/4096): a declared threshold is taken
at its nearest bin edge, and :attr:`Decisions.grid_threshold` says which. Recall at a false-positive rate f is the
highest recall at a bin edge whose false-positive rate is ≤ f; the lowest-cost threshold is searched over
every bin edge (between two edges the counts, and so the cost, do not change). Counts are weighted where
the rows are (``--weight-col``). Computed after the merge: changing them needs no new pass, and the cache
holds the same records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from tasks.metrics.auc import HIST_BINS
from tasks.metrics.calibration import ECE_EQUAL_MASS, MASS_BINS, reliability_points
from tasks.metrics.formulas import HistogramFigure


@dataclass(frozen=True)
class Decisions:
    """The declared decision: the threshold, the false-positive rate recall is read at, and the costs of errors."""

    threshold: float = 0.5
    at_fpr: float = 0.1
    cost_fp: float | None = None
    cost_fn: float | None = None
    #: more declared thresholds, reported beside the first as ``at_<t>/<figure>`` (the first keeps the plain names)
    also_at: tuple[float, ...] = ()

    @property
    def edge(self) -> int:
        """The bin edge the threshold is taken at: rows in bins ≥ it are predicted positive."""
        return _edge(self.threshold)

    @property
    def grid_threshold(self) -> float:
        return self.edge / HIST_BINS

    def also_columns(self) -> dict[float, str]:
        """Each further threshold, as declared, and the prefix of its figures' columns, ``at_<t>/`` (its figures
        are taken at its nearest bin edge, as the threshold's)."""
        return {t: f"at_{t:g}/" for t in self.also_at}

    @property
    def costs(self) -> bool:
        return self.cost_fp is not None and self.cost_fn is not None


def further_columns(columns: Iterable[str]) -> list[str]:
    """The columns (or overall keys) of the figures at further thresholds (``at_<t>/<figure>``), in their order."""
    return [c for c in columns if c.startswith("at_") and "/" in c]


def _edge(threshold: float) -> int:
    return min(max(round(threshold * HIST_BINS), 0), HIST_BINS)


#: the decision every run makes unless told otherwise: p ≥ 0.5, recall at FPR ≤ 0.1, no costs
DEFAULT_DECISIONS = Decisions()
#: the figures reported at each further threshold (``Decisions.also_at``)
ALSO_AT = ("tp", "fp", "fn", "tn", "precision", "recall", "f1", "fpr", "expected_cost")

#: the columns :func:`decision_columns` returns, in order (the schema's histogram figures)
COUNTS = ("tp", "fp", "fn", "tn")
RATES = ("precision", "recall", "f1", "fpr", "recall_at_fpr")
COSTS = ("expected_cost", "best_threshold", "best_cost")

DECISION_FIGURES: tuple[HistogramFigure, ...] = (
    HistogramFigure("precision", "precision", "TP / (TP + FP) at the threshold (p ≥ t)", better="higher"),
    HistogramFigure("recall", "recall", "TP / (TP + FN) at the threshold", better="higher"),
    HistogramFigure("f1", "F1", "2·TP / (2·TP + FP + FN) at the threshold", better="higher"),
    HistogramFigure("fpr", "FPR", "FP / (FP + TN): the false-positive rate at the threshold", better="lower"),
    HistogramFigure("tp", "TP", "true positives at the threshold (weighted)"),
    HistogramFigure("fp", "FP", "false positives at the threshold (weighted)"),
    HistogramFigure("fn", "FN", "false negatives at the threshold (weighted)"),
    HistogramFigure("tn", "TN", "true negatives at the threshold (weighted)"),
    HistogramFigure("recall_at_fpr", "recall at FPR", "the highest recall whose FPR is ≤ --at-fpr", better="higher"),
    HistogramFigure("expected_cost", "cost", "(c_fp·FP + c_fn·FN) / rows at the threshold (--costs)", better="lower"),
    HistogramFigure("best_threshold", "best t", "the threshold of the lowest cost on these rows (--costs)"),
    HistogramFigure("best_cost", "lowest cost", "the cost per row at best_threshold (--costs)", better="lower"),
)


def decision_columns(
    group: np.ndarray,
    bins: np.ndarray,
    n: np.ndarray,
    n_pos: np.ndarray,
    n_groups: int,
    d: Decisions,
    sum_p: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each group's decision figures from its histogram rows ``(group, bin, n, n_pos)`` (a group's rows may repeat
    a bin: they add up), one walk down its bins; NaN where a figure is undefined (no predicted positive, one
    class). The same sums, in the same order, as cumulative sums over the dense histograms (a test holds it).
    Given the rows' ``sum_p`` (Σ w·p), the same walk gives the ECE over equal-mass bins
    (:data:`tasks.metrics.calibration.ECE_EQUAL_MASS`)."""
    from tasks.metrics.decision_kernel import decide_sorted  # compiled code loads when a summary runs

    sp = np.zeros(len(bins)) if sum_p is None else sum_p
    kept = group >= 0  # rows of no group (a partition the table does not hold) are left out
    if not kept.all():
        group, bins, n, n_pos, sp = group[kept], bins[kept], n[kept], n_pos[kept], sp[kept]
    out = np.zeros((n_groups, 9))
    costs = (d.cost_fp, d.cost_fn) if d.costs else (0.0, 0.0)
    # a chunk writes each partition's bins as one run in bin order: most rows need no sort
    if not decide_sorted(group, bins, n, n_pos, sp, d.edge, d.at_fpr, *costs, MASS_BINS, out):
        # stable: a bin's repeated rows keep their order, as bincount adds them
        order = np.argsort(group.astype(np.int64) * HIST_BINS + bins, kind="stable")
        group, bins, n, n_pos, sp = group[order], bins[order], n[order], n_pos[order], sp[order]
        out[:] = 0.0
        decide_sorted(group, bins, n, n_pos, sp, d.edge, d.at_fpr, *costs, MASS_BINS, out)
    figures = decision_figures(*out[:, :8].T, d)
    if sum_p is not None:
        with np.errstate(all="ignore"):
            figures[ECE_EQUAL_MASS] = np.where(out[:, 3] > 0, out[:, 8] / out[:, 3], np.nan)
    for t, prefix in d.also_columns().items():  # one more walk a further threshold, over rows now in order
        at = Decisions(t, d.at_fpr, d.cost_fp, d.cost_fn)
        more = np.zeros((n_groups, 9))
        decide_sorted(group, bins, n, n_pos, sp, at.edge, d.at_fpr, *costs, MASS_BINS, more)
        figures |= {
            prefix + k: v for k, v in decision_figures(*more[:, :8].T, at).items() if k in ALSO_AT[: 8 + d.costs]
        }
    return figures


def decision_figures(tp, pp, P, W, best_tp, cost_at, best_cost, best_edge, d: Decisions) -> dict[str, np.ndarray]:
    """Every decision figure from a group's counts at the threshold, its totals and its walk's best points."""
    fp = pp - tp
    fn, N = P - tp, W - P
    tn = N - fp
    with np.errstate(all="ignore"):
        out = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "precision": np.where(pp > 0, tp / pp, np.nan),
            "recall": np.where(P > 0, tp / P, np.nan),
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "fpr": np.where(N > 0, fp / N, np.nan),
            "recall_at_fpr": np.where((P > 0) & (N > 0), best_tp / P, np.nan),
        }
    none = np.full(len(tp), np.nan)
    if not d.costs:
        return out | dict.fromkeys(COSTS, none)
    return out | {
        "expected_cost": np.where(W > 0, cost_at, np.nan),
        "best_threshold": np.where(W > 0, best_edge / HIST_BINS, np.nan),
        "best_cost": np.where(W > 0, best_cost, np.nan),
    }


def cost_curve(hist_n: np.ndarray, hist_pos: np.ndarray, d: Decisions) -> tuple[np.ndarray, np.ndarray]:
    """The expected cost per row at every bin edge (thresholds 0, 1/4096, …, 1) of one merged histogram."""
    tail_n = np.append(np.cumsum(hist_n[::-1])[::-1], 0.0)
    tail_pos = np.append(np.cumsum(hist_pos[::-1])[::-1], 0.0)
    P, W = tail_pos[0], tail_n[0]
    cost = (d.cost_fp * (tail_n - tail_pos) + d.cost_fn * (P - tail_pos)) / W
    return np.arange(HIST_BINS + 1) / HIST_BINS, cost


def with_decisions(table: pl.DataFrame, histograms: list[pl.DataFrame], group: list[str], d: Decisions) -> pl.DataFrame:
    """``table`` (one row per value of ``group``) with each row's decision figures (and equal-mass ECE), from the
    histogram rows ``(*group, bin, n, n_pos, sum_p)`` of its partitions."""
    frames = [h for h in histograms if h.height]
    if not frames or not table.height:
        return table
    index = {key: g for g, key in enumerate(table.select(group).iter_rows())}
    groups = np.concatenate([_group_of_rows(h, group, index) for h in frames])
    # the columns as they are (counts stay integers: the compiled walk adds them as floats, exactly)
    bins, n, n_pos = (np.concatenate([h.get_column(c).to_numpy() for h in frames]) for c in ("bin", "n", "n_pos"))
    sum_p = _sum_p(frames)
    cols = decision_columns(groups, bins, n, n_pos, table.height, d, sum_p)
    return table.with_columns(pl.Series(k, v, nan_to_null=True) for k, v in cols.items())


def _sum_p(frames: list[pl.DataFrame]) -> np.ndarray | None:
    """The histogram rows' Σ w·p, where every frame has it (else no equal-mass ECE)."""
    if not all("sum_p" in h.columns for h in frames):
        return None
    return np.concatenate([h.get_column("sum_p").to_numpy().astype(np.float64, copy=False) for h in frames])


def _group_of_rows(h: pl.DataFrame, group: list[str], index: dict[tuple, int]) -> np.ndarray:
    """Each histogram row's table row: looked up once a run of equal keys (a partition's rows come together)."""
    keys = h.select(group)
    changed = keys.select(pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in group)).to_series()
    starts = np.flatnonzero(changed.fill_null(True).to_numpy())
    starts = starts if len(starts) and starts[0] == 0 else np.r_[0, starts]
    ids = np.array([index.get(k, -1) for k in keys[starts].iter_rows()], np.int64)
    return np.repeat(ids, np.diff(np.r_[starts, h.height]))


def overall_decisions(hist: pl.DataFrame, d: Decisions) -> dict[str, Any]:
    """The decision figures (and equal-mass ECE) of one merged histogram ``(bin, n, n_pos, sum_p)`` (its rows may
    repeat a bin) and their context (:func:`decision_context`)."""
    bins, n, n_pos = (hist.get_column(c).to_numpy() for c in ("bin", "n", "n_pos"))
    sum_p = _sum_p([hist])
    cols = decision_columns(
        np.zeros(len(bins), np.int64), bins.astype(np.int64), n.astype(float), n_pos.astype(float), 1, d, sum_p
    )
    out: dict[str, Any] = {k: None if np.isnan(v[0]) else float(v[0]) for k, v in cols.items()}
    return out | decision_context(bins, n, n_pos, d, sum_p)


def decision_context(
    bins: np.ndarray, n: np.ndarray, n_pos: np.ndarray, d: Decisions, sum_p: np.ndarray | None = None
) -> dict[str, Any]:
    """The threshold and FPR the figures were taken at, with costs the cost curve of the histogram rows
    ``(bins, n, n_pos)`` (every 8th bin edge, for the report), and given ``sum_p`` the reliability diagram's
    equal-mass points (:func:`tasks.metrics.calibration.reliability_points`)."""
    out: dict[str, Any] = {"threshold": d.grid_threshold, "at_fpr": d.at_fpr, "also_at": list(d.also_columns())}
    if sum_p is not None and len(bins):
        out["reliability"] = reliability_points(bins, n, n_pos, sum_p)
    if d.costs and len(bins):
        dense_n = np.bincount(bins.astype(np.int64), weights=n.astype(float), minlength=HIST_BINS)
        dense_pos = np.bincount(bins.astype(np.int64), weights=n_pos.astype(float), minlength=HIST_BINS)
        t, c = cost_curve(dense_n, dense_pos, d)
        out |= {"costs": {"fp": d.cost_fp, "fn": d.cost_fn}, "cost_curve": [t[::8].tolist(), c[::8].tolist()]}
    return out
