"""Champion vs challenger on the same rows: the paired difference in BCE, with an interval.

For every row both models are scored and d = loss(challenger) − loss(champion). Per partition and
overall the statistics n, Σd, Σd² add up exactly, and the 95% interval of the mean difference is
the normal approximation on those paired per-row differences, mean(d) ± 1.96·sd(d)/√n. Pairing
removes the variance the two models share (hard rows are hard for both), so the interval is far
narrower than comparing two independent BCEs; the approximation needs a few dozen rows per
partition (smaller partitions are marked ``too small``).
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from tasks.data.dataset import DataFile, Dataset, scan_files
from tasks.data.slicing import Slicing, cell_expression
from tasks.metrics.bad_input import check_frame
from tasks.metrics.loss import frame_losses
from tasks.metrics.schema import PAIRED_FIGURES, PAIRED_SUMS, derive_figures
from tasks.models.scoring import Scorer


def reduce_paired_chunk(dataset: Dataset, champion: Scorer, challenger: Scorer, files: list[DataFile]) -> pl.DataFrame:
    """Paired sums for one chunk of whole partitions: per partition, or per cell (partition × slice values) when the
    dataset has slice columns; each row weighted by ``dataset.weight`` (1 without)."""
    parts = list(dataset.partition_by) or ["partition"]
    keys = [*parts, *(c.name for c in dataset.cells)]
    frame = scan_files(dataset, files).collect()
    check_frame(dataset, champion, files, frame)
    check_frame(dataset, challenger, files, frame)
    a = frame_losses(frame, champion, dataset.label, dataset.text_features)
    b = frame_losses(frame, challenger, dataset.label, dataset.text_features)
    w = frame.get_column(dataset.weight).cast(pl.Float64) if dataset.weight else pl.Series("w", [1.0] * frame.height)
    losses = pl.DataFrame([a.alias("la"), b.alias("lb"), (b - a).alias("d"), w.alias("w")])
    frame = pl.concat(
        [frame.select(*dataset.partition_by, *(cell_expression(c) for c in dataset.cells)), losses], how="horizontal"
    )
    if not dataset.partition_by:
        frame = frame.with_columns(pl.lit("all").alias("partition"))
    weighted = dataset.weight is not None  # else every sum is the plain one, to the bit
    aggs = [
        pl.len().cast(pl.Int64).alias("n_rows"),
        pl.col("w").sum().alias("sum_w"),
        (pl.col("w") ** 2).sum().alias("sum_w_sq"),
        *(
            ((pl.col(c) * pl.col("w")) if weighted else pl.col(c)).sum().alias(name)
            for c, name in (("la", "sum_loss_champion"), ("lb", "sum_loss_challenger"), ("d", "sum_d"))
        ),
        ((pl.col("d") ** 2 * pl.col("w")) if weighted else pl.col("d") ** 2).sum().alias("sum_d_sq"),
    ]
    return frame.group_by(keys).agg(aggs)


def summarize_paired_slices(
    records: list[pl.DataFrame], slicings: list[Slicing] | tuple[Slicing, ...], min_rows: int = 30
) -> dict[str, pl.DataFrame]:
    """Each slicing's paired table (by its key): the paired figures per slice and each slice's verdict."""
    merged = pl.concat(records, how="diagonal_relaxed")
    out = {}
    for slicing in slicings:
        keep = [pl.col(t.cell.name).cast(pl.String) == t.value for t in slicing.terms if t.value is not None]
        rows = merged.filter(*keep) if keep else merged
        sums = rows.group_by(slicing.columns).agg(pl.col(c).sum() for c in paired_sum_names())
        table = derive_figures(sums.sort(slicing.columns, nulls_last=True), PAIRED_FIGURES)
        label = pl.concat_str(
            [pl.lit(f"{c}=") + pl.col(c).cast(pl.String).fill_null("null") for c in slicing.columns], separator=" × "
        )
        verdicts = [_verdict(r, min_rows) for r in table.iter_rows(named=True)]
        out[slicing.key] = table.select(label.alias("slice"), pl.all()).with_columns(
            pl.Series("verdict", verdicts, dtype=pl.String)
        )
    return out


def summarize_comparison(
    records: list[pl.DataFrame], keys: list[str], min_rows: int = 30
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The per-partition comparison table and the overall row: the metric schema's paired figures
    (:data:`tasks.metrics.schema.PAIRED_FIGURES`) from exactly merged sums, and each one's verdict."""
    group = keys or ["partition"]
    merged = (
        pl.concat(records)
        .group_by(group, maintain_order=True)
        .agg(pl.col(c).sum() for c in paired_sum_names())
        .sort(group)
    )
    table = derive_figures(merged, PAIRED_FIGURES)
    table = table.with_columns(
        pl.Series("verdict", [_verdict(r, min_rows) for r in table.iter_rows(named=True)], dtype=pl.String)
    )
    total = derive_figures(merged.select(pl.col(c).sum() for c in paired_sum_names()), PAIRED_FIGURES).row(
        0, named=True
    )
    overall = {"n_rows": total["n_rows"], **{f.name: total[f.name] for f in PAIRED_FIGURES}}
    return table, {**overall, "verdict": _verdict(overall, min_rows)}


def paired_sum_names() -> tuple[str, ...]:
    return tuple(s.name for s in PAIRED_SUMS)


def _verdict(row: dict[str, Any], min_rows: int) -> str:
    lo, hi, n = row["bce_diff_low"], row["bce_diff_high"], row["n_rows"]
    if n < min_rows or lo is None or math.isnan(lo):
        return "too small"
    if hi < 0:
        return "challenger better"
    if lo > 0:
        return "champion better"
    return "no significant difference"


def should_promote(overall: dict[str, Any], margin: float) -> tuple[bool, str]:
    """Promote only when the whole 95% interval shows the challenger better by more than ``margin``."""
    hi = overall["bce_diff_high"]
    if hi < -margin:
        return True, f"challenger's BCE is lower by at least {-hi:.4f} (95% upper bound), more than the margin {margin}"
    return False, f"the 95% interval of the BCE difference reaches {hi:+.4f}, not below −{margin}"


def check_regression(table: pl.DataFrame, overall: dict[str, Any], max_regression: float) -> list[str]:
    """Where the challenger is worse than the baseline by more than ``max_regression`` with 95% confidence.

    Judged on the paired interval: a partition fails only when the lower bound of its BCE difference
    exceeds the allowance; partitions marked ``too small`` are never judged.
    """
    at_fault = []
    if overall["verdict"] != "too small" and overall["bce_diff_low"] > max_regression:
        at_fault.append(
            f"overall (+{overall['bce_diff']:.4f} [{overall['bce_diff_low']:+.4f}, {overall['bce_diff_high']:+.4f}])"
        )
    label = "partition" if "partition" in table.columns else None
    for r in table.iter_rows(named=True):
        if r["verdict"] != "too small" and r["bce_diff_low"] > max_regression and label:
            at_fault.append(f"{r[label]} (+{r['bce_diff']:.4f} [{r['bce_diff_low']:+.4f}, {r['bce_diff_high']:+.4f}])")
    return at_fault
