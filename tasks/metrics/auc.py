"""ROC AUC from per-partition score histograms, merged per partition and overall, with its bound.

ROC AUC does not add up: each partition's rows are binned by predicted probability (4096 bins of
equal width), bins merge by addition, and ties within a bin count one half; ``roc_auc_bound`` is
the largest possible error of that. The exact per-partition AUC (``--auc exact``) comes from
average ranks instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

_S, _Y = "__score", "__y"
#: Equal-width bins in probability of every score histogram (the compiled loops and the roll-ups alike)
HIST_BINS = 4096
#: What a histogram row sums over its bin's rows: their weight (a count without weights), that of the positive
#: ones, and Σ w·p (the equal-mass calibration bins of :mod:`tasks.metrics.calibration` are formed from it)
HIST_SUMS = ("n", "n_pos", "sum_p")


def exact_auc_by_partition(kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pl.DataFrame:
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


def add_up_rows(keys: np.ndarray, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows of equal key added up, keys in increasing order: each sum in the order its rows come (``bincount``), so
    a float sum (Σ p) has the same bits every run, as a parallel group-by's would not; integer columns stay
    integers (exact below 2**53)."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    out = {}
    for name, values in columns.items():
        summed = np.bincount(inverse, weights=values, minlength=len(uniq))
        out[name] = summed.astype(values.dtype) if values.dtype.kind in "iu" else summed
    return uniq, out


def histogram_frame(rows: np.ndarray, merge: bool) -> pl.DataFrame:
    """The compiled pass's histogram rows ``(partition, bin, n, n_pos, Σp)`` (floats) as a frame ``(__part, bin,
    n, n_pos, sum_p)``; with ``merge``, a partition's bins that several flushes wrote are added up (in their order:
    the same bits every run), one row a bin."""
    part, bins = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    sums = {"n": rows[:, 2].astype(np.int64), "n_pos": rows[:, 3].astype(np.int64), "sum_p": rows[:, 4]}
    if merge:
        key, sums = add_up_rows(part * HIST_BINS + bins, sums)
        part, bins = key // HIST_BINS, key % HIST_BINS
    return pl.DataFrame({"__part": part.astype(np.uint32), "bin": bins.astype(np.int32), **sums})


def merge_histograms(histograms: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Add up per-bin score counts (and Σ p, where every histogram has it), in the histograms' order."""
    kept = [h for h in histograms if h.height]
    sums = [c for c in HIST_SUMS if all(c in h.columns for h in kept)]
    if not kept:
        return pl.DataFrame(schema={"bin": pl.Int32, "n": pl.Int64, "n_pos": pl.Int64, "sum_p": pl.Float64})
    bins = np.concatenate([h.get_column("bin").to_numpy() for h in kept])
    uniq, added = add_up_rows(bins, {c: np.concatenate([h.get_column(c).to_numpy() for h in kept]) for c in sums})
    return pl.DataFrame({"bin": uniq.astype(np.int32), **added})


def auc_from_sums(P: np.ndarray, N: np.ndarray, A: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    auc, bound = auc_from_sums(pos.sum(), neg.sum(), np.sum(pos * neg_below), np.sum(pos * neg))
    return (None, None) if np.isnan(auc) else (float(auc), float(bound))


def auc_by_partition(histograms: Iterable[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Each partition's ROC AUC and its bound from its merged histogram (see :func:`auc_from_histogram`)."""
    group = keys or ["partition"]
    frames = [h for h in histograms if h.height]
    if not frames:
        return pl.DataFrame(
            schema={**dict.fromkeys(group, pl.String), "roc_auc": pl.Float64, "roc_auc_bound": pl.Float64}
        )
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
    auc, bound = auc_from_sums(*(sums.get_column(c).to_numpy() for c in "PNAT"))
    return sums.select(group).with_columns(
        pl.Series("roc_auc", auc).fill_nan(None), pl.Series("roc_auc_bound", bound).fill_nan(None)
    )
