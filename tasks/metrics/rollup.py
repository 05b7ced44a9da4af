"""Every slicing, rolled up exactly from the finest cross's records and histograms.

The pass sums each cell of the finest cross (partition × each slice column's value or bin). A
slicing's slice is a set of those cells: its sums are the cells' sums added, its score histogram the
cells' bins added, so its figures are the same formulas of :mod:`tasks.metrics.schema` on exact sums
(ROC AUC from the merged histogram, within its stated bound), not an average of averages.

A chunk's histogram rows name their cell by its row in the chunk's records (``__cell``), not by its
keys: the roll-up numbers each record's group once (records are few, one per cell) and adds the
histogram rows of a group with ``numpy.bincount`` (rows are many, about one per data row when cells
are many).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.data.slicing import CellColumn, Slicing
from tasks.errors import InputError
from tasks.metrics import schema as metrics
from tasks.metrics.auc import HIST_BINS, auc_from_sums
from tasks.metrics.decisions import (
    DEFAULT_DECISIONS,
    Decisions,
    decide_dense,
    decision_columns,
    decision_context,
)

#: The column naming each slice in a slicing's table: ``region=eu × age[18,30]=[18, 30)``
SLICE_LABEL = "slice"
#: Groups × bins above which a group's histogram is added by sorting instead of in one dense array
_DENSE_LIMIT = 1 << 24
#: Records are made dense (records × bins) when that is at most this many times their histogram rows
_DENSE_OVER_ROWS = 4


@dataclass(frozen=True)
class CellSums:
    """Every record (one per cell) of the run and every histogram row, the rows naming their record."""

    records: pl.DataFrame
    cell: np.ndarray  # each histogram row's record
    bin: np.ndarray
    n: np.ndarray
    n_pos: np.ndarray
    #: each record's histogram as dense rows (records × bins, for n and n_pos), when that is small enough
    dense: tuple[np.ndarray, np.ndarray] | None = None


def gather_cells(records: list[pl.DataFrame], histograms: list[pl.DataFrame]) -> CellSums:
    """The chunks' (and cached partitions') records and histograms as one: each ``__cell`` offset by the records
    before its own."""
    offsets = np.cumsum([0, *(r.height for r in records)])
    pairs = [(h, off) for h, off in zip(histograms, offsets) if h.height]

    def column(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([h.get_column(name).to_numpy().astype(dtype) for h, _ in pairs] or [np.empty(0, dtype)])

    cell = np.concatenate([h.get_column("__cell").to_numpy().astype(np.int64) + off for h, off in pairs] or [[]])
    frames = [r for r in records if r.height]
    merged = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=metrics.record_schema())
    cell, bins, n, n_pos = cell.astype(np.int64), column("bin", np.int64), column("n", float), column("n_pos", float)
    dense = None
    # dense rows when they are few beside the histogram rows: every roll-up then adds records' rows of bins, not
    # data-sized lists (with many records of few rows each, most of a dense row is zeros: the rows are cheaper)
    if merged.height * HIST_BINS <= min(_DENSE_LIMIT, _DENSE_OVER_ROWS * len(bins)):
        flat, size = cell * HIST_BINS + bins, merged.height * HIST_BINS
        dense = tuple(
            np.bincount(flat, weights=w, minlength=size).reshape(merged.height, HIST_BINS) for w in (n, n_pos)
        )
    return CellSums(merged, cell, bins, n, n_pos, dense)


def roll_up(
    sums: CellSums, columns: list[str], keep: pl.Expr | None = None, decisions: Decisions = DEFAULT_DECISIONS
) -> pl.DataFrame:
    """One row per value of ``columns`` (one row when empty): the sums added, every figure, ROC AUC and its bound,
    the decision figures at the threshold.

    ``keep`` selects the records (a slicing's filters) first.
    """
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
    roc_auc, bound, decided = _group_figures(sums, group_of_cell, groups.height, decisions)
    table = metrics.derive_figures(table).with_columns(
        pl.Series("roc_auc", roc_auc).fill_nan(None),
        pl.Series("roc_auc_bound", bound).fill_nan(None),
        *(pl.Series(k, v).fill_nan(None) for k, v in decided.items()),
    )
    return table.drop("__g", "__all", strict=False)


def _group_figures(
    sums: CellSums, group_of_cell: np.ndarray, n_groups: int, decisions: Decisions
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Each group's ROC AUC, its bound and the decision figures, from its cells' histograms added bin by bin."""
    if n_groups * HIST_BINS <= _DENSE_LIMIT:
        hist_n, hist_pos = _dense_groups(sums, group_of_cell, n_groups)
        return (*_auc_of(hist_n, hist_pos), decide_dense(hist_n, hist_pos, decisions))
    group = group_of_cell[sums.cell] if len(sums.cell) else np.empty(0, np.int64)
    kept = group >= 0
    decided = decision_columns(group[kept], sums.bin[kept], sums.n[kept], sums.n_pos[kept], n_groups, decisions)
    return (*_group_auc(sums, group, n_groups), decided)


def _dense_groups(sums: CellSums, group_of_cell: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Each group's histogram (groups × bins, for n and n_pos): its records' dense rows added when the records
    were made dense, else its histogram rows added by bin."""
    from tasks.metrics.cell_kernel import add_hist_rows_by_group, add_rows_by_group

    hist_n, hist_pos = (np.zeros((n_groups, HIST_BINS)) for _ in range(2))
    if sums.dense is not None:
        add_rows_by_group(sums.dense[0], group_of_cell, hist_n)
        add_rows_by_group(sums.dense[1], group_of_cell, hist_pos)
    else:
        add_hist_rows_by_group(group_of_cell, sums.cell, sums.bin, sums.n, sums.n_pos, hist_n, hist_pos)
    return hist_n, hist_pos


def _group_auc(sums: CellSums, group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Each group's ROC AUC and bound from its cells' histogram rows (``group``: each row's group, or −1)."""
    kept = group >= 0
    flat = group[kept] * HIST_BINS + sums.bin[kept]
    n, pos = sums.n[kept], sums.n_pos[kept]
    if n_groups * HIST_BINS <= _DENSE_LIMIT:
        size = n_groups * HIST_BINS
        hist_n = np.bincount(flat, weights=n, minlength=size).reshape(n_groups, HIST_BINS)
        hist_pos = np.bincount(flat, weights=pos, minlength=size).reshape(n_groups, HIST_BINS)
        return _auc_of(hist_n, hist_pos)
    # many groups: add the rows of each (group, bin) by Polars on integer keys, then walk each group's bins in order
    h = (
        pl.DataFrame({"g": flat // HIST_BINS, "bin": flat % HIST_BINS, "n": n, "pos": pos})
        .group_by("g", "bin")
        .agg(pl.col("n").sum(), pl.col("pos").sum())
        .sort("g", "bin")
        .with_columns((pl.col("n") - pl.col("pos")).alias("neg"))
        .with_columns((pl.col("neg").cum_sum().over("g") - pl.col("neg")).alias("below"))
        .group_by("g")
        .agg(
            pl.col("pos").sum().alias("P"),
            pl.col("neg").sum().alias("N"),
            (pl.col("pos") * pl.col("below")).sum().alias("A"),
            (pl.col("pos") * pl.col("neg")).sum().alias("T"),
        )
    )
    out = np.zeros((4, n_groups))
    for i, c in enumerate("PNAT"):
        out[i, h.get_column("g").to_numpy()] = h.get_column(c).to_numpy()
    return auc_from_sums(*out)


def _auc_of(hist_n: np.ndarray, hist_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and its bound of each row of dense histograms (groups × bins)."""
    neg = hist_n - hist_pos
    below = np.cumsum(neg, axis=1) - neg
    return auc_from_sums(
        hist_pos.sum(axis=1), neg.sum(axis=1), (hist_pos * below).sum(axis=1), (hist_pos * neg).sum(axis=1)
    )


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
    return table.select(label.alias(SLICE_LABEL), pl.exclude(SLICE_LABEL)).filter(pl.col("n_rows") > 0)


def summarize_cells(
    records: list[pl.DataFrame],
    histograms: list[pl.DataFrame],
    partition_by: list[str] | tuple[str, ...],
    cells: tuple[CellColumn, ...],
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
    table = roll_up(sums, part_keys, None, decisions).sort(part_keys, nulls_last=True)
    whole = roll_up(sums, [], None, decisions)
    overall = {s.name: whole.item(0, s.name) for s in metrics.SUMS if s.reported}
    overall |= {f.name: whole.item(0, f.name) for f in metrics.FIGURES if f.name != "note"}
    overall |= {name: whole.item(0, name) for name in metrics.figure_names(metrics.HISTOGRAM_FIGURES)}
    # the decision figures came with the whole roll-up (its histogram added once): only their context here
    overall |= decision_context(sums.bin, sums.n, sums.n_pos, decisions)
    overall["n_partitions"] = table.height
    return table, overall, {s.key: slicing_table(sums, s, decisions) for s in slicings}
