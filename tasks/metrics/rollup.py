"""Every slicing, rolled up exactly from the finest cross's records and histograms.

The pass sums each cell of the finest cross (partition × each slice column's value or bin). A
slicing's slice is a set of those cells: its sums are the cells' sums added, its score histogram the
cells' bins added, so its figures are the same formulas of :mod:`tasks.metrics.schema` on exact sums
(ROC AUC from the merged histogram, within its stated bound), not an average of averages.
"""

from __future__ import annotations

import polars as pl

from tasks.data.slicing import CellColumn, Slicing
from tasks.errors import InputError
from tasks.metrics import schema as metrics
from tasks.metrics.auc import auc_by_partition, merge_histograms
from tasks.metrics.reduce import merge_records, overall_row

#: The column naming each slice in a slicing's table: ``region=eu × age[18,30)=[18, 30)``
SLICE_LABEL = "slice"


def roll_up(records: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Sums of the finest cross's records added by ``columns`` (all rows when empty)."""
    sums = [pl.col(s.name).sum().cast(s.dtype) for s in metrics.SUMS]
    if not columns:
        return records.select(sums)
    return records.group_by(columns).agg(sums).sort(columns, nulls_last=True)


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


def slicing_table(records: pl.DataFrame, histogram: pl.DataFrame, slicing: Slicing) -> pl.DataFrame:
    """One row per slice of ``slicing``: its columns, a readable :data:`SLICE_LABEL`, the sums and every figure.

    Raises :class:`InputError` naming the spec when a filter keeps no row (a value not in the data).
    """
    keep = _filters(slicing, records.schema)
    if keep:
        records, histogram = records.filter(*keep), histogram.filter(*keep)
        if not records.height:
            raise InputError(
                f"--slice {slicing.spec!r}: no row has that value; check the spelling against the column's values."
            )
    columns = slicing.columns
    table = metrics.derive_figures(roll_up(records, columns))
    auc = auc_by_partition([histogram.select(*columns, "bin", "n", "n_pos")], columns)
    table = table.join(auc, on=columns, how="left", nulls_equal=True)
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
) -> tuple[pl.DataFrame, dict[str, float | int | None], dict[str, pl.DataFrame]]:
    """The per-partition table, the overall row and each slicing's table (by its key), from per-cell records."""
    part_keys = list(partition_by) or ["partition"]
    keys = [*part_keys, *(c.name for c in cells)]
    merged = merge_records(records, keys)
    frames = [h for h in histograms if h.height]
    histogram = (
        pl.concat(frames, how="diagonal_relaxed")
        if frames
        else pl.DataFrame(
            schema={**dict.fromkeys(keys, pl.String), "bin": pl.Int32, "n": pl.Float64, "n_pos": pl.Float64}
        )
    )
    table = metrics.derive_figures(roll_up(merged, part_keys))
    table = table.join(auc_by_partition([histogram], part_keys), on=part_keys, how="left", nulls_equal=True)
    if merged.height and merged.get_column("sum_w").sum() == 0:
        raise InputError("--weight-col: every selected row weighs 0, so no figure can be computed; check the weights.")
    overall = overall_row(merged, merge_histograms([histogram]))
    overall["n_partitions"] = table.height
    return table, overall, {s.key: slicing_table(merged, histogram, s) for s in slicings}
