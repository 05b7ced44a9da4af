"""Reduce rows to per-partition sufficient statistics, and merge them exactly.

One streaming pass over a chunk of partitions scores each row, computes its loss, counts bad input,
and adds it to its partition's *record*: counts and sums that add up across files, chunks, workers
and nightly runs. BCE, accuracy, Brier score and the rest are ratios of those sums, so the overall
figure is Σ loss / Σ n over all rows (never a mean of partition means).

Polars decodes the columns and computes a linear model's logit inside the scan; the per-row loop
(:mod:`tasks.metrics.kernels`) runs on each batch while Polars decodes the next one. Partitions that are
hive folders need no key column at all: a file's rows belong to one partition.

ROC AUC does not add up: it comes from per-partition score histograms (4096 bins of equal width
in probability), merged per partition and overall, with ties within a bin counted as one half; the
reported ``roc_auc_bound`` is the largest possible error of that. ``exact_auc`` adds the exact
per-partition AUC from average ranks (a chunk always holds whole partitions), at the cost of a sort.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tasks.data.dataset import DataFile, Dataset, scan_files
from tasks.data.object_storage import is_unreachable, storage_unavailable
from tasks.data.slicing import category_expression
from tasks.errors import InputError
from tasks.metrics import schema as metrics
from tasks.metrics.auc import (
    HIST_SUMS,
    auc_by_partition,
    auc_from_histogram,
    auc_from_sums,
    exact_auc_by_partition,
    histogram_frame,
    merge_histograms,
)
from tasks.metrics.bad_input import raise_bad_input
from tasks.metrics.decisions import DEFAULT_DECISIONS, Decisions, overall_decisions, with_decisions
from tasks.metrics.late_labels import batch_labels
from tasks.metrics.runs import PartitionRuns
from tasks.models.scoring import Scorer, model_input

#: Columns of a record that add up exactly across files, chunks and runs (from the metric schema)
SUM_COLUMNS = metrics.SUM_COLUMNS
#: Version of the metric code; part of every cache key (bump when a formula changes).
METRIC_VERSION = "3"

_S, _Y = "__score", "__y"

if TYPE_CHECKING:
    from tasks.metrics.cells import CellSink
    from tasks.metrics.lanes import Reducer


def reduce_chunk(
    dataset: Dataset, scorer: Scorer, files: list[DataFile], exact_auc: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score one chunk of whole partitions in one streaming pass and reduce it.

    Returns ``(records, histogram)``: one record per partition (the partition columns, the sums of
    :data:`SUM_COLUMNS`, and ``roc_auc`` from average ranks when ``exact_auc``), and per-partition
    score-bin sums ``(bin, n, n_pos, sum_p)`` from which ROC AUC is computed per partition and overall.
    Raises :class:`InputError` (naming the file and column) on nulls, non-finite features or
    scores, or labels outside {0, 1}.
    """
    try:
        return _reduce_chunk(dataset, scorer, files, exact_auc)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, OSError) as exc:
        if is_unreachable(exc):
            # the store, not a file: Polars already retried with backoff, and probing each file would wait again
            raise storage_unavailable(files[0].path if files else dataset.root, exc) from None
        # a file whose footer read fine but whose data pages do not: name it
        for f in files:
            try:
                scan_files(dataset, [f]).collect()
            except (pl.exceptions.ComputeError, pl.exceptions.SchemaError, OSError) as file_exc:
                reason = str(file_exc).splitlines()[0]
                raise InputError(f"{f.path}: cannot read its data ({reason}); the file may be corrupt.") from exc
        raise


def _batch_scores(scorer: Scorer, batch: pl.DataFrame, dataset: Dataset, files: list[DataFile]) -> np.ndarray:
    if scorer.model is None:
        return batch.get_column(_S).to_numpy()
    features = batch.select(scorer.features)
    if scorer.model.takes_frame:
        bad = _bad_rows(features, scorer, dataset)
        X = None if bad else model_input(scorer.model, features, dataset.text_features)
    else:  # a float64 matrix (nulls are NaN): one vectorised check on it
        X = model_input(scorer.model, features, dataset.text_features)
        finite = np.isfinite(X)
        bad = 0 if finite.all() else int((~finite).any(axis=1).sum())
    if bad:
        # before the model sees them (it may fail or return nonsense): name the file and column
        raise_bad_input(dataset, scorer, files, {"bad_score": bad}, unlabelled=True)
    return scorer.model.score(X)


def _bad_rows(features: pl.DataFrame, scorer: Scorer, dataset: Dataset) -> int:
    """Rows with a null or non-finite number, or a null text, among the model's inputs."""
    numeric = [c for c in scorer.features if c not in dataset.text_features]
    checks = [
        *[~pl.col(c).cast(pl.Float64).is_finite().fill_null(False) for c in numeric],
        *[pl.col(c).is_null() for c in dataset.text_features],
    ]
    return int(features.select(pl.sum_horizontal(*checks).gt(0).sum()).item())


def _scan_columns(dataset: Dataset, scorer: Scorer, keys: list[str]) -> list[pl.Expr]:
    nan = float("nan")
    if scorer.model is not None:
        # a model that takes a frame gets the columns' own types (its signature says which); a
        # matrix model float64, nulls as NaN (counted as bad input before the model is called)
        score = [
            pl.col(c)
            if scorer.model.takes_frame or c in dataset.text_features
            else pl.col(c).cast(pl.Float64).fill_null(nan)
            for c in scorer.features
        ]
    else:
        # nulls become NaN, which the pass counts as bad scores (a null feature makes the logit null)
        score = [scorer.scan_expression().fill_null(nan).alias(_S)]
    # nulls kept: a batch says how many it holds at no cost (see _labels)
    label = pl.col(dataset.label).cast(pl.Float64).alias(_Y)
    taken = {*keys, *(scorer.features if scorer.model is not None else ())}
    # the slice and weight columns, unless a key or the model's input holds them already
    extra = [c for c in (*dataset.cell_sources, *([dataset.weight] if dataset.weight else ())) if c not in taken]
    by_value = {c.column for c in dataset.cells if not c.edges}
    text = {
        c
        for c in by_value
        if "string" in dataset.schema.get(c, "") and not any(x.column == c and x.edges for x in dataset.cells)
    }
    columns = [category_expression(c) if c in text else pl.col(c) for c in dict.fromkeys(extra)]
    return [*score, label, *[pl.col(k) for k in keys], *columns]


def _reduce_chunk(
    dataset: Dataset, scorer: Scorer, files: list[DataFile], exact_auc: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    # the compiled loops load (numba) only when a pass runs, not when a flow imports this module
    from tasks.metrics.cells import CellSink
    from tasks.metrics.lanes import Reducer

    parts = PartitionRuns(dataset, files)
    logit = scorer.kind == "logit"
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (ids, scores, labels) for exact AUC
    schema = None
    # the per-row pass on as many threads as Polars has (POLARS_MAX_THREADS): the same sums whatever that is
    threads = pl.thread_pool_size()
    rows = sum(f.num_rows for f in files)
    # slices or weights: each row to its cell (partition × slice values), weighted; else runs of partitions
    cells = CellSink(dataset.cells, dataset.weight, threads, rows) if dataset.per_cell else None
    reducer = cells or Reducer(threads)
    query = scan_files(dataset, files).select(_scan_columns(dataset, scorer, parts.columns))
    # Polars' own batches (whole morsels, no copy) unless files are small: then one batch per file would cost more in
    # calls than in rows. Either way, the same files give the same batches, so the same sums to the last bit.
    small_files = rows < 32_768 * len(files)
    # a model called per batch costs about a millisecond a call (a tree library starting its
    # threads): larger batches for it
    batch_rows = 65_536 if scorer.model is None else 262_144
    try:
        for batch in query.collect_batches(chunk_size=batch_rows if small_files else None):
            if not batch.height:
                continue
            schema = batch.schema
            s = _batch_scores(scorer, batch, dataset, files)
            y = batch_labels(batch.get_column(_Y), cells is not None)
            if _add_batch(cells, reducer, kept if exact_auc else None, batch, s, y, parts.runs(batch), logit, parts):
                break  # bad input: stop reading, say where below
        else:
            # rows are placed in partitions by the footers' row counts: a file rewritten since
            # discovery read them would put rows in the wrong partitions, silently
            _check_rows_read(dataset, files, parts.offset)
    except BaseException:
        reducer.abandon()
        raise
    if cells is not None:
        return _assemble_cells(dataset, scorer, files, parts.frame(schema), cells)
    stats, bins, flushes = reducer.finish()
    return _assemble(
        dataset,
        scorer,
        files,
        parts.frame(schema),
        stats[: len(parts.index)],
        bins,
        flushes,
        kept if exact_auc else None,
    )


def _add_batch(
    cells: CellSink | None,
    reducer: Reducer | CellSink,
    kept: list | None,
    batch: pl.DataFrame,
    s: np.ndarray,
    y: np.ndarray,
    runs: tuple[np.ndarray, np.ndarray],
    logit: bool,
    parts: PartitionRuns,
) -> float:
    """Queue a batch's rows: to their cells, or in runs of partitions (then rows whose label has not arrived are
    summed apart, :func:`tasks.metrics.kernels.sum_unlabelled`, and the rest go on as usual; ``kept`` gets the
    labelled rows for exact AUC). Returns the bad rows so far."""
    run_ends, run_ids = runs
    if cells is not None:
        return cells.add(batch, s, y, run_ends, run_ids, logit)
    # the null count of the batch's column: known without a pass over it
    if batch.get_column(_Y).null_count():
        s, y, run_ends = reducer.set_aside_unlabelled(s, y, run_ends, run_ids, logit, len(parts.index))
    if kept is not None:
        kept.append(
            (np.repeat(run_ids, np.diff(run_ends, prepend=0)), np.array(s, np.float64), np.array(y, np.float64))
        )
    return reducer.add(s, y, run_ends, run_ids, logit, len(parts.index)) if len(s) else reducer.bad


def _has_rows() -> pl.Expr:
    """A record of any row, with a label or without one (an estimated partition)."""
    return (pl.col("n_rows") + pl.col("n_unlabelled")) > 0


def _check_rows_read(dataset: Dataset, files: list[DataFile], rows: int) -> None:
    """Raise :class:`InputError` naming a file changed since discovery when the scan read other than the footers'
    ``rows``."""
    expected = sum(f.num_rows for f in files)
    if rows == expected:
        return
    from tasks.data.parquet_files import list_parquet_files, read_file_footers
    from tasks.data.storage import storage_for

    storage = storage_for(dataset.root)
    try:
        listed = {e.path: e for e in list_parquet_files(dataset.root, storage)}  # one listing: their sizes now
        gone = [f.path for f in files if f.path not in listed]
        if gone:
            raise InputError(f"{gone[0]}: no longer there.")
        entries = [listed[f.path] for f in files]
        now = [
            (f, md.num_rows) for f, (md, fp) in zip(files, read_file_footers(storage, entries)) if fp != f.fingerprint
        ]
    except InputError as exc:  # gone, or cut short: that is the change
        raise InputError(
            f"{exc} It changed while bce-eval read it; run the evaluation again once it is written."
        ) from None
    if now:
        where, counts = now[0][0].path, f" ({now[0][0].num_rows:,} rows when listed, {now[0][1]:,} now)"
    else:  # changed and changed back, or a rewrite that kept its footer: which one is not known
        where, counts = f"one of {len(files):,} files from {files[0].path}", ""
    raise InputError(
        f"{where}: changed while bce-eval read it{counts}; {rows:,} rows were read where the footers listed "
        f"{expected:,}. "
        "Run the evaluation again once the data is written."
    )


def _assemble(
    dataset: Dataset,
    scorer: Scorer,
    files: list[DataFile],
    keys: pl.DataFrame,
    stats: np.ndarray,
    bins: np.ndarray,
    flushes: np.ndarray,
    kept: list[tuple[np.ndarray, ...]] | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The chunk's records (keys, sums, ROC AUC) and histogram, from the pass's arrays."""
    from tasks.metrics import kernels

    checks = {c: int(stats[:, kernels.STATS.index(c)].sum()) for c in metrics.CHECKS}
    if any(checks.values()):
        raise_bad_input(dataset, scorer, files, checks, unlabelled=True)
    keys_frame = keys.with_row_index("__part")
    records = keys_frame.with_columns(
        pl.Series(s.name, stats[:, kernels.STATS.index(s.name)]).cast(s.dtype) for s in metrics.SUMS
    )
    histogram, auc = _histogram_and_auc(keys_frame, bins, flushes)
    if kept is not None:
        auc = exact_auc_by_partition(kept).with_columns(
            pl.when(pl.col("roc_auc").is_not_null()).then(0.0).alias("roc_auc_bound")
        )
    records = records.join(auc, on="__part", how="left").filter(_has_rows()).drop("__part")
    return records, histogram


def _assemble_cells(
    dataset: Dataset, scorer: Scorer, files: list[DataFile], parts: pl.DataFrame, cells: CellSink
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The chunk's records, one per cell (partition keys, slice columns, sums, binned ROC AUC), and its histogram
    rows ``(__cell, bin, n, n_pos, sum_p)``: ``__cell`` is the row of the records it belongs to (no key is repeated per
    bin: a chunk of many cells has about as many histogram rows as data rows)."""
    from tasks.metrics import kernels

    stats, bins, auc_sums = cells.finish()
    checks = {c: int(stats[:, kernels.STATS.index(c)].sum()) for c in metrics.CHECKS}
    if any(checks.values()):
        raise_bad_input(dataset, scorer, files, checks, unlabelled=True)
    keys = cells.index.frame().join(
        parts.with_row_index("__part").with_columns(pl.col("__part").cast(pl.Int64)),
        on="__part",
        how="left",
        maintain_order="left",
    )
    key_columns = [*parts.columns, *(c for c in keys.columns if c not in parts.columns and c != "__part")]
    roc_auc, bound = auc_from_sums(*auc_sums.T)
    records = keys.select(key_columns).with_columns(
        *(pl.Series(s.name, stats[:, kernels.STATS.index(s.name)]).cast(s.dtype) for s in metrics.SUMS),
        pl.Series("roc_auc", roc_auc).fill_nan(None),
        pl.Series("roc_auc_bound", bound).fill_nan(None),
    )
    histogram = pl.DataFrame(dict(zip(("__cell", "bin", "n", "n_pos", "sum_p"), bins)))
    return records, histogram


def _histogram_and_auc(
    keys_frame: pl.DataFrame, bins: np.ndarray, flushes: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-partition bin counts keyed by the partition columns, and each partition's binned AUC."""
    key_columns = keys_frame.columns[1:]
    whole = len(np.unique(flushes[:, 0])) == len(flushes)
    histogram = histogram_frame(bins, merge=not whole)
    index = histogram.get_column("__part")
    histogram = histogram.select(*(keys_frame.get_column(k).gather(index) for k in key_columns), "bin", *HIST_SUMS)
    if whole:
        # each partition's histogram was written once, whole: its AUC sums came with it
        roc_auc, bound = auc_from_sums(*flushes[:, 1:5].T)
        auc = pl.DataFrame(
            {"__part": flushes[:, 0].astype(np.uint32), "roc_auc": roc_auc, "roc_auc_bound": bound}
        ).fill_nan(None)
    else:  # rows of a partition came in several runs (keys that are columns): merge its bins first
        auc = (
            auc_by_partition([histogram], key_columns)
            .join(keys_frame, on=key_columns, nulls_equal=True)
            .drop(key_columns)
        )
    return histogram, auc


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


def finalize_table(merged: pl.DataFrame) -> pl.DataFrame:
    """The per-partition table a reviewer reads: every figure of the metric schema from the summed statistics."""
    df = metrics.derive_figures(merged)
    for col in metrics.figure_names(metrics.HISTOGRAM_FIGURES):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
    return df


def overall_row(
    merged: pl.DataFrame, hist: pl.DataFrame, decisions: Decisions = DEFAULT_DECISIONS
) -> dict[str, float | int | None]:
    """Overall figures: each sum over all rows, then the same formulas as per partition."""
    overall = metrics.overall_figures(merged)
    overall["roc_auc"], overall["roc_auc_bound"] = auc_from_histogram(hist)
    overall |= overall_decisions(hist, decisions)
    overall["n_partitions"] = merged.height
    return overall


def summarize_records(
    records: list[pl.DataFrame],
    histograms: list[pl.DataFrame],
    keys: list[str],
    decisions: Decisions = DEFAULT_DECISIONS,
) -> tuple[pl.DataFrame, dict[str, float | int | None]]:
    """Merge chunk records into the per-partition table and the overall row (``decisions``: the threshold's)."""
    merged = merge_records(records, keys)
    table = with_decisions(finalize_table(merged), histograms, keys or ["partition"], decisions)
    return table, overall_row(merged, merge_histograms(histograms), decisions)
