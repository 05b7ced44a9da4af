"""Reduce rows to per-partition sufficient statistics, and merge them exactly.

One pass over a chunk of partitions scores each row, computes its loss, counts bad input, and
aggregates per partition into a *record*: counts and sums that add up across files, chunks,
workers and nightly runs. BCE, accuracy, Brier score and the rest are ratios of those sums, so the
overall figure is Σ loss / Σ n over all rows (never a mean of partition means).

ROC AUC does not add up: it is computed exactly per partition (a chunk always holds whole
partitions) from average ranks, and overall from merged score histograms whose ties within a bin
are counted as one half; the reported ``roc_auc_bound`` is the largest possible error of that.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import polars as pl

from tasks.bce import PROBA_EPS, loss_expr_from_probabilities
from tasks.dataset import DataFile, Dataset, scan_files
from tasks._prefect import as_task
from tasks.errors import InputError
from tasks.model import Scorer

#: Columns of a record that add up exactly across files, chunks and runs.
SUM_COLUMNS = (
    "n_rows",
    "n_pos",
    "n_neg",
    "sum_loss",
    "sum_loss_sq",
    "sum_loss_pos",
    "n_correct",
    "sum_brier",
    "sum_p",
    "n_saturated",
)
#: Version of the metric code; part of every cache key (bump when a formula changes).
METRIC_VERSION = "1"

HIST_BINS = 4096

_S, _Y, _L, _E = "__score", "__y", "__loss", "__e"
#: −log(eps): beyond this |logit| a probability is within machine epsilon of 0 or 1
SATURATED_LOGIT = 36.04365338911715


def _score_columns(scorer: Scorer, label: str) -> list[pl.Expr]:
    if scorer.column is not None:
        s = pl.col(scorer.column).cast(pl.Float64)
    elif scorer.expression is not None:
        s = scorer.expression
    else:
        s = pl.col(_S)  # already added from numpy
    return [s.alias(_S), pl.col(label).cast(pl.Float64).alias(_Y)]


def _loss_columns(kind: str) -> list[pl.Expr]:
    """The row's loss (and, for a logit, e = exp(−|z|), computed once for the loss and for σ(z))."""
    s, y = pl.col(_S), pl.col(_Y)
    if kind == "logit":
        return [(-s.abs()).exp().alias(_E)]
    return [loss_expr_from_probabilities(s, y).alias(_L)]


def _logit_loss() -> pl.Expr:
    s, y = pl.col(_S), pl.col(_Y)
    return (s.clip(lower_bound=0.0) - s * y + pl.col(_E).log1p()).alias(_L)


def _probability(kind: str) -> pl.Expr:
    """P(y = 1): for a logit σ(z) = ½ + sign(z)·(1/(1 + e) − ½), no branch and no second exp."""
    if kind == "logit":
        return 0.5 + pl.col(_S).sign() * (1.0 / (1.0 + pl.col(_E)) - 0.5)
    return pl.col(_S)


def _with_loss(lf: pl.LazyFrame, kind: str) -> pl.LazyFrame:
    """Add the loss column (and e for a logit) to a frame that has the score and label columns."""
    lf = lf.with_columns(_loss_columns(kind))
    return lf.with_columns(_logit_loss()) if kind == "logit" else lf


def _fast_check_exprs(scorer: Scorer) -> list[pl.Expr]:
    """Bad-input counts that cost almost nothing in the hot pass.

    A null, NaN or infinite feature makes the linear logit null or non-finite (NaN·0 is NaN), so one
    count on the score covers every feature; labels outside {0, 1} or null are the rows that are
    neither positive nor negative (``n_rows − n_pos − n_neg``). Only when a count is not zero are the
    files checked column by column, to name the one at fault.
    """
    s = pl.col(_S)
    bad = (~s.is_finite()).fill_null(True)
    if scorer.kind == "probability":
        bad = bad | ((s < 0.0) | (s > 1.0)).fill_null(True)
    return [bad.sum().cast(pl.Int64).alias("bad_score")]


def _check_exprs(dataset: Dataset, scorer: Scorer) -> list[pl.Expr]:
    """Counts of bad input, computed in the same pass as the scoring."""
    raw_y = pl.col(dataset.label)
    y = raw_y.cast(pl.Float64)
    exprs = [
        raw_y.is_null().sum().alias("bad_label_null"),
        (~y.is_in([0.0, 1.0])).fill_null(False).sum().alias("bad_label_value"),
    ]
    for i, col in enumerate(scorer.features):
        x = pl.col(col).cast(pl.Float64)
        exprs.append((x.is_null() | ~x.is_finite()).fill_null(True).sum().alias(f"bad_feature_{i}"))
    if scorer.column is not None:
        s = pl.col(scorer.column).cast(pl.Float64)
        bad = s.is_null() | ~s.is_finite()
        if scorer.kind == "probability":
            bad = bad | (s < 0) | (s > 1)
        exprs.append(bad.fill_null(True).sum().alias("bad_score"))
    return exprs


def _stat_exprs(kind: str, with_auc: bool) -> list[pl.Expr]:
    s, y, loss = pl.col(_S), pl.col(_Y), pl.col(_L)
    p = _probability(kind)
    pred = (s > 0.0) if kind == "logit" else (s > 0.5)
    saturated = (s.abs() >= SATURATED_LOGIT) if kind == "logit" else ((s <= PROBA_EPS) | (s >= 1.0 - PROBA_EPS))
    exprs = [
        pl.len().cast(pl.Int64).alias("n_rows"),
        (y == 1.0).sum().cast(pl.Int64).alias("n_pos"),
        (y == 0.0).sum().cast(pl.Int64).alias("n_neg"),
        loss.sum().alias("sum_loss"),
        (loss * loss).sum().alias("sum_loss_sq"),
        (loss * y).sum().alias("sum_loss_pos"),
        (pred == (y == 1.0)).sum().cast(pl.Int64).alias("n_correct"),
        ((p - y) ** 2).sum().alias("sum_brier"),
        p.sum().alias("sum_p"),
        saturated.sum().cast(pl.Int64).alias("n_saturated"),
    ]
    if with_auc:
        n_pos = (y == 1.0).sum().cast(pl.Float64)
        n_neg = (y == 0.0).sum().cast(pl.Float64)
        rank_sum = pl.col("__rank").filter(y == 1.0).sum()
        auc = (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
        exprs.append(pl.when((n_pos > 0) & (n_neg > 0)).then(auc).otherwise(None).alias("roc_auc"))
    return exprs


def _hist_bin(kind: str) -> pl.Expr:
    # bins of equal width in probability: a monotone map of the score, so AUC's order is kept
    # NaN scores (bad input, reported by the checks of the same pass) must not break the cast
    return (_probability(kind).clip(0.0, 1.0) * HIST_BINS).floor().clip(0, HIST_BINS - 1).cast(pl.Int32, strict=False).alias("bin")


def _raise_bad_input(dataset: Dataset, scorer: Scorer, files: list[DataFile], checks: dict[str, int]) -> None:
    """Turn non-zero bad-input counts into one clear error naming the file and column."""
    culprit = None
    for f in files:  # only on the error path: find the first file at fault, column by column
        row = scan_files(dataset, [f]).select(_check_exprs(dataset, scorer)).collect().row(0, named=True)
        if any(v for v in row.values()):
            culprit, checks = f.path, row
            break
    if culprit is None:
        # every column is clean, yet the score is not finite: the logit overflowed
        raise InputError(
            f"{files[0].path}: the model's score is not finite for {checks.get('bad_score', '?')} row(s) although the "
            "features are; feature values are too large for the model (overflow). Rescale them."
        )
    lab = dataset.label
    if checks.get("bad_label_null"):
        raise InputError(
            f"{culprit}: label column {lab!r} has {checks['bad_label_null']} null value(s); labels must be 0 or 1."
        )
    if checks.get("bad_label_value"):
        y = pl.col(lab).cast(pl.Float64)
        example = (
            scan_files(dataset, [f for f in files if f.path == culprit] or files)
            .filter(~y.is_in([0.0, 1.0]).fill_null(False))
            .select(pl.col(lab))
            .head(1)
            .collect()
            .item()
        )
        raise InputError(
            f"{culprit}: label column {lab!r} has value {example!r} ({checks['bad_label_value']} row(s) not 0/1); "
            "labels must be 0 or 1 (map the classes to 0/1 first)."
        )
    for i, col in enumerate(scorer.features):
        n_bad = checks.get(f"bad_feature_{i}", 0)
        if n_bad:
            raise InputError(
                f"{culprit}: feature column {col!r} has {n_bad} null or non-finite value(s) (NaN/inf); "
                "drop or impute such rows first."
            )
    if checks.get("bad_score"):
        rule = "a probability in [0, 1]" if scorer.kind == "probability" else "a finite logit"
        raise InputError(
            f"{culprit}: score column {scorer.column!r} has {checks['bad_score']} value(s) that are not {rule}."
        )


def reduce_chunk(dataset: Dataset, scorer: Scorer, files: list[DataFile], with_auc: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score one chunk of whole partitions in one pass and reduce it.

    Returns ``(records, histogram)``: one record per partition (the partition columns, the sums of
    :data:`SUM_COLUMNS` and ``roc_auc``), and per-score-bin counts ``(bin, n, n_pos)`` for the
    overall ROC AUC. Raises :class:`InputError` (naming the file and column) on nulls,
    non-finite features or scores, or labels outside {0, 1}.
    """
    try:
        return _reduce_chunk(dataset, scorer, files, with_auc)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, OSError) as exc:
        # a file whose footer read fine but whose data pages do not: name it
        for f in files:
            try:
                scan_files(dataset, [f]).collect()
            except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, OSError) as file_exc:
                reason = str(file_exc).splitlines()[0]
                raise InputError(f"{f.path}: cannot read its data ({reason}); the file may be corrupt.") from exc
        raise


def _reduce_chunk(dataset: Dataset, scorer: Scorer, files: list[DataFile], with_auc: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    keys = list(dataset.partition_by)
    lf = scan_files(dataset, files)
    if scorer.model is not None:
        # Any classifier: materialise this chunk's features, check them before the model sees them.
        df = lf.collect()
        checks = df.select(_check_exprs(dataset, scorer)).row(0, named=True)
        if any(checks.values()):
            _raise_bad_input(dataset, scorer, files, checks)
        X = df.select(pl.col(c).cast(pl.Float64) for c in scorer.features).to_numpy()
        lf = df.lazy().with_columns(pl.Series(_S, scorer.score_numpy(X)))
    scored = _with_loss(lf.with_columns(_score_columns(scorer, dataset.label)), scorer.kind)
    if with_auc:
        rank = pl.col(_S).rank("average")
        scored = scored.with_columns((rank.over(keys) if keys else rank).cast(pl.Float64).alias("__rank"))
    aggs = [*_stat_exprs(scorer.kind, with_auc), *_fast_check_exprs(scorer)]
    grouped = scored.group_by(keys).agg(aggs) if keys else scored.select(aggs)
    if with_auc:
        # per partition, so cached partitions can be merged into the overall AUC later
        hist = scored.group_by([*keys, _hist_bin(scorer.kind)]).agg(
            pl.len().cast(pl.Int64).alias("n"), (pl.col(_Y) == 1.0).sum().cast(pl.Int64).alias("n_pos")
        )
        records, histogram = pl.collect_all([grouped, hist], engine="streaming")
    else:
        records, histogram = grouped.collect(engine="streaming"), pl.DataFrame(
            schema={**{k: pl.String for k in keys}, "bin": pl.Int32, "n": pl.Int64, "n_pos": pl.Int64}
        )
    totals = records.select(
        pl.col("bad_score").sum(), (pl.col("n_rows") - pl.col("n_pos") - pl.col("n_neg")).sum().alias("bad_label")
    ).row(0, named=True)
    if totals["bad_score"] or totals["bad_label"]:
        _raise_bad_input(dataset, scorer, files, totals)
    records = records.drop("bad_score")
    if not keys:
        records = records.with_columns(pl.lit("all").alias("partition"))
        histogram = histogram.with_columns(pl.lit("all").alias("partition"))
    return records, histogram


def merge_records(records: Iterable[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Add up records of the same partition (from files, chunks, workers or cached runs)."""
    frames = [r for r in records if r.height]
    df = pl.concat(frames, how="diagonal_relaxed")
    group = keys or ["partition"]
    aggs = [pl.col(c).sum() for c in SUM_COLUMNS]
    if "roc_auc" in df.columns:
        # a partition's AUC comes from one chunk; more than one record means it cannot be merged
        aggs.append(pl.when(pl.len() == 1).then(pl.col("roc_auc").first()).otherwise(None).alias("roc_auc"))
    return df.group_by(group, maintain_order=True).agg(aggs).sort(group)


def merge_histograms(histograms: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Add up per-bin score counts."""
    frames = [h.select("bin", "n", "n_pos") for h in histograms if h.height]
    if not frames:
        return pl.DataFrame(schema={"bin": pl.Int32, "n": pl.Int64, "n_pos": pl.Int64})
    return pl.concat(frames).group_by("bin").agg(pl.col("n").sum(), pl.col("n_pos").sum()).sort("bin")


def auc_from_histogram(hist: pl.DataFrame) -> tuple[float | None, float | None]:
    """ROC AUC from per-bin counts, and the largest possible error of counting ties as halves.

    With positives ``pᵦ`` and negatives ``nᵦ`` in bin b (bins in increasing score order),
    AUC ≈ [Σᵦ pᵦ·(negatives in lower bins) + ½ Σᵦ pᵦ·nᵦ] / (P·N); the true AUC differs by at most
    ½ Σᵦ pᵦ·nᵦ / (P·N), the share of pairs that share a bin.
    """
    h = hist.sort("bin")
    pos = h.get_column("n_pos").to_numpy().astype(np.float64)
    neg = h.get_column("n").to_numpy().astype(np.float64) - pos
    P, N = pos.sum(), neg.sum()
    if P == 0 or N == 0:
        return None, None
    neg_below = np.cumsum(neg) - neg
    ties = float(np.sum(pos * neg))
    auc = (float(np.sum(pos * neg_below)) + 0.5 * ties) / (P * N)
    return auc, 0.5 * ties / (P * N)


def finalize_table(merged: pl.DataFrame) -> pl.DataFrame:
    """The per-partition table a reviewer reads: figures derived from the summed statistics."""
    n = pl.col("n_rows").cast(pl.Float64)
    n_pos = pl.col("n_pos").cast(pl.Float64)
    single = (pl.col("n_pos") == 0) | (pl.col("n_pos") == pl.col("n_rows"))
    var = (pl.col("sum_loss_sq") / n - (pl.col("sum_loss") / n) ** 2).clip(lower_bound=0.0)
    df = merged.with_columns(
        (pl.col("sum_loss") / n).alias("bce"),
        (var.sqrt() / n.sqrt()).alias("bce_se"),
        (pl.col("sum_loss") / n - 1.959963984540054 * var.sqrt() / n.sqrt()).alias("bce_low"),
        (pl.col("sum_loss") / n + 1.959963984540054 * var.sqrt() / n.sqrt()).alias("bce_high"),
        (n_pos / n).alias("positive_rate"),
        (pl.col("n_correct") / n).alias("accuracy"),
        (pl.col("sum_brier") / n).alias("brier"),
        (pl.col("sum_p") / n).alias("mean_predicted"),
        pl.when(pl.col("n_pos") > 0).then(pl.col("sum_loss_pos") / n_pos).otherwise(None).alias("bce_pos"),
        pl.when(pl.col("n_pos") < pl.col("n_rows"))
        .then((pl.col("sum_loss") - pl.col("sum_loss_pos")) / (n - n_pos))
        .otherwise(None)
        .alias("bce_neg"),
        pl.when(single)
        .then(pl.when(pl.col("n_pos") == 0).then(pl.lit("single class (all 0)")).otherwise(pl.lit("single class (all 1)")))
        .otherwise(pl.lit(""))
        .alias("note"),
    )
    if "roc_auc" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("roc_auc"))
    return df


def overall_row(merged: pl.DataFrame, hist: pl.DataFrame) -> dict[str, float | int | None]:
    """Overall figures: Σ over all rows of each statistic, then the same ratios as per partition."""
    totals = merged.select(pl.col(c).sum() for c in SUM_COLUMNS).row(0, named=True)
    n, n_pos = totals["n_rows"], totals["n_pos"]
    mean = totals["sum_loss"] / n
    var = max(totals["sum_loss_sq"] / n - mean * mean, 0.0)
    auc, bound = auc_from_histogram(hist)
    return {
        "bce": mean,
        "bce_se": math.sqrt(var / n),
        "n_rows": n,
        "n_pos": n_pos,
        "positive_rate": n_pos / n,
        "accuracy": totals["n_correct"] / n,
        "brier": totals["sum_brier"] / n,
        "mean_predicted": totals["sum_p"] / n,
        "bce_pos": totals["sum_loss_pos"] / n_pos if n_pos else None,
        "bce_neg": (totals["sum_loss"] - totals["sum_loss_pos"]) / (n - n_pos) if n_pos < n else None,
        "n_saturated": totals["n_saturated"],
        "roc_auc": auc,
        "roc_auc_bound": bound,
        "n_partitions": merged.height,
    }


def summarize_records(
    records: list[pl.DataFrame], histograms: list[pl.DataFrame], keys: list[str]
) -> tuple[pl.DataFrame, dict[str, float | int | None]]:
    """Merge chunk records into the per-partition table and the overall row."""
    merged = merge_records(records, keys)
    return finalize_table(merged), overall_row(merged, merge_histograms(histograms))


reduce_chunk_task = as_task(reduce_chunk, name="reduce-chunk")
summarize_records_task = as_task(summarize_records, name="merge-records")


def check_frame(dataset: Dataset, scorer: Scorer, files: list[DataFile], frame: pl.DataFrame) -> None:
    """Raise :class:`InputError` (naming file and column) if ``frame`` holds bad input for ``scorer``."""
    checks = frame.select(_check_exprs(dataset, scorer)).row(0, named=True)
    if any(checks.values()):
        _raise_bad_input(dataset, scorer, files, checks)


def row_losses(frame: pl.DataFrame, scorer: Scorer, label: str) -> pl.Series:
    """Each row's BCE under ``scorer`` (logit: exact; probability: clipped like scikit-learn)."""
    if scorer.model is not None:
        X = frame.select(pl.col(c).cast(pl.Float64) for c in scorer.features).to_numpy()
        frame = frame.with_columns(pl.Series(_S, scorer.score_numpy(X)))
    scored = _with_loss(frame.lazy().with_columns(_score_columns(scorer, label)), scorer.kind)
    return scored.select(_L).collect().to_series()
