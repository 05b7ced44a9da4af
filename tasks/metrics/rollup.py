"""Every slicing, rolled up exactly from the finest cross's records and histograms.

The pass sums each cell of the finest cross (partition × each slice column's value or bin). A
slicing's slice is a set of those cells: its sums are the cells' sums added, its score histogram the
cells' bins added, so its figures are the same formulas of :mod:`tasks.metrics.schema` on exact sums
(ROC AUC from the merged histogram, within its stated bound), not an average of averages.

A chunk's histogram rows name their cell by its row in the chunk's records (``__cell``), not by its
keys: the roll-up numbers each record's group once (records are few, one per cell) and adds each
group's histogram rows in one compiled pass (rows are many, about one per data row when cells are
many), group by group in a dense row that stays in cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.data.slicing import Slicing
from tasks.errors import InputError
from tasks.metrics import schema as metrics
from tasks.metrics.auc import HIST_SUMS, auc_from_sums
from tasks.metrics.decisions import (
    DEFAULT_DECISIONS,
    Decisions,
    decision_columns,
    decision_context,
)

#: The column naming each slice in a slicing's table: ``region=eu × age[18,30]=[18, 30)``
SLICE_LABEL = "slice"


@dataclass(frozen=True)
class CellSums:
    """Every record (one per cell) of the run and every histogram row, the rows in record order: record c's rows
    are ``cell_start[c]:cell_start[c + 1]``."""

    records: pl.DataFrame
    bin: np.ndarray
    n: np.ndarray
    n_pos: np.ndarray
    sum_p: np.ndarray
    cell_start: np.ndarray


def gather_cells(records: list[pl.DataFrame], histograms: list[pl.DataFrame]) -> CellSums:
    """The chunks' (and cached partitions') records and histograms as one: each ``__cell`` offset by the records
    before its own."""
    from tasks.metrics.cell_kernel import is_sorted

    frames = [r for r in records if r.height]
    merged = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=metrics.record_schema())
    kept = [h for h in histograms if h.height]

    def column(name: str, dtype: type) -> np.ndarray:
        parts = [h.get_column(name).to_numpy().astype(dtype, copy=False) for h in kept]
        return parts[0] if len(parts) == 1 else np.concatenate(parts or [np.empty(0, dtype)])

    bins, n, n_pos, sum_p = (column(c, t) for c, t in zip(("bin", *HIST_SUMS), (np.int32, *(np.float64,) * 3)))
    cells = [h.get_column("__cell").to_numpy() for h in histograms]
    if not all(is_sorted(c) for c in cells):  # rows written in another order than their cells' (none this code writes)
        offsets = np.cumsum([0, *(r.height for r in records)])
        cell = np.concatenate([c.astype(np.int64) + off for c, off in zip(cells, offsets)] or [np.empty(0, np.int64)])
        order = np.argsort(cell, kind="stable")
        cell_start = np.r_[0, np.cumsum(np.bincount(cell, minlength=merged.height))].astype(np.int64)
        return CellSums(merged, bins[order], n[order], n_pos[order], sum_p[order], cell_start)
    # each chunk's rows come in its cells' order: where a record's rows end is a search, not a pass over them
    ends, base = [np.zeros(1, np.int64)], 0
    for r, c in zip(records, cells):
        ends.append(base + np.searchsorted(c, np.arange(r.height), side="right"))
        base += len(c)
    return CellSums(merged, bins, n, n_pos, sum_p, np.concatenate(ends).astype(np.int64))


def roll_up(
    sums: CellSums, columns: list[str], keep: pl.Expr | None = None, decisions: Decisions = DEFAULT_DECISIONS
) -> pl.DataFrame:
    """One row per value of ``columns`` (one row when empty): the sums added, every figure, ROC AUC and its bound,
    the decision figures at the threshold.

    ``keep`` selects the records (a slicing's filters) first.
    """
    return _roll_up(sums, columns, keep, decisions)[0]


def _roll_up(
    sums: CellSums, columns: list[str], keep: pl.Expr | None, decisions: Decisions, figures: bool = True
) -> tuple[pl.DataFrame, CellSums]:
    """:func:`roll_up`, and the groups as records of their own (their columns and sums, their histogram rows): a
    coarser grouping of the same columns rolls up from them, not from every cell again. Without ``figures``, the
    table holds the groups' sums only."""
    records = sums.records.with_row_index("__cell")
    if keep is not None:
        records = records.filter(keep)
    groups = records.select(columns).unique(maintain_order=True) if columns else pl.DataFrame({"__all": [0]})
    groups = groups.with_row_index("__g")
    on = columns or ["__all"]
    numbered = records.with_columns(pl.lit(0).alias("__all")).join(
        groups, on=on, how="left", nulls_equal=True, maintain_order="left"
    )
    group_of_cell = np.full(sums.records.height, -1, np.int64)
    group_of_cell[numbered.get_column("__cell").to_numpy()] = numbered.get_column("__g").to_numpy()
    from tasks.metrics.cell_kernel import add_rows_by_group  # compiled code loads when a roll-up runs, not on import

    # each group's sums added record by record, in the records' order: the same bits at any thread count
    # (a parallel group-by would add the floats in an order that depends on how it split the rows)
    values = sums.records.select(pl.col(s.name).cast(pl.Float64) for s in metrics.SUMS).to_numpy()
    added = np.zeros((groups.height, len(metrics.SUMS)))
    add_rows_by_group(np.ascontiguousarray(values), group_of_cell, added)
    table = groups.with_columns(pl.Series(s.name, added[:, i]).cast(s.dtype) for i, s in enumerate(metrics.SUMS)).sort(
        "__g"
    )
    roc_auc, bound, decided, rolled = _group_figures(sums, group_of_cell, groups.height, decisions, figures)
    as_records = CellSums(table.drop("__g", "__all", strict=False), *rolled)
    if not figures:
        return as_records.records, as_records
    table = metrics.derive_figures(table).with_columns(
        pl.Series("roc_auc", roc_auc).fill_nan(None),
        pl.Series("roc_auc_bound", bound).fill_nan(None),
        *(pl.Series(k, v).fill_nan(None) for k, v in decided.items()),
    )
    return table.drop("__g", "__all", strict=False), as_records


def _group_figures(
    sums: CellSums, group_of_cell: np.ndarray, n_groups: int, decisions: Decisions, figures: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], tuple[np.ndarray, ...]]:
    """Each group's ROC AUC, its bound and the decision figures, from its cells' histograms added bin by bin
    (:func:`tasks.metrics.cell_kernel.group_histogram_rows`: one pass over the rows, whatever the groups), and the
    groups' histogram rows ``(bin, n, n_pos, sum_p, start of each group's rows)``."""
    from tasks.metrics.cell_kernel import group_histogram_rows

    member = np.flatnonzero(group_of_cell >= 0)
    group_cells = member[np.argsort(group_of_cell[member], kind="stable")]  # each group's cells in record order
    group_ptr = np.r_[0, np.cumsum(np.bincount(group_of_cell[member], minlength=n_groups))].astype(np.int64)
    size = len(sums.bin)
    rows = np.empty(size, np.int64), np.empty(size, np.int32), np.empty(size), np.empty(size), np.empty(size)
    auc_sums = np.zeros((n_groups, 4))
    k = group_histogram_rows(
        sums.cell_start, group_ptr, group_cells, sums.bin, sums.n, sums.n_pos, sums.sum_p, *rows, auc_sums
    )
    group, bins, n, n_pos, sum_p = (r[:k] for r in rows)
    # the rows come in group, then bin order: the decision walk needs no sort
    decided = decision_columns(group, bins, n, n_pos, n_groups, decisions, sum_p) if figures else {}
    group_start = np.r_[0, np.cumsum(np.bincount(group, minlength=n_groups))].astype(np.int64)
    return (*auc_from_sums(*auc_sums.T), decided, (bins, n, n_pos, sum_p, group_start))


def _filters(slicing: Slicing, schema: pl.Schema) -> list[pl.Expr]:
    """Each filter term compared in its column's own type (``grade=1`` keeps the float 1.0)."""
    out = []
    for t in (t for t in slicing.terms if t.value is not None):
        dtype = schema[t.cell.name]
        if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
            out.append(pl.col(t.cell.name).cast(pl.String) == t.value)
            continue
        try:
            value = pl.Series([t.value]).cast(dtype, strict=True)[0]
        except pl.exceptions.PolarsError:
            raise InputError(
                f"--slice {slicing.spec!r}: {t.value!r} is not a value of column {t.cell.column!r} ({dtype})."
            ) from None
        out.append(pl.col(t.cell.name) == pl.lit(value, dtype=dtype))
    return out


def slicing_table(sums: CellSums, slicing: Slicing, decisions: Decisions = DEFAULT_DECISIONS) -> pl.DataFrame:
    """One row per slice of ``slicing``: its columns, a readable :data:`SLICE_LABEL`, the sums and every figure.

    Raises :class:`InputError` naming the spec when a filter keeps no row (a value not in the data).
    """
    keep = _filters(slicing, sums.records.schema)
    keep_expr = pl.all_horizontal(keep) if keep else None
    if keep_expr is not None and not sums.records.select(keep_expr.any()).item():
        raise InputError(
            f"--slice {slicing.spec!r}: no row has that value; check the spelling against the column's values."
        )
    columns = slicing.columns
    table = roll_up(sums, columns, keep_expr, decisions).sort(columns, nulls_last=True)
    label = pl.concat_str(
        [pl.lit(f"{c}=") + pl.col(c).cast(pl.String).fill_null("null") for c in columns], separator=" × "
    )
    # a slice of any row, labelled or not (one without labels is estimated)
    return table.select(label.alias(SLICE_LABEL), pl.exclude(SLICE_LABEL)).filter(
        (pl.col("n_rows") + pl.col("n_unlabelled")) > 0
    )


def summarize_cells(
    records: list[pl.DataFrame],
    histograms: list[pl.DataFrame],
    partition_by: list[str] | tuple[str, ...],
    slicings: list[Slicing] | tuple[Slicing, ...],
    decisions: Decisions = DEFAULT_DECISIONS,
) -> tuple[pl.DataFrame, dict[str, float | int | None], dict[str, pl.DataFrame]]:
    """The per-partition table, the overall row and each slicing's table (by its key), from per-cell records.

    ``records[i]`` and ``histograms[i]`` come from one chunk (or one cached partition).
    """
    sums = gather_cells(records, histograms)
    if sums.records.height and sums.records.get_column("sum_w").sum() == 0:
        raise InputError("--weight-col: every selected row weighs 0, so no figure can be computed; check the weights.")
    part_keys = list(partition_by) or ["partition"]
    table, by_partition = _roll_up(sums, part_keys, None, decisions)
    table = table.sort(part_keys, nulls_last=True)
    whole = roll_up(by_partition, [], None, decisions)  # every cell is in one partition: the partitions add up
    overall = {s.name: whole.item(0, s.name) for s in metrics.SUMS if s.reported}
    overall |= {f.name: whole.item(0, f.name) for f in metrics.FIGURES if f.name != "note"}
    overall |= {name: whole.item(0, name) for name in metrics.figure_names(metrics.HISTOGRAM_FIGURES)}
    overall |= {name: whole.item(0, name) for name in whole.columns if name.startswith("at_")}  # further thresholds
    # the decision figures came with the whole roll-up (its histogram added once): only their context here
    overall |= decision_context(by_partition.bin, by_partition.n, by_partition.n_pos, decisions, by_partition.sum_p)
    overall["n_partitions"] = table.height
    if not slicings:
        return table, overall, {}
    # every slicing is a grouping of the slice columns' cross: with several, they roll up from it, not from each
    # cell again (the cross's own figures are not wanted: only its records)
    crossed = list(dict.fromkeys(c for s in slicings for c in s.columns))  # cell columns and partition keys named
    source = _cross_records(sums, crossed) if len(slicings) > 1 else sums
    return table, overall, {s.key: slicing_table(source, s, decisions) for s in slicings}


def _cross_records(sums: CellSums, columns: list[str]) -> CellSums:
    """The cells added up over partitions: one record per value of ``columns``, with its histogram rows."""
    return _roll_up(sums, columns, None, DEFAULT_DECISIONS, figures=False)[1]
