"""Rows whose label has not arrived: what the model expects of them, kept apart from what it realized.

A null label is a label not known yet (clicks, churn and defaults are known days later). Such a row has no
loss, but a model that says p expects the loss H(p) = −p·ln p − (1 − p)·ln(1 − p) of it, and if it is
calibrated that is the row's expected loss; with the row's label drawn with probability p, its loss varies by
p(1 − p)·logit(p)² about H(p). So the unlabelled rows of a partition (or slice) get

* ``estimated_bce`` = Σ w·H(p) / Σ w over them, the BCE the model expects there;
* ``estimated_bce_se`` = √(Σ w²·p(1 − p)·logit(p)²) / Σ w, how far the realized BCE of those rows will stray
  from it if the model is calibrated (not how far a miscalibrated model may be off: the calibration figures
  of the labelled rows say that), and its 95% interval.

These are their own columns and metric keys, never mixed into the realized figures (BCE, accuracy and the rest
cover labelled rows only). A partition with no label at all is *estimated*; one with some is realized on those
and estimated on the rest when late labels are declared (``--late-labels``), else it is an input error.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.metrics.formulas import Z95, Figure, Sum

#: The label value the scan gives a null label (a label not arrived): no 0/1 label is −inf, and a −inf in the data
#: is read as NaN (a bad label) so that only a null means "not arrived"
UNLABELLED = float("-inf")


def batch_labels(column: pl.Series, per_row: bool) -> np.ndarray:
    """A batch's labels as floats: a null (a label not arrived) as UNLABELLED, summed apart; a −inf in the data as
    NaN, a bad label. Without a null only the per-row (cell) loop needs the second rule (the run loop counts a −inf
    as bad already), and it reads the rows one by one anyway."""
    if column.null_count():
        y = pl.col(column.name)
        label = pl.when(y.is_null()).then(UNLABELLED).when(y == UNLABELLED).then(float("nan")).otherwise(y)
        return column.to_frame().select(label).to_series().to_numpy()
    y = column.to_numpy()
    return np.where(y == UNLABELLED, np.nan, y) if per_row and len(y) and y.min() == UNLABELLED else y


LATE_SUMS: tuple[Sum, ...] = (
    Sum("n_unlabelled", pl.Int64, "rows whose label has not arrived (null): estimated, not in the realized sums", True),
    Sum("sum_w_unlabelled", pl.Float64, "Σ w over rows without a label"),
    Sum("sum_entropy_unlabelled", pl.Float64, "Σ w·H(p) over rows without a label: the loss the model expects"),
    Sum(
        "sum_var_unlabelled", pl.Float64, "Σ w²·p(1 − p)·logit(p)² over rows without a label: the variance of the loss"
    ),
)


def _estimated() -> pl.Expr:
    w = pl.col("sum_w_unlabelled")
    return pl.when(w > 0).then(pl.col("sum_entropy_unlabelled") / w).otherwise(None)


def _estimated_se() -> pl.Expr:
    w = pl.col("sum_w_unlabelled")
    return pl.when(w > 0).then(pl.col("sum_var_unlabelled").sqrt() / w).otherwise(None)


LATE_FIGURES: tuple[Figure, ...] = (
    Figure(
        "estimated_bce",
        "estimated BCE",
        _estimated,
        "Σ w·H(p) / Σ w over rows whose label has not arrived: the BCE the model expects there (an estimate)",
        interval=("estimated_bce_low", "estimated_bce_high"),
        better="lower",
    ),
    Figure(
        "estimated_bce_se",
        "estimated BCE SE",
        _estimated_se,
        "√(Σ w²·p(1 − p)·logit(p)²) / Σ w: how far those rows' realized BCE strays from it if the model is calibrated",
    ),
    Figure(
        "estimated_bce_low",
        "estimated 95% low",
        lambda: _estimated() - Z95 * _estimated_se(),
        "lower end of the estimate's 95% interval",
    ),
    Figure(
        "estimated_bce_high",
        "estimated 95% high",
        lambda: _estimated() + Z95 * _estimated_se(),
        "upper end of the estimate's 95% interval",
    ),
)


def label_status() -> pl.Expr:
    """ "estimated" (no label yet), "partly estimated: N row(s) without a label", or null (every label known)."""
    unlabelled, labelled = pl.col("n_unlabelled"), pl.col("n_rows")
    partly = pl.lit("partly estimated: ") + unlabelled.cast(pl.String) + pl.lit(" row(s) without a label")
    return (
        pl.when((unlabelled > 0) & (labelled == 0))
        .then(pl.lit("estimated: no label yet"))
        .when(unlabelled > 0)
        .then(partly)
    )


#: The columns a table shows of its rows without a label, where it has any (after the realized figures)
ESTIMATE_COLUMNS = ("n_unlabelled", "estimated_bce", "estimated_bce_low", "estimated_bce_high")


def has_estimates(table: pl.DataFrame) -> bool:
    """Whether any row of ``table`` (a partition, a slice) holds rows whose label has not arrived."""
    return "n_unlabelled" in table.columns and bool(table.get_column("n_unlabelled").fill_null(0).gt(0).any())


def estimated_line(overall: dict, table: pl.DataFrame) -> str:
    """The rows without a label in words (which partitions, the estimate and its interval), or "" when none."""
    n = overall.get("n_unlabelled") or 0
    if not n or overall.get("estimated_bce") is None:
        return ""
    parts = table.filter(pl.col("n_unlabelled") > 0) if "n_unlabelled" in table.columns else table.head(0)
    whole = parts.filter(pl.col("n_rows") == 0).height
    where = f" in {parts.height} partition(s), {whole} without any label yet" if parts.height else ""
    return (
        f"estimated (labels not arrived): {n:,} row(s){where}: expected BCE {overall['estimated_bce']:.4f} "
        f"(95% {overall['estimated_bce_low']:.4f} to {overall['estimated_bce_high']:.4f}), the model's own "
        "expectation from H(p), not a realized figure"
    )
