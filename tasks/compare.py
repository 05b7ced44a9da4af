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

from tasks._prefect import as_task
from tasks.metrics import normal_interval, standard_error
from tasks.dataset import DataFile, Dataset, scan_files
from tasks.scoring import Scorer
from tasks.bad_input import check_frame
from tasks.reduce import row_losses

PAIRED_SUMS = ("n_rows", "sum_loss_champion", "sum_loss_challenger", "sum_d", "sum_d_sq")


def reduce_paired_chunk(dataset: Dataset, champion: Scorer, challenger: Scorer, files: list[DataFile]) -> pl.DataFrame:
    """Per-partition paired sums for one chunk of whole partitions."""
    keys = list(dataset.partition_by)
    frame = scan_files(dataset, files).collect()
    check_frame(dataset, champion, files, frame)
    check_frame(dataset, challenger, files, frame)
    a = row_losses(frame, champion, dataset.label, dataset.text_features)
    b = row_losses(frame, challenger, dataset.label, dataset.text_features)
    d = (b - a).alias("d")
    frame = frame.select(keys).with_columns(a.alias("la"), b.alias("lb"), d) if keys else pl.DataFrame([a.alias("la"), b.alias("lb"), d])
    aggs = [
        pl.len().cast(pl.Int64).alias("n_rows"),
        pl.col("la").sum().alias("sum_loss_champion"),
        pl.col("lb").sum().alias("sum_loss_challenger"),
        pl.col("d").sum().alias("sum_d"),
        (pl.col("d") ** 2).sum().alias("sum_d_sq"),
    ]
    out = frame.group_by(keys).agg(aggs) if keys else frame.select(aggs).with_columns(pl.lit("all").alias("partition"))
    return out


def _interval(n: float, sum_d: float, sum_d_sq: float) -> tuple[float, float, float, float]:
    mean = sum_d / n
    se = standard_error(sum_d, sum_d_sq, n)
    low, high = normal_interval(mean, se)
    return mean, se, low, high


def summarize_comparison(records: list[pl.DataFrame], keys: list[str], min_rows: int = 30) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The per-partition comparison table and the overall row (all from exactly merged sums)."""
    group = keys or ["partition"]
    merged = pl.concat(records).group_by(group, maintain_order=True).agg(pl.col(c).sum() for c in PAIRED_SUMS).sort(group)
    rows = [_figures(r, min_rows) for r in merged.iter_rows(named=True)]
    table = pl.concat([merged, pl.DataFrame(rows)], how="horizontal")
    tot = merged.select(pl.col(c).sum() for c in PAIRED_SUMS).row(0, named=True)
    return table, {"n_rows": tot["n_rows"], **_figures(tot, min_rows)}


def _figures(sums: dict[str, Any], min_rows: int) -> dict[str, Any]:
    """Both BCEs, the mean paired difference, its interval and verdict, from one set of sums."""
    n = sums["n_rows"]
    mean, se, lo, hi = _interval(n, sums["sum_d"], sums["sum_d_sq"])
    return {
        "bce_champion": sums["sum_loss_champion"] / n,
        "bce_challenger": sums["sum_loss_challenger"] / n,
        "bce_diff": mean,
        "bce_diff_se": se,
        "bce_diff_low": lo,
        "bce_diff_high": hi,
        "verdict": _verdict(lo, hi, n, min_rows),
    }


def _verdict(lo: float, hi: float, n: int, min_rows: int) -> str:
    if n < min_rows or math.isnan(lo):
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
        at_fault.append(f"overall (+{overall['bce_diff']:.4f} [{overall['bce_diff_low']:+.4f}, {overall['bce_diff_high']:+.4f}])")
    label = "partition" if "partition" in table.columns else None
    for r in table.iter_rows(named=True):
        if r["verdict"] != "too small" and r["bce_diff_low"] > max_regression and label:
            at_fault.append(f"{r[label]} (+{r['bce_diff']:.4f} [{r['bce_diff_low']:+.4f}, {r['bce_diff_high']:+.4f}])")
    return at_fault


reduce_paired_chunk_task = as_task(reduce_paired_chunk, name="reduce-paired-chunk")
summarize_comparison_task = as_task(summarize_comparison, name="merge-paired-records")
