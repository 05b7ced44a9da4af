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
from tasks.metrics.bad_input import check_frame
from tasks.metrics.loss import frame_losses
from tasks.metrics.schema import PAIRED_FIGURES, PAIRED_SUMS, derive_figures
from tasks.models.scoring import Scorer


def reduce_paired_chunk(dataset: Dataset, champion: Scorer, challenger: Scorer, files: list[DataFile]) -> pl.DataFrame:
    """Per-partition paired sums for one chunk of whole partitions."""
    keys = list(dataset.partition_by)
    frame = scan_files(dataset, files).collect()
    check_frame(dataset, champion, files, frame)
    check_frame(dataset, challenger, files, frame)
    a = frame_losses(frame, champion, dataset.label, dataset.text_features)
    b = frame_losses(frame, challenger, dataset.label, dataset.text_features)
    d = (b - a).alias("d")
    frame = (
        frame.select(keys).with_columns(a.alias("la"), b.alias("lb"), d)
        if keys
        else pl.DataFrame([a.alias("la"), b.alias("lb"), d])
    )
    aggs = [
        pl.len().cast(pl.Int64).alias("n_rows"),
        pl.col("la").sum().alias("sum_loss_champion"),
        pl.col("lb").sum().alias("sum_loss_challenger"),
        pl.col("d").sum().alias("sum_d"),
        (pl.col("d") ** 2).sum().alias("sum_d_sq"),
    ]
    out = frame.group_by(keys).agg(aggs) if keys else frame.select(aggs).with_columns(pl.lit("all").alias("partition"))
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
