"""The parts every figure of the metric schema is made of: a sum, a figure, their 95% intervals.

(Split from :mod:`tasks.metrics.schema` so the calibration figures, :mod:`tasks.metrics.calibration`,
are declared with the same parts and join its tuples.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import polars as pl

#: The 97.5% quantile of the standard normal: a two-sided 95% interval is mean ± Z95·se
Z95 = 1.959963984540054

Number = TypeVar("Number", float, pl.Expr)


@dataclass(frozen=True)
class Sum:
    """A per-partition statistic that merges by addition (counts are exact below 2**53)."""

    name: str
    dtype: type[pl.DataType]
    doc: str
    #: shown among the overall figures (the other sums are bookkeeping for the formulas)
    reported: bool = False


@dataclass(frozen=True)
class Figure:
    """A figure derived from the sums: its formula (a Polars expression over the sum columns)."""

    name: str
    display: str
    formula: Callable[[], pl.Expr]
    doc: str
    #: the names of its 95% interval's ends among the figures, where it has one (a gate may judge the interval)
    interval: tuple[str, str] | None = None
    #: which way is better ("lower" or "higher"), for the worst slice and gaps between slices; None: neither
    better: str | None = None


@dataclass(frozen=True)
class HistogramFigure:
    """A figure that does not add up, computed from per-partition score histograms (ROC AUC)."""

    name: str
    display: str
    doc: str
    better: str | None = None


def standard_error(sum_x: Number, sum_x_sq: Number, n: Number) -> Number:
    """Standard error of the mean of n values from their sum and sum of squares.

    se = s / √n with the *sample* variance s² = (Σx² − (Σx)²/n) / (n − 1), clipped at 0 (rounding
    can take it just below). Works on floats and on Polars expressions alike; NaN (null) for n < 2.
    """
    if isinstance(n, pl.Expr):
        var = ((sum_x_sq - sum_x * sum_x / n) / (n - 1)).clip(lower_bound=0.0)
        return pl.when(n > 1).then(var.sqrt() / n.sqrt()).otherwise(None)
    if n < 2:
        return float("nan")
    var = max((sum_x_sq - sum_x * sum_x / n) / (n - 1), 0.0)
    return math.sqrt(var) / math.sqrt(n)


def normal_interval(mean: Number, se: Number) -> tuple[Number, Number]:
    """The two-sided 95% normal interval ``(mean − Z95·se, mean + Z95·se)``."""
    return mean - Z95 * se, mean + Z95 * se


def _c(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64)


def _per_weight(name: str) -> pl.Expr:
    """A weighted mean: the sum ``name`` over Σ w; null where every row weighs 0 (not 0/0)."""
    return pl.when(pl.col("sum_w") > 0).then(pl.col(name) / pl.col("sum_w")).otherwise(None)


def per_weight(name: str) -> pl.Expr:
    """A weighted mean: the sum ``name`` over Σ w; null where every row weighs 0 (not 0/0)."""
    return pl.when(pl.col("sum_w") > 0).then(pl.col(name) / pl.col("sum_w")).otherwise(None)


def weighted_standard_error(sum_wx: pl.Expr, sum_wx_sq: pl.Expr, sum_w: pl.Expr, sum_w_sq: pl.Expr) -> pl.Expr:
    """Standard error of a weighted mean: se² = s²_w / n_eff, with n_eff = (Σw)² / Σw².

    s²_w = (Σwx² − (Σwx)²/Σw) / (Σw − Σw²/Σw) is the unbiased variance with reliability weights;
    when every weight is 0 or 1 (Σw² = Σw, unweighted rows included) it is the sample variance of
    the weighted-in rows and the formula is :func:`standard_error`'s, evaluated the same way.
    """
    plain = standard_error(sum_wx, sum_wx_sq, sum_w)
    var = ((sum_wx_sq - sum_wx * sum_wx / sum_w) / (sum_w - sum_w_sq / sum_w)).clip(lower_bound=0.0)
    weighted = pl.when(sum_w - sum_w_sq / sum_w > 0).then((var * sum_w_sq).sqrt() / sum_w).otherwise(None)
    return pl.when(sum_w_sq == sum_w).then(plain).otherwise(weighted)
