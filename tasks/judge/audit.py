"""A BCE audit per partition (``--audit``): why the number is what it is, and why tools disagree.

For every partition, from one extra pass over its rows:

- BCE split by true class (mean loss on positives, on negatives), as the seed's Figures 9-10 do;
- saturation: rows whose predicted probability is exactly 0 or 1 in float64;
- BCE three ways: exact from logits (the project's figure); as ``sklearn.metrics.log_loss``
  computes it (p = σ(z) rounded to float64, clipped to [eps, 1 − eps], eps = 2.22e-16: capped at
  36.04, and imprecise where p rounds near 1); and under Keras' rule (p clipped to [1e-7, 1 − 1e-7],
  then 1e-7 added inside each log), evaluated in float64;
- a calibration/refinement split: the BCE left after recalibrating the partition's probabilities
  by 20 equal-width bins (each bin predicts its observed positive rate; fitted on the same rows,
  so it is in-sample and optimistic), and the part of BCE that recalibration removes;
- the rows with the largest losses (with partition, features, label, probability, loss).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.data.dataset import DataFile, Dataset, scan_files
from tasks.data.slicing import Slicing, cell_expression
from tasks.metrics.bad_input import check_frame
from tasks.metrics.loss import PROBA_EPS, frame_losses, sigmoid
from tasks.models.scoring import Scorer

KERAS_EPS = 1e-7
CALIBRATION_BINS = 20


def sklearn_rule(p: pl.Expr, y: pl.Expr) -> pl.Expr:
    """``sklearn.metrics.log_loss`` per row, literally: p (float64, rounded) clipped to [eps, 1 − eps]."""
    pc = p.clip(PROBA_EPS, 1.0 - PROBA_EPS)
    return pl.when(y == 1.0).then(-pc.log()).otherwise(-(1.0 - pc).log())


def keras_rule(p: pl.Expr, y: pl.Expr) -> pl.Expr:
    """Keras' ``binary_crossentropy`` per row, in float64: p clipped to [1e-7, 1 − 1e-7], 1e-7 added in the logs."""
    pc = p.clip(KERAS_EPS, 1.0 - KERAS_EPS)
    return -(y * (pc + KERAS_EPS).log() + (1.0 - y) * (1.0 - pc + KERAS_EPS).log())


def audit_chunk(
    dataset: Dataset, scorer: Scorer, files: list[DataFile], top_k: int = 20
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(per-partition audit sums, per-partition calibration bins, the chunk's largest losses).

    With slice columns the sums and bins are per cell (partition × slice values), to roll up per slicing; with a
    weight column each row's terms are weighted (the counts are not).
    """
    parts = list(dataset.partition_by) or ["partition"]
    keys = [*parts, *(c.name for c in dataset.cells)]
    frame = scan_files(dataset, files).filter(pl.col(dataset.label).is_not_null()).collect()  # late labels: estimated
    check_frame(dataset, scorer, files, frame)
    if not dataset.partition_by:
        frame = frame.with_columns(pl.lit("all").alias("partition"))
    loss = frame_losses(frame, scorer, dataset.label, dataset.text_features)
    y = frame.get_column(dataset.label).cast(pl.Float64)
    score = scorer.score_frame(frame, dataset.text_features)
    p = pl.Series("p", sigmoid(score) if scorer.kind == "logit" else score)
    w = frame.get_column(dataset.weight).cast(pl.Float64) if dataset.weight else None
    df = frame.select(*parts, *(cell_expression(c) for c in dataset.cells)).with_columns(
        loss.alias("loss"), y.alias("y"), p
    )

    def weighted(e: pl.Expr) -> pl.Expr:  # without weights, the plain sum (the same bits as before)
        return e if w is None else e * pl.col("w")

    if w is not None:
        df = df.with_columns(w.alias("w"))
    sums = df.group_by(keys).agg(
        pl.len().cast(pl.Int64).alias("n_rows"),
        (pl.len().cast(pl.Float64) if w is None else pl.col("w").sum()).alias("sum_w"),
        weighted(pl.col("loss")).sum().alias("sum_loss"),
        weighted(sklearn_rule(pl.col("p"), pl.col("y"))).sum().alias("sum_loss_sklearn"),
        weighted(keras_rule(pl.col("p"), pl.col("y"))).sum().alias("sum_loss_keras"),
        (pl.col("p") == 0.0).sum().cast(pl.Int64).alias("n_p_zero"),
        (pl.col("p") == 1.0).sum().cast(pl.Int64).alias("n_p_one"),
    )
    bins = (
        df.with_columns(
            (pl.col("p") * CALIBRATION_BINS).floor().clip(0, CALIBRATION_BINS - 1).cast(pl.Int32).alias("bin")
        )
        .group_by([*keys, "bin"])
        .agg(
            (pl.len().cast(pl.Int64) if w is None else pl.col("w").sum()).alias("n"),
            weighted(pl.col("y")).sum().alias("sum_y"),
        )
    )
    # (a feature may also be a partition key: a model can take the hive key as text)
    extra = [
        c
        for c in (*dataset.features, *([scorer.column] if scorer.column else []))
        if c in frame.columns and c not in parts
    ]
    top = (
        frame.select([*parts, *extra])
        .with_columns(y.alias("y"), p, loss.alias("loss"))
        .sort("loss", descending=True)
        .head(top_k)
    )
    return sums, bins, top


def _entropy(rate: np.ndarray) -> np.ndarray:
    r = np.clip(rate, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(r > 0, r * np.log(r), 0.0) + np.where(r < 1, (1 - r) * np.log1p(-r), 0.0))
    return h


_AUDIT_SUMS = ("n_rows", "sum_w", "sum_loss", "sum_loss_sklearn", "sum_loss_keras", "n_p_zero", "n_p_one")


def summarize_audit(
    sums: list[pl.DataFrame],
    bins: list[pl.DataFrame],
    tops: list[pl.DataFrame],
    keys: list[str],
    table: pl.DataFrame,
    top_k: int = 20,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The per-partition audit table and the largest losses overall."""
    audit = audit_table(
        pl.concat(sums, how="diagonal_relaxed"), pl.concat(bins, how="diagonal_relaxed"), keys or ["partition"], table
    )
    top = pl.concat(tops, how="diagonal_relaxed").sort("loss", descending=True).head(top_k)
    return audit, top


def summarize_audit_slices(
    sums: list[pl.DataFrame], bins: list[pl.DataFrame], slicings: list[Slicing] | tuple[Slicing, ...], tables: dict
) -> dict[str, pl.DataFrame]:
    """Each slicing's audit table (by its key), rolled up from the cells' audit sums and calibration bins."""
    s, b = pl.concat(sums, how="diagonal_relaxed"), pl.concat(bins, how="diagonal_relaxed")
    out = {}
    for slicing in slicings:
        keep = [pl.col(t.cell.name).cast(pl.String) == t.value for t in slicing.terms if t.value is not None]
        out[slicing.key] = audit_table(
            s.filter(*keep) if keep else s, b.filter(*keep) if keep else b, slicing.columns, tables[slicing.key]
        )
    return out


def audit_table(s: pl.DataFrame, b: pl.DataFrame, keys: list[str], table: pl.DataFrame) -> pl.DataFrame:
    """The audit's figures per value of ``keys``, from its sums and calibration bins added up (weighted by Σ w)."""
    s = s.group_by(keys).agg(pl.col(c).sum() for c in _AUDIT_SUMS)
    b = b.group_by([*keys, "bin"]).agg(pl.col("n").sum(), pl.col("sum_y").sum())
    b = b.with_columns(pl.Series("h", _entropy((b.get_column("sum_y") / b.get_column("n")).to_numpy())))
    recal = b.group_by(keys).agg((pl.col("n") * pl.col("h")).sum().alias("sum_recalibrated"))
    n = pl.col("sum_w")
    return (
        s.join(recal, on=keys, how="left", nulls_equal=True)
        .join(table.select([*keys, "bce_pos", "bce_neg"]), on=keys, how="left", nulls_equal=True)
        .with_columns(
            (pl.col("sum_loss") / n).alias("bce_exact"),
            (pl.col("sum_loss_sklearn") / n).alias("bce_sklearn_clip"),
            (pl.col("sum_loss_keras") / n).alias("bce_keras_clip"),
            (pl.col("sum_recalibrated") / n).alias("bce_recalibrated"),
        )
        .with_columns((pl.col("bce_exact") - pl.col("bce_recalibrated")).alias("calibration_part"))
        .select(
            [
                *keys,
                "n_rows",
                "bce_exact",
                "bce_sklearn_clip",
                "bce_keras_clip",
                "bce_pos",
                "bce_neg",
                "n_p_zero",
                "n_p_one",
                "bce_recalibrated",
                "calibration_part",
            ]
        )
        .sort(keys, nulls_last=True)
    )
