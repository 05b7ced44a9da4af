"""Reduce rows to per-partition sufficient statistics, and merge them exactly.

One streaming pass over a chunk of partitions scores each row, computes its loss, counts bad input,
and adds it to its partition's *record*: counts and sums that add up across files, chunks, workers
and nightly runs. BCE, accuracy, Brier score and the rest are ratios of those sums, so the overall
figure is Σ loss / Σ n over all rows (never a mean of partition means).

Polars decodes the columns and computes a linear model's logit inside the scan; the per-row loop
(:mod:`tasks.kernels`) runs on each batch while Polars decodes the next one. Partitions that are
hive folders need no key column at all: a file's rows belong to one partition.

ROC AUC does not add up: it comes from per-partition score histograms (4096 bins of equal width
in probability), merged per partition and overall, with ties within a bin counted as one half; the
reported ``roc_auc_bound`` is the largest possible error of that. ``exact_auc`` adds the exact
per-partition AUC from average ranks (a chunk always holds whole partitions), at the cost of a sort.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import polars as pl

from tasks.bce import loss_expr_from_logits, loss_expr_from_probabilities
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
METRIC_VERSION = "2"

_S, _Y = "__score", "__y"


def _score_columns(scorer: Scorer, label: str) -> list[pl.Expr]:
    if scorer.column is not None:
        s = pl.col(scorer.column).cast(pl.Float64)
    elif scorer.expression is not None:
        s = scorer.expression
    else:
        s = pl.col(_S)  # already added from numpy
    return [s.alias(_S), pl.col(label).cast(pl.Float64).alias(_Y)]


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


def reduce_chunk(
    dataset: Dataset, scorer: Scorer, files: list[DataFile], exact_auc: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score one chunk of whole partitions in one streaming pass and reduce it.

    Returns ``(records, histogram)``: one record per partition (the partition columns, the sums of
    :data:`SUM_COLUMNS`, and ``roc_auc`` from average ranks when ``exact_auc``), and per-partition
    score-bin counts ``(bin, n, n_pos)`` from which ROC AUC is computed per partition and overall.
    Raises :class:`InputError` (naming the file and column) on nulls, non-finite features or
    scores, or labels outside {0, 1}.
    """
    try:
        return _reduce_chunk(dataset, scorer, files, exact_auc)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, OSError) as exc:
        # a file whose footer read fine but whose data pages do not: name it
        for f in files:
            try:
                scan_files(dataset, [f]).collect()
            except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, OSError) as file_exc:
                reason = str(file_exc).splitlines()[0]
                raise InputError(f"{f.path}: cannot read its data ({reason}); the file may be corrupt.") from exc
        raise


class _Partitions:
    """Partition numbers of the rows of each batch, as runs of consecutive rows.

    When every partition key is a hive folder, a file's rows are all in one partition: runs follow
    from the files' row counts (from their footers) and the scan's order, and no key is read per
    row. Otherwise the key columns come with each batch and runs are found where they change.
    """

    def __init__(self, dataset: Dataset, files: list[DataFile]) -> None:
        self.keys = list(dataset.partition_by)
        self.by_files = all(k in dataset.hive_keys for k in self.keys)
        self.index: dict[tuple, int] = {}
        self.offset = 0
        if self.by_files:
            file_part = [self._number(tuple(f.hive[k] for k in self.keys)) for f in files]
            self.file_part = np.asarray(file_part, dtype=np.int64)
            self.file_ends = np.cumsum([f.num_rows for f in files], dtype=np.int64)

    def _number(self, key: tuple) -> int:
        return self.index.setdefault(key, len(self.index))

    @property
    def columns(self) -> list[str]:
        """Key columns each batch must carry."""
        return [] if self.by_files else self.keys

    def runs(self, batch: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(run_ends, run_ids)`` of a batch: run r is rows up to ``run_ends[r]``, partition ``run_ids[r]``."""
        n = batch.height
        start, self.offset = self.offset, self.offset + n
        if self.by_files:
            first = int(np.searchsorted(self.file_ends, start, side="right"))
            last = int(np.searchsorted(self.file_ends, start + n - 1, side="right"))
            ends = np.minimum(self.file_ends[first : last + 1], start + n) - start
            return ends, self.file_part[first : last + 1]
        keys = batch.select(self.keys)
        changed = pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(1)) for k in self.keys)
        starts = np.flatnonzero(keys.select(changed.fill_null(True)).to_series().to_numpy())
        ids = [self._number(row) for row in keys[starts].rows()]
        return np.append(starts[1:], n).astype(np.int64), np.asarray(ids, dtype=np.int64)

    def frame(self, schema: pl.Schema | None) -> pl.DataFrame:
        """The key columns of every partition number, in number order."""
        rows = list(self.index)
        if not self.keys:
            return pl.DataFrame({"partition": ["all"] * len(rows)})
        if self.by_files or schema is None:
            return pl.DataFrame(rows, schema={k: pl.String for k in self.keys}, orient="row")
        return pl.DataFrame(rows, schema={k: schema[k] for k in self.keys}, orient="row")


def _batch_scores(scorer: Scorer, batch: pl.DataFrame, dataset: Dataset, files: list[DataFile]) -> np.ndarray:
    if scorer.model is None:
        return batch.get_column(_S).to_numpy()
    X = batch.select(scorer.features).to_numpy()
    if not np.isfinite(X).all():
        # before the model sees them (it may fail or return nonsense): name the file and column
        _raise_bad_input(dataset, scorer, files, {"bad_score": int((~np.isfinite(X)).any(axis=1).sum())})
    return scorer.score_numpy(X)


def _scan_columns(dataset: Dataset, scorer: Scorer, keys: list[str]) -> list[pl.Expr]:
    nan = float("nan")
    if scorer.model is not None:
        score = [pl.col(c).cast(pl.Float64).fill_null(nan) for c in scorer.features]
    else:
        # nulls become NaN, which the pass counts as bad scores (a null feature makes the logit null)
        score = [_score_columns(scorer, dataset.label)[0].fill_null(nan)]
    label = pl.col(dataset.label).cast(pl.Float64).fill_null(nan).alias(_Y)
    return [*score, label, *[pl.col(k) for k in keys]]


def _reduce_chunk(dataset: Dataset, scorer: Scorer, files: list[DataFile], exact_auc: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    from tasks import kernels

    parts = _Partitions(dataset, files)
    logit = scorer.kind == "logit"
    stats = np.zeros((max(len(parts.index), 16), len(kernels.STATS)))
    hist_n = np.zeros(kernels.HIST_BINS, np.int64)
    hist_pos = np.zeros(kernels.HIST_BINS, np.int64)
    touched = np.zeros(kernels.HIST_BINS, np.int32)
    state = kernels.new_state()
    bins_out: list[np.ndarray] = []
    flushes_out: list[np.ndarray] = []
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (ids, scores, labels) for exact AUC
    schema = None
    scratch = kernels.Batch(65_536)
    query = scan_files(dataset, files).select(_scan_columns(dataset, scorer, parts.columns))
    # Polars' own batches (whole morsels, no copy) unless files are small: then one batch per file
    # would cost more in calls than in rows. Either way, the same files give the same batches, so
    # the same sums to the last bit, run after run.
    small_files = sum(f.num_rows for f in files) < 32_768 * len(files)
    for batch in query.collect_batches(chunk_size=65_536 if small_files else None):
        if not batch.height:
            continue
        schema = batch.schema
        s = _batch_scores(scorer, batch, dataset, files)
        y = batch.get_column(_Y).to_numpy()
        run_ends, run_ids = parts.runs(batch)
        if len(parts.index) > stats.shape[0]:
            stats = np.vstack([stats, np.zeros((max(len(parts.index), 2 * stats.shape[0]) - stats.shape[0], stats.shape[1]))])
        s, a, b, y, p = scratch.load(s, y, logit)
        n_out, n_flush = kernels.reduce_batch(
            s, a, b, y, run_ends, run_ids, logit, stats, hist_n, hist_pos, touched, state, scratch.out, scratch.flushes, p
        )
        bins_out.append(scratch.out[:n_out].copy())
        flushes_out.append(scratch.flushes[:n_flush].copy())
        if state[2]:
            break  # bad input: stop reading, say where below
        if exact_auc:
            kept.append((np.repeat(run_ids, np.diff(run_ends, prepend=0)), s.copy(), y.copy()))
    n_out, n_flush = kernels.close_histogram(hist_n, hist_pos, touched, state, scratch.out, scratch.flushes)
    bins_out.append(scratch.out[:n_out].copy())
    flushes_out.append(scratch.flushes[:n_flush].copy())

    stats = stats[: len(parts.index)]
    bad_score, bad_label = (int(v) for v in stats[:, -2:].sum(axis=0))
    if bad_score or bad_label:
        _raise_bad_input(dataset, scorer, files, {"bad_score": bad_score, "bad_label": bad_label})
    keys_frame = parts.frame(schema).with_row_index("__part")
    key_columns = keys_frame.columns[1:]
    sums = {name: stats[:, j] for j, name in enumerate(kernels.STATS) if name in SUM_COLUMNS}
    records = keys_frame.with_columns(
        pl.Series(name, values).cast(pl.Int64 if name.startswith("n_") else pl.Float64) for name, values in sums.items()
    )
    bins = np.concatenate(bins_out)
    flushes = np.concatenate(flushes_out)
    whole = len(np.unique(flushes[:, 0])) == len(flushes)
    histogram = pl.DataFrame(
        {"__part": bins[:, 0].astype(np.uint32), "bin": bins[:, 1].astype(np.int32), "n": bins[:, 2], "n_pos": bins[:, 3]}
    )
    if not whole:
        histogram = histogram.group_by("__part", "bin").agg(pl.col("n").sum(), pl.col("n_pos").sum())
    index = histogram.get_column("__part")
    histogram = histogram.select(*(keys_frame.get_column(k).gather(index) for k in key_columns), "bin", "n", "n_pos")
    if whole:
        # each partition's histogram was written once, whole: its AUC sums came with it
        roc_auc, bound = _auc_from_sums(*flushes[:, 1:5].T)
        auc = pl.DataFrame(
            {"__part": flushes[:, 0].astype(np.uint32), "roc_auc": roc_auc, "roc_auc_bound": bound}
        ).fill_nan(None)
    else:  # rows of a partition came in several runs (keys that are columns): merge its bins first
        auc = auc_by_partition([histogram], key_columns).join(keys_frame, on=key_columns, nulls_equal=True).drop(key_columns)
    if exact_auc:
        auc = _exact_auc(kept).with_columns(pl.when(pl.col("roc_auc").is_not_null()).then(0.0).alias("roc_auc_bound"))
    records = records.join(auc, on="__part", how="left").filter(pl.col("n_rows") > 0).drop("__part")
    return records, histogram


def _exact_auc(kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pl.DataFrame:
    """ROC AUC of each partition from average ranks (Mann–Whitney U), exact for ties."""
    if not kept:
        return pl.DataFrame(schema={"__part": pl.UInt32, "roc_auc": pl.Float64})
    ids, s, y = (np.concatenate(col) for col in zip(*kept))
    df = pl.DataFrame({"__part": ids.astype(np.uint32), _S: s, _Y: y})
    pos = pl.col(_Y) == 1.0
    n_pos, n_neg = pos.sum().cast(pl.Float64), (~pos).sum().cast(pl.Float64)
    rank_sum = pl.col(_S).rank("average").filter(pos).sum()
    auc = (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    return df.group_by("__part").agg(pl.when((n_pos > 0) & (n_neg > 0)).then(auc).otherwise(None).alias("roc_auc"))


def merge_records(records: Iterable[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Add up records of the same partition (from files, chunks, workers or cached runs)."""
    frames = [r for r in records if r.height]
    df = pl.concat(frames, how="diagonal_relaxed")
    group = keys or ["partition"]
    aggs = [pl.col(c).sum() for c in SUM_COLUMNS]
    for col in ("roc_auc", "roc_auc_bound"):
        if col in df.columns:
            # a partition's AUC comes from one chunk; more than one record means it cannot be merged
            aggs.append(pl.when(pl.len() == 1).then(pl.col(col).first()).otherwise(None).alias(col))
    return df.group_by(group, maintain_order=True).agg(aggs).sort(group)


def merge_histograms(histograms: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Add up per-bin score counts."""
    frames = [h.select("bin", "n", "n_pos") for h in histograms if h.height]
    if not frames:
        return pl.DataFrame(schema={"bin": pl.Int32, "n": pl.Int64, "n_pos": pl.Int64})
    return pl.concat(frames).group_by("bin").agg(pl.col("n").sum(), pl.col("n_pos").sum()).sort("bin")


def _auc_from_sums(P: np.ndarray, N: np.ndarray, A: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC = (A + T/2)/(P·N) and its bound T/(2·P·N); NaN where a class is missing.

    ``P``/``N`` count positives/negatives, ``A`` = Σᵦ pᵦ·(negatives in lower bins) and
    ``T`` = Σᵦ pᵦ·nᵦ (pairs that share a bin, counted as one half).
    """
    both = (P > 0) & (N > 0)
    with np.errstate(all="ignore"):
        return np.where(both, (A + 0.5 * T) / (P * N), np.nan), np.where(both, 0.5 * T / (P * N), np.nan)


def auc_from_histogram(hist: pl.DataFrame) -> tuple[float | None, float | None]:
    """ROC AUC from per-bin counts, and the largest possible error of counting ties as halves.

    With positives ``pᵦ`` and negatives ``nᵦ`` in bin b (bins in increasing score order),
    AUC ≈ [Σᵦ pᵦ·(negatives in lower bins) + ½ Σᵦ pᵦ·nᵦ] / (P·N); the true AUC differs by at most
    ½ Σᵦ pᵦ·nᵦ / (P·N), the share of pairs that share a bin.
    """
    h = hist.sort("bin")
    pos = h.get_column("n_pos").to_numpy().astype(np.float64)
    neg = h.get_column("n").to_numpy().astype(np.float64) - pos
    neg_below = np.cumsum(neg) - neg
    auc, bound = _auc_from_sums(pos.sum(), neg.sum(), np.sum(pos * neg_below), np.sum(pos * neg))
    return (None, None) if np.isnan(auc) else (float(auc), float(bound))


def auc_by_partition(histograms: Iterable[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Each partition's ROC AUC and its bound from its merged histogram (see :func:`auc_from_histogram`)."""
    group = keys or ["partition"]
    frames = [h for h in histograms if h.height]
    if not frames:
        return pl.DataFrame(schema={**{k: pl.String for k in group}, "roc_auc": pl.Float64, "roc_auc_bound": pl.Float64})
    n, n_pos = pl.col("n").cast(pl.Float64), pl.col("n_pos").cast(pl.Float64)
    h = (
        pl.concat(frames, how="diagonal_relaxed")
        .group_by([*group, "bin"])
        .agg(n.sum(), n_pos.sum())
        .sort([*group, "bin"])
        .with_columns((pl.col("n") - pl.col("n_pos")).alias("neg"))
        .with_columns((pl.col("neg").cum_sum().over(group) - pl.col("neg")).alias("neg_below"))
    )
    sums = h.group_by(group).agg(
        pl.col("n_pos").sum().alias("P"),
        pl.col("neg").sum().alias("N"),
        (pl.col("n_pos") * pl.col("neg_below")).sum().alias("A"),
        (pl.col("n_pos") * pl.col("neg")).sum().alias("T"),
    )
    auc, bound = _auc_from_sums(*(sums.get_column(c).to_numpy() for c in "PNAT"))
    return sums.select(group).with_columns(
        pl.Series("roc_auc", auc).fill_nan(None), pl.Series("roc_auc_bound", bound).fill_nan(None)
    )


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
    for col in ("roc_auc", "roc_auc_bound"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
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
    loss = loss_expr_from_logits if scorer.kind == "logit" else loss_expr_from_probabilities
    scored = frame.lazy().with_columns(_score_columns(scorer, label))
    return scored.select(loss(pl.col(_S), pl.col(_Y)).alias("__loss")).collect().to_series()
