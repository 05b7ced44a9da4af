"""The per-row pass over a chunk's batches, shared by threads: the compiled loops of
:mod:`tasks.kernels`, driven batch by batch, with the same sums to the last bit whatever the number
of threads. Imported only when a reduce runs.
"""

from __future__ import annotations

import numpy as np

from tasks.bce import PROBA_EPS
from tasks.kernels import (
    BLOCK_ROWS, HIST_BINS, STATS, close_histogram, merge_flushes, merge_segments, new_state, plan_segments, sum_segments,
)


def _aligned(n: int) -> np.ndarray:
    raw = np.empty(n + 8)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip : skip + n]


class _Lane:
    """One thread's share of the pass: buffers for one batch, its open histogram, its output rows.

    Its batch's rows, scores and terms sit in 64-byte aligned buffers, at the same offsets whichever
    lane takes the batch: the compiled sums are vectorised, and how a vector loop splits its rows
    can depend on the addresses of its arrays (a fresh array can start anywhere).
    """

    def __init__(self, capacity: int) -> None:
        self.hist_n = np.zeros(HIST_BINS, np.int64)
        self.hist_pos = np.zeros(HIST_BINS, np.int64)
        self.touched = np.zeros(HIST_BINS, np.int32)
        self.state = new_state()
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []  # (histogram rows, AUC sums) written so far
        self.n_seg = 0
        self._size(capacity)

    def _size(self, capacity: int) -> None:
        self.capacity = capacity
        self.s, self.y, self.a, self.b, self.p = (_aligned(capacity) for _ in range(5))
        self._pieces(64)

    def _pieces(self, n_seg: int) -> None:
        # room for n_seg pieces, and what their flushes can write: each flush at most every bin,
        # and at most one new bin a row (so never more than the batch's rows and one open histogram)
        self.seg_lo, self.seg_hi, self.seg_part = (np.empty(n_seg, np.int64) for _ in range(3))
        self.seg_stats = np.empty((n_seg, len(STATS)))
        self.out = np.empty((min(self.capacity, n_seg * HIST_BINS) + HIST_BINS, 4), np.int64)
        self.flushes = np.empty((n_seg + 1, 6))

    def run(self, s: np.ndarray, y: np.ndarray, run_ends: np.ndarray, run_ids: np.ndarray, logit: bool) -> None:
        """Sum one batch's pieces into ``seg_stats`` (see :func:`sum_segments`); no GIL held for its rows."""
        n = len(s)
        if n > self.capacity:
            self._size(n)
        if len(run_ends) + n // BLOCK_ROWS + 1 > len(self.seg_lo):  # each piece starts a run or a block
            self._pieces(2 * (len(run_ends) + n // BLOCK_ROWS + 1))
        self.n_seg = plan_segments(run_ends, run_ids, self.seg_lo, self.seg_hi, self.seg_part)
        S, Y, A, B = self.s[:n], self.y[:n], self.a[:n], self.b[:n]
        S[:] = s
        Y[:] = y
        _terms(S, A, B, logit)
        n_out, n_flush = sum_segments(
            S, A, B, Y, logit, self.seg_lo, self.seg_hi, self.seg_part, 0, self.n_seg, self.seg_stats,
            self.hist_n, self.hist_pos, self.touched, self.state, self.out, self.flushes, self.p[:n],
        )
        if n_out or n_flush:
            self.kept.append((self.out[:n_out].copy(), self.flushes[:n_flush].copy()))

    def merge_into(self, stats: np.ndarray) -> float:
        """Add its batch's pieces to ``stats`` in row order; returns the batch's bad rows."""
        return merge_segments(self.seg_stats, self.seg_part, self.n_seg, stats)


class Reducer:
    """The per-row pass over a chunk's batches, on ``threads`` threads, each batch whole on one.

    Batches are taken in rounds of ``threads``: lane i sums the round's batch i (numpy's terms and
    the compiled loop both run without the GIL) while the caller reads the next round from Polars;
    each batch's pieces are then added to :attr:`stats` in batch order. The pieces of a batch do not
    depend on the lane or on ``threads``, nor does the order they are added in: the same sums to the
    last bit whatever ``threads`` is. Each lane keeps a histogram of its own; :meth:`finish` merges
    them per partition.
    """

    def __init__(self, threads: int, capacity: int = 131_072) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.threads = max(1, threads)
        self.lanes = [_Lane(capacity) for _ in range(self.threads)]
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bce-reduce") if self.threads > 1 else None
        self.stats = np.zeros((16, len(STATS)))
        self.bad = 0.0  # bad rows in the batches added to stats so far
        self._pending: list[tuple] = []
        self._running: list = []  # (lane, future) of the round being summed

    def add(self, s: np.ndarray, y: np.ndarray, run_ends: np.ndarray, run_ids: np.ndarray, logit: bool, n_parts: int) -> float:
        """Queue a batch (scores, labels, runs of partition numbers below ``n_parts``); returns :attr:`bad` so far."""
        if n_parts > self.stats.shape[0]:
            grown = np.zeros((max(n_parts, 2 * self.stats.shape[0]), self.stats.shape[1]))
            grown[: self.stats.shape[0]] = self.stats
            self.stats = grown
        self._pending.append((s, y, run_ends, run_ids, logit))
        if len(self._pending) == self.threads:
            self._start_round()
        return self.bad

    def _start_round(self) -> None:
        self._wait_round()
        batches, self._pending = self._pending, []
        if self.pool is None:
            for batch in batches:
                self.lanes[0].run(*batch)
                self.bad += self.lanes[0].merge_into(self.stats)
            return
        self._running = [(lane, self.pool.submit(lane.run, *batch)) for lane, batch in zip(self.lanes, batches)]

    def _wait_round(self) -> None:
        running, self._running = self._running, []
        for lane, future in running:
            future.result()
            self.bad += lane.merge_into(self.stats)

    def abandon(self) -> None:
        """Stop: wait for the round being summed (its lanes use this reducer's buffers), keep nothing."""
        for _, future in self._running:
            future.exception()
        self._running, self._pending = [], []
        if self.pool is not None:
            self.pool.shutdown()

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sum what is queued; ``(stats, histogram rows, AUC sums)``, one flush per partition."""
        try:
            if self._pending:
                self._start_round()
            self._wait_round()
        finally:
            if self.pool is not None:
                self.pool.shutdown()
        bins, flushes = [], []
        for lane in self.lanes:
            n_out, n_flush = close_histogram(lane.hist_n, lane.hist_pos, lane.touched, lane.state, lane.out, lane.flushes)
            lane.kept.append((lane.out[:n_out].copy(), lane.flushes[:n_flush].copy()))
            bins += [b for b, _ in lane.kept]
            flushes += [f for _, f in lane.kept]
        bins, flushes = np.concatenate(bins), np.concatenate(flushes)
        if len(np.unique(flushes[:, 0])) < len(flushes):  # a partition that several lanes (or runs) saw
            out, out_flushes = np.empty_like(bins), np.empty_like(flushes)
            n_out, n_flush = merge_flushes(bins, flushes, out, out_flushes)
            bins, flushes = out[:n_out], out_flushes[:n_flush]
        return self.stats, bins, flushes


def _terms(S: np.ndarray, A: np.ndarray, B: np.ndarray, logit: bool) -> None:
    """The vectorised terms of rows of scores ``S`` into ``A`` and ``B`` (see :func:`sum_segments`)."""
    with np.errstate(all="ignore"):  # bad rows are counted by the loop, not warned about here
        if logit:
            np.abs(S, out=A)
            np.negative(A, out=A)
            np.exp(A, out=A)  # a = exp(-|s|)
            np.log1p(A, out=B)
        else:
            np.clip(S, PROBA_EPS, 1.0 - PROBA_EPS, out=B)
            np.log(B, out=A)
            np.negative(A, out=A)  # -log p
            np.negative(B, out=B)
            np.log1p(B, out=B)
            np.negative(B, out=B)  # -log1p(-p)


def warm_up() -> None:
    """Load the compiled loop (from numba's on-disk cache; compiled the first time) on one row."""
    reducer = Reducer(1, 1)
    reducer.add(np.array([0.5]), np.array([1.0]), np.array([1], np.int64), np.array([0], np.int64), True, 1)
    reducer.finish()
