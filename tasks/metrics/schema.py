"""The metric schema: every per-partition sum and every figure derived from the sums, declared once.

A partition's *record* holds sums that add up exactly across files, chunks, workers and nightly runs
(:data:`SUMS`); every figure is a formula over those sums (:data:`FIGURES`), applied alike to a
partition, a slice and the summed overall row (Σ loss / Σ n, never a mean of means). The compiled
loops' arrays, the merge, the tables, the cache, MLflow and the baseline reader all take them from here.
A figure is one :class:`Figure` entry; a per-row sum one :class:`Sum` entry plus its line in each loop.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from tasks.metrics.calibration import CALIBRATION_FIGURES, CALIBRATION_HISTOGRAM_FIGURES, CALIBRATION_SUMS
from tasks.metrics.decisions import DECISION_FIGURES
from tasks.metrics.formulas import (
    Z95,
    Figure,
    HistogramFigure,
    Sum,
    normal_interval,
    per_weight,
    standard_error,
    weighted_standard_error,
)
from tasks.metrics.late_labels import LATE_FIGURES, LATE_SUMS, label_status

__all__ = ["Z95", "Figure", "HistogramFigure", "Sum", "normal_interval", "standard_error", "weighted_standard_error"]

SUMS: tuple[Sum, ...] = (
    Sum("n_rows", pl.Int64, "rows", reported=True),
    Sum("n_pos", pl.Int64, "rows whose label is 1", reported=True),
    Sum("n_neg", pl.Int64, "rows whose label is 0"),
    # the sums below weigh each row by its weight w (--weight-col); without weights w = 1 and they
    # hold the same bits as the plain sums and counts
    Sum("sum_w", pl.Float64, "Σ w, the rows' weight (n_rows without weights)"),
    Sum("sum_w_sq", pl.Float64, "Σ w², for the effective number of rows (Σ w)² / Σ w²"),
    Sum("sum_w_pos", pl.Float64, "Σ w over rows whose label is 1 (n_pos without weights)"),
    Sum("sum_loss", pl.Float64, "Σ w·loss, the loss of a row being −log of its predicted probability of its label"),
    Sum("sum_loss_sq", pl.Float64, "Σ w·loss², for the standard error"),
    Sum("sum_loss_pos", pl.Float64, "Σ w·loss over rows whose label is 1"),
    Sum("sum_correct", pl.Float64, "Σ w over rows whose thresholded prediction (p > 0.5) equals the label"),
    Sum("sum_brier", pl.Float64, "Σ w·(p − y)²"),
    Sum("sum_p", pl.Float64, "Σ w·p, p the predicted probability of class 1"),
    Sum("n_saturated", pl.Int64, "rows whose probability is within machine epsilon of 0 or 1", reported=True),
    *CALIBRATION_SUMS,
    *LATE_SUMS,
)

#: Bad-input counters the compiled loop keeps after the sums (never stored: the run stops instead)
CHECKS: tuple[str, ...] = ("bad_score", "bad_label", "bad_weight")

#: Columns of the compiled loop's per-partition statistics array, in order
KERNEL_COLUMNS: tuple[str, ...] = (*(s.name for s in SUMS), *CHECKS)

SUM_COLUMNS: tuple[str, ...] = tuple(s.name for s in SUMS)


def _bce() -> pl.Expr:
    return per_weight("sum_loss")


def _bce_se() -> pl.Expr:
    return weighted_standard_error(pl.col("sum_loss"), pl.col("sum_loss_sq"), pl.col("sum_w"), pl.col("sum_w_sq"))


def _base_rate() -> pl.Expr:
    return per_weight("sum_w_pos")


def _base_rate_entropy() -> pl.Expr:
    """H(p̄) = −p̄·ln p̄ − (1 − p̄)·ln(1 − p̄): the BCE of always predicting the base rate p̄ (0 for one class)."""
    p = _base_rate()
    return pl.when((p > 0) & (p < 1)).then(-(p * p.log()) - (1 - p) * (1 - p).log()).otherwise(0.0)


def _over_entropy(expr: pl.Expr) -> pl.Expr:
    return pl.when(_base_rate_entropy() > 0).then(expr / _base_rate_entropy()).otherwise(None)


def _note() -> pl.Expr:
    """Rows without a label first (an estimate, not a realized figure), else a single class."""
    single = pl.when(pl.col("n_pos") == 0).then(pl.lit("single class (all 0)"))
    single = single.when(pl.col("n_pos") == pl.col("n_rows")).then(pl.lit("single class (all 1)")).otherwise(pl.lit(""))
    return pl.coalesce(label_status(), single)


FIGURES: tuple[Figure, ...] = (
    Figure(
        "bce",
        "BCE",
        _bce,
        "Σ w·loss / Σ w: the mean binary cross-entropy (log loss)",
        interval=("bce_low", "bce_high"),
        better="lower",
    ),
    Figure(
        "bce_se",
        "BCE SE",
        _bce_se,
        "standard error of the BCE (sample variance of the rows' losses; weighted: over the effective n)",
        better="lower",
    ),
    Figure(
        "bce_low", "BCE 95% low", lambda: normal_interval(_bce(), _bce_se())[0], "lower end of the 95% normal interval"
    ),
    Figure(
        "bce_high",
        "BCE 95% high",
        lambda: normal_interval(_bce(), _bce_se())[1],
        "upper end of the 95% normal interval",
    ),
    Figure("positive_rate", "positive rate", _base_rate, "share (of the weight) of rows whose label is 1"),
    Figure(
        "normalized_entropy",
        "NE",
        lambda: _over_entropy(_bce()),
        "BCE / H(base rate): normalized entropy (He et al. 2014); 1 is no better than the base rate",
        better="lower",
    ),
    Figure(
        "d2_log_loss",
        "D² log loss",
        lambda: 1.0 - _over_entropy(_bce()),
        "1 − BCE / BCE of predicting the base rate (scikit-learn's d2_log_loss_score); 1 − NE",
        better="higher",
    ),
    Figure(
        "accuracy",
        "accuracy",
        lambda: per_weight("sum_correct"),
        "share of rows whose p > 0.5 matches the label",
        better="higher",
    ),
    Figure("brier", "Brier", lambda: per_weight("sum_brier"), "mean (p − y)²", better="lower"),
    Figure(
        "d2_brier",
        "D² Brier",
        lambda: (
            pl.when((_base_rate() > 0) & (_base_rate() < 1))
            .then(1.0 - pl.col("sum_brier") / pl.col("sum_w") / (_base_rate() * (1 - _base_rate())))
            .otherwise(None)
        ),
        "1 − Brier / Brier of predicting the base rate p̄(1 − p̄) (scikit-learn's d2_brier_score)",
        better="higher",
    ),
    Figure("mean_predicted", "mean p", lambda: per_weight("sum_p"), "mean predicted probability of class 1"),
    Figure(
        "bce_pos",
        "BCE (y=1)",
        lambda: pl.when(pl.col("sum_w_pos") > 0).then(pl.col("sum_loss_pos") / pl.col("sum_w_pos")).otherwise(None),
        "BCE over rows whose label is 1 (null without any)",
        better="lower",
    ),
    Figure(
        "bce_neg",
        "BCE (y=0)",
        lambda: (
            pl.when(pl.col("sum_w_pos") < pl.col("sum_w"))
            .then((pl.col("sum_loss") - pl.col("sum_loss_pos")) / (pl.col("sum_w") - pl.col("sum_w_pos")))
            .otherwise(None)
        ),
        "BCE over rows whose label is 0 (null without any)",
        better="lower",
    ),
    *CALIBRATION_FIGURES,
    *LATE_FIGURES,
    Figure(
        "note",
        "note",
        _note,
        "'estimated' where labels have not arrived; 'single class (all 0/1)' where ROC AUC is undefined",
    ),
)

#: The sums of a comparison of two models on the same rows (``compare``): each row's loss under both
#: and d = loss(challenger) − loss(champion); pairing cancels the difficulty the two models share
PAIRED_SUMS: tuple[Sum, ...] = (
    Sum("n_rows", pl.Int64, "rows scored by both models", reported=True),
    Sum("sum_w", pl.Float64, "Σ w, the rows' weight (n_rows without weights)"),
    Sum("sum_w_sq", pl.Float64, "Σ w²"),
    Sum("sum_loss_champion", pl.Float64, "Σ w·loss of the champion"),
    Sum("sum_loss_challenger", pl.Float64, "Σ w·loss of the challenger"),
    Sum("sum_d", pl.Float64, "Σ w·d, d = loss(challenger) − loss(champion) per row"),
    Sum("sum_d_sq", pl.Float64, "Σ w·d², for the standard error of the mean difference"),
)


def _bce_diff() -> pl.Expr:
    return per_weight("sum_d")


def _bce_diff_se() -> pl.Expr:
    return weighted_standard_error(pl.col("sum_d"), pl.col("sum_d_sq"), pl.col("sum_w"), pl.col("sum_w_sq"))


PAIRED_FIGURES: tuple[Figure, ...] = (
    Figure(
        "bce_champion",
        "BCE champion",
        lambda: per_weight("sum_loss_champion"),
        "the champion's BCE on these rows",
    ),
    Figure(
        "bce_challenger",
        "BCE challenger",
        lambda: per_weight("sum_loss_challenger"),
        "the challenger's BCE on these rows",
    ),
    Figure(
        "bce_diff", "BCE difference", _bce_diff, "mean(d): challenger − champion (negative: the challenger is better)"
    ),
    Figure(
        "bce_diff_se",
        "difference SE",
        _bce_diff_se,
        "standard error of mean(d) (sample variance of the paired differences)",
    ),
    Figure(
        "bce_diff_low",
        "difference 95% low",
        lambda: normal_interval(_bce_diff(), _bce_diff_se())[0],
        "lower end of its 95% normal interval",
    ),
    Figure(
        "bce_diff_high",
        "difference 95% high",
        lambda: normal_interval(_bce_diff(), _bce_diff_se())[1],
        "upper end of its 95% normal interval",
    ),
)

HISTOGRAM_FIGURES: tuple[HistogramFigure, ...] = (
    HistogramFigure(
        "roc_auc", "ROC AUC", "from 4,096-bin score histograms (or exact ranks with --auc exact)", better="higher"
    ),
    HistogramFigure(
        "roc_auc_bound", "AUC bound", "largest error of the binned ROC AUC (ties within a bin counted as one half)"
    ),
    *CALIBRATION_HISTOGRAM_FIGURES,
    *DECISION_FIGURES,
)


def figure_names(figures: Iterable[Figure | HistogramFigure] | None = None) -> tuple[str, ...]:
    """Names of ``figures`` (default: every figure and histogram figure)."""
    return tuple(f.name for f in (figures if figures is not None else (*FIGURES, *HISTOGRAM_FIGURES)))


def table_value_columns() -> tuple[str, ...]:
    """The value columns of the per-partition table a reviewer reads (and MLflow keeps), in order.

    Read at call time, so an entry added to the schema shows everywhere that uses it.
    """
    return (*(s.name for s in SUMS if s.reported), *figure_names())


def overall_metric_names() -> tuple[str, ...]:
    """The overall figures logged as MLflow metrics (every numeric figure, ROC AUC and its bound)."""
    return tuple(f.name for f in FIGURES if f.name != "note") + figure_names(HISTOGRAM_FIGURES)


def gate_targets() -> tuple[str, ...]:
    """Figures a quality gate may bound: every numeric figure of the schema, ROC AUC included."""
    return overall_metric_names()


def better_direction(name: str) -> str | None:
    """Which way a figure is better: "lower", "higher", or None (a rate, a count)."""
    return next((f.better for f in (*FIGURES, *HISTOGRAM_FIGURES) if f.name == name), None)


def interval_of(name: str) -> tuple[str, str] | None:
    """The names of the ends of a figure's 95% interval, or None when it has none."""
    return next((f.interval for f in (*FIGURES, *PAIRED_FIGURES) if f.name == name), None)


def derive_figures(sums: pl.DataFrame, figures: Iterable[Figure] | None = None) -> pl.DataFrame:
    """Add every figure's column (default :data:`FIGURES`) to a frame of sums (one row per partition, or one
    overall)."""
    return sums.with_columns(f.formula().alias(f.name) for f in (FIGURES if figures is None else figures))


def total_sums(records: pl.DataFrame) -> pl.DataFrame:
    """One row: each sum added over all partitions (the overall record)."""
    return records.select(pl.col(s.name).sum().cast(s.dtype) for s in SUMS)


def overall_figures(records: pl.DataFrame) -> dict[str, float | int | None]:
    """The overall row: the same formulas as per partition, applied to the sums over all rows.

    Holds the reported sums and every numeric figure (not the histogram figures: ROC AUC comes
    from the merged histograms).
    """
    row = derive_figures(total_sums(records)).row(0, named=True)
    keep = [s.name for s in SUMS if s.reported] + [f.name for f in FIGURES if f.name != "note"]
    return {name: row[name] for name in keep}


def record_schema() -> dict[str, type[pl.DataType]]:
    """The sum columns of a record and their types (what the cache stores per partition)."""
    return {s.name: s.dtype for s in SUMS}
