"""Calibration, from sums that add up: what the model expects of itself against what it realizes, and the
expected calibration error over fixed bins.

* ``expected_bce``: the mean of H(p) = −p·ln p − (1 − p)·ln(1 − p), the loss a model that says p expects of
  a row (it needs no label); ``calibration_gap`` = BCE − expected BCE, with its 95% interval from the rows'
  excess loss − H(p) = (p − y)·logit(p) and its square (:func:`tasks.metrics.kernels.row_terms`).
* ``ece``: Σ_b |Σ_b w·p − Σ_b w·y| / Σ w over :data:`CAL_BINS` equal-width bins of p (bin b holds
  b/10 ≤ p < (b + 1)/10, p = 1 in the last), each bin's Σ w, Σ w·p and Σ w·y kept as sums: the same
  figure for a partition, a slice or overall, exactly.
"""

from __future__ import annotations

import polars as pl

from tasks.metrics.formulas import Figure, Sum, normal_interval, per_weight, weighted_standard_error

#: equal-width bins of p for the expected calibration error (and the reliability diagram's points)
CAL_BINS = 10

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
        "ECE",
        _ece,
        f"expected calibration error over {CAL_BINS} equal-width bins of p: Σ |Σ w·p − Σ w·y| / Σ w",
        better="lower",
    ),
)
