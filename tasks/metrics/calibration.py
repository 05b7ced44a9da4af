"""Calibration, from sums that add up: what the model expects of itself against what it realizes, and the
expected calibration error over fixed bins and over equal-mass bins.

* ``expected_bce``: the mean of H(p) = −p·ln p − (1 − p)·ln(1 − p), the loss a model that says p expects of
  a row (it needs no label); ``calibration_gap`` = BCE − expected BCE, with its 95% interval from the rows'
  excess loss − H(p) = (p − y)·logit(p) and its square (:func:`tasks.metrics.kernels.row_terms`).
* ``ece``: Σ_b |Σ_b w·p − Σ_b w·y| / Σ w over :data:`CAL_BINS` equal-width bins of p (bin b holds
  b/10 ≤ p < (b + 1)/10, p = 1 in the last), each bin's Σ w, Σ w·p and Σ w·y kept as sums: the same
  figure for a partition, a slice or overall, exactly.
* ``ece_equal_mass``: the same over :data:`MASS_BINS` bins of about equal weight, formed on the score
  histograms' grid (:data:`tasks.metrics.auc.HIST_BINS` bins of width 1/4096, whose rows' Σ w, Σ w·y and Σ w·p
  are kept and merge by addition): a histogram bin b goes to equal-mass bin ⌊MASS_BINS · C_b / W⌋, C_b the
  weight of the rows in lower histogram bins and W the total. A histogram bin is never split, so rows of one
  score stay in one bin, and a bin may hold more than W/MASS_BINS (or none) where scores cluster.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.metrics.auc import HIST_BINS
from tasks.metrics.formulas import Figure, HistogramFigure, Sum, normal_interval, per_weight, weighted_standard_error

#: equal-width bins of p for the expected calibration error
CAL_BINS = 10
#: equal-mass bins for the second expected calibration error (and the reliability diagram's points)
MASS_BINS = 10
#: the name of the ECE over equal-mass bins (a histogram figure: it is formed after the merge)
ECE_EQUAL_MASS = "ece_equal_mass"

CALIBRATION_SUMS: tuple[Sum, ...] = (
    Sum("sum_entropy", pl.Float64, "Σ w·H(p), H(p) = −p·ln p − (1 − p)·ln(1 − p): the loss the model expects"),
    Sum("sum_excess_sq", pl.Float64, "Σ w·(loss − H(p))², for the interval of realized − expected BCE"),
    *(Sum(f"cal_w_{b}", pl.Float64, f"Σ w over rows whose p is in calibration bin {b}") for b in range(CAL_BINS)),
    *(Sum(f"cal_p_{b}", pl.Float64, f"Σ w·p over calibration bin {b}") for b in range(CAL_BINS)),
    *(Sum(f"cal_y_{b}", pl.Float64, f"Σ w·y over calibration bin {b}") for b in range(CAL_BINS)),
)


def _calibration_gap() -> pl.Expr:
    return per_weight("sum_loss") - per_weight("sum_entropy")


def _calibration_gap_se() -> pl.Expr:  # of the rows' loss − H(p), whose sum is Σ loss − Σ H
    excess, sq = pl.col("sum_loss") - pl.col("sum_entropy"), pl.col("sum_excess_sq")
    return weighted_standard_error(excess, sq, pl.col("sum_w"), pl.col("sum_w_sq"))


def _ece() -> pl.Expr:
    gaps = [(pl.col(f"cal_p_{b}") - pl.col(f"cal_y_{b}")).abs() for b in range(CAL_BINS)]
    return pl.when(pl.col("sum_w") > 0).then(pl.sum_horizontal(gaps) / pl.col("sum_w")).otherwise(None)


CALIBRATION_FIGURES: tuple[Figure, ...] = (
    Figure(
        "expected_bce",
        "expected BCE",
        lambda: per_weight("sum_entropy"),
        "mean H(p): the BCE the model expects of itself, which a calibrated model realizes (needs no label)",
    ),
    Figure(
        "calibration_gap",
        "realized − expected",
        _calibration_gap,
        "BCE − expected BCE: above 0 beyond its interval, over-confident; below, under-confident",
        interval=("calibration_gap_low", "calibration_gap_high"),
    ),
    Figure(
        "calibration_gap_low",
        "gap 95% low",
        lambda: normal_interval(_calibration_gap(), _calibration_gap_se())[0],
        "lower end of its 95% interval (the rows' loss − H(p), weighted variance over the effective n)",
    ),
    Figure(
        "calibration_gap_high",
        "gap 95% high",
        lambda: normal_interval(_calibration_gap(), _calibration_gap_se())[1],
        "upper end",
    ),
    Figure(
        "ece",
        "ECE (equal width)",
        _ece,
        f"expected calibration error over {CAL_BINS} equal-width bins of p: Σ |Σ w·p − Σ w·y| / Σ w",
        better="lower",
    ),
)

CALIBRATION_HISTOGRAM_FIGURES: tuple[HistogramFigure, ...] = (
    HistogramFigure(
        ECE_EQUAL_MASS,
        "ECE (equal mass)",
        f"expected calibration error over {MASS_BINS} bins of about equal weight, formed on the 1/4096 score grid: "
        "Σ |Σ w·p − Σ w·y| / Σ w",
        better="lower",
    ),
)


def mass_bins(bins: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dense weight of each histogram bin, and the equal-mass bin each falls in (see the module's docstring),
    from histogram rows ``(bins, n)`` (a bin may repeat: its rows add up)."""
    dense = np.bincount(np.asarray(bins, np.int64), weights=np.asarray(n, np.float64), minlength=HIST_BINS)
    tail = np.cumsum(dense[::-1])[::-1]  # weight at or above each bin, summed from the top as the walk does
    total = tail[0]
    with np.errstate(all="ignore"):
        mass = np.minimum((MASS_BINS * (total - tail) / total).astype(np.int64), MASS_BINS - 1)
    return dense, mass


def reliability_points(bins: np.ndarray, n: np.ndarray, n_pos: np.ndarray, sum_p: np.ndarray) -> dict[str, list]:
    """Each equal-mass bin's mean predicted probability, observed positive rate and weight, over every row of the
    histogram rows ``(bins, n, n_pos, sum_p)``: the reliability diagram's points (empty bins left out)."""
    dense, mass = mass_bins(bins, n)
    if not dense.sum() > 0:
        return {"mean_p": [], "rate": [], "weight": []}
    by = {
        k: np.bincount(np.asarray(bins, np.int64), weights=np.asarray(v, np.float64), minlength=HIST_BINS)
        for k, v in (("pos", n_pos), ("p", sum_p))
    }
    w = np.bincount(mass, weights=dense, minlength=MASS_BINS)
    p = np.bincount(mass, weights=by["p"], minlength=MASS_BINS)
    y = np.bincount(mass, weights=by["pos"], minlength=MASS_BINS)
    ok = w > 0
    return {"mean_p": (p[ok] / w[ok]).tolist(), "rate": (y[ok] / w[ok]).tolist(), "weight": w[ok].tolist()}


def ece_words(o: dict, lead: str = "ECE ") -> str:
    """Both expected calibration errors and their bins, in words, for the terminal, the description and the
    reliability diagram ("" when there is none)."""
    if o.get("ece") is None:
        return ""
    mass = o.get(ECE_EQUAL_MASS)
    return f"{lead}{o['ece']:.4f} over {CAL_BINS} equal-width bins" + (
        f", {mass:.4f} over {MASS_BINS} equal-mass bins" if mass is not None else ""
    )
