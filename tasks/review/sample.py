"""The rows the row-level figures show: a seeded uniform random sample of exactly ``max_rows`` rows
across all partitions (all rows when the dataset has no more), read from a few files only, and how
the figures word it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.data.dataset import Dataset, scan_files
from tasks.metrics.loss import row_losses, sigmoid
from tasks.models.scoring import Scorer


def sample_scores(
    dataset: Dataset, scorer: Scorer, max_rows: int = 5000, max_files: int = 10, seed: int = 0
) -> pl.DataFrame:
    """A seeded uniform random sample of exactly ``max_rows`` rows with their label ``y``, probability
    ``p`` and ``loss`` (every row when the dataset has no more), less the rows whose label has not arrived.

    Every row has the same chance, ``max_rows / N``, to be in it, and only the files of up to
    ``max_files`` blocks are read (a large dataset is not read whole): see :func:`sample_plan`.
    """
    files = list(dataset.files)
    cols = [*scorer.features, *([scorer.column] if scorer.column else [])]
    wanted = [*dict.fromkeys([*cols, dataset.label, *dataset.partition_by])]
    if sum(f.num_rows for f in files) <= max_rows:
        df = scan_files(dataset, files).select(wanted).collect()
    else:
        rows = sample_plan([f.num_rows for f in files], max_rows, max_files, seed)
        chosen = [i for i, r in enumerate(rows) if len(r)]
        # one scan of the chosen files: the row index runs on across them, in this order
        offsets = np.cumsum([0] + [files[i].num_rows for i in chosen[:-1]])
        index = pl.Series(
            "_row", np.concatenate([rows[i] + off for i, off in zip(chosen, offsets)]), dtype=pl.get_index_type()
        )
        lf = scan_files(dataset, [files[i] for i in chosen]).with_row_index("_row")
        df = lf.filter(pl.col("_row").is_in(index.implode())).select(wanted).collect()
    # the realized rows: a row whose label has not arrived has no loss to show (it is estimated, not sampled)
    df = df.filter(pl.col(dataset.label).is_not_null())
    if not df.height:
        return df.with_columns(pl.lit(None, pl.Float64).alias(c) for c in ("y", "score", "p", "loss"))
    y = df.get_column(dataset.label).cast(pl.Float64).to_numpy()
    s = scorer.score_frame(df, dataset.text_features)
    p = sigmoid(s) if scorer.kind == "logit" else s
    loss = row_losses(y, s, scorer.kind)
    return df.with_columns(pl.Series("y", y), pl.Series("score", s), pl.Series("p", p), pl.Series("loss", loss))


def sample_plan(counts: list[int], k: int, draws: int = 10, seed: int = 0) -> list[np.ndarray]:
    """Which rows of each file (row numbers within it) a sample of exactly ``k`` of the ``N`` rows takes.

    Each row has the same chance, ``k / N``, however the rows fall into files; at most ``draws``
    groups of files are read. With ``d = min(draws, k)`` points and ``m = ⌈k / d⌉`` rows a point:

    1. the files, in order, are grouped into blocks of at least ``m · N / (N − d·m)`` rows (small
       files share a block); ``d`` points are laid every ``N / d`` rows from a seeded random start
       (systematic sampling in proportion to size): a block of ``s`` rows holds ``s·d / N`` points
       on average and at most ``s·d / N + 1``, so that
    2. a block holding ``j`` points can give ``j · m`` of its rows, drawn uniformly without
       replacement: each row is drawn with chance ``(s·d / N) · m / s = d·m / N``;
    3. ``k`` of those ``d · m`` rows, drawn uniformly, are kept: a chance of ``k / N`` for every row.
    """
    n = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n)])
    total = int(starts[-1])
    rng = np.random.default_rng(seed)
    d = min(draws, k)
    m = -(-k // d)
    if d * m >= total:  # a sample of nearly every row: drawn from all of them at once
        picked = rng.choice(total, size=k, replace=False)
    else:
        ends = _block_ends(starts, -(-m * total // (total - d * m)))
        step = total / d
        at = np.searchsorted(ends, rng.uniform(0, step) + step * np.arange(d), side="right")
        hits = np.bincount(
            np.minimum(at, len(ends) - 1), minlength=len(ends)
        )  # (a last point rounded up to N: the last block)
        block_starts = np.concatenate([[0], ends[:-1]])
        drawn = [
            block_starts[b] + rng.choice(int(ends[b] - block_starts[b]), size=int(hits[b]) * m, replace=False)
            for b in np.flatnonzero(hits)
        ]
        picked = rng.choice(np.concatenate(drawn), size=k, replace=False)
    picked = np.sort(picked)
    parts = np.split(picked, np.searchsorted(picked, starts[1:-1]))
    return [part - start for part, start in zip(parts, starts[:-1])]


def _block_ends(starts: np.ndarray, at_least: int) -> np.ndarray:
    """Where each block of consecutive files ends (a row position), each block at least ``at_least`` rows (the last
    short one joins the one before)."""
    ends: list[int] = []
    begin = 0
    for end in starts[1:]:
        if end - begin >= at_least:
            ends.append(int(end))
            begin = int(end)
    if not ends or ends[-1] != starts[-1]:
        if ends:
            ends.pop()
        ends.append(int(starts[-1]))
    return np.asarray(ends, dtype=np.int64)


def describe_sample(sample_rows: int, total_rows: int) -> str:
    """Which rows the row-level figures show, in words (a sample is exactly ``sample_rows``, its limit)."""
    if sample_rows >= total_rows:
        return f"all {total_rows:,} rows"
    return (
        f"a uniform random sample of {sample_rows:,} of {total_rows:,} rows across all partitions (seed 0; at most "
        f"{sample_rows:,} are drawn)"
    )
