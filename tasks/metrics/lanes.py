"""The per-row pass over a chunk's batches, shared by threads: the compiled loops of
:mod:`tasks.metrics.kernels`, driven batch by batch, with the same sums to the last bit whatever the number
of threads (the score bins' Σ p aside: a float sum per lane, whose last bits depend on how the lanes shared the
rows). Imported only when a reduce runs.
"""

from __future__ import annotations

import numpy as np

from tasks.metrics.kernels import (
    BLOCK_ROWS,
    HIST_BINS,
    STATS,
    close_histogram,
    merge_flushes,
    merge_segments,
    new_state,
    plan_segments,
    sum_segments,
    sum_unlabelled,
)
from tasks.metrics.loss import PROBA_EPS


def _aligned(n: int) -> np.ndarray:
    raw = np.empty(n + 8)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip : skip + n]


#: Consecutive batches a lane sums in one go: a partition that spans batches then mostly stays in
#: one lane's histogram (fewer histogram rows to merge), and lanes meet the caller less often.
BATCHES_PER_LANE = 4
#: Batches of one round, at most (two rounds are held at once): many threads take fewer batches each
MAX_ROUND_BATCHES = 64
#: Bytes of a round's batches, at most, per thread (a bound on the memory held whatever the batch
#: size). A round that ends early changes no sum: each batch's pieces are the same, added in batch
#: order
MAX_LANE_BYTES = 16 << 20


class _Lane:
    """One thread's share of the pass: buffers for one batch, its open histogram, its output rows.

    Each batch's rows, scores and terms sit in 64-byte aligned buffers, at the same offsets whichever
    lane takes the batch: the compiled sums are vectorised, and how a vector loop splits its rows
    can depend on the addresses of its arrays (a fresh array can start anywhere).
    """

    def __init__(self, capacity: int, figures: bool = True) -> None:
        self.figures = figures  # the calibration sums (off only for the bench's run without them)
        self.hist_n = np.zeros(HIST_BINS, np.int64)
        self.hist_pos = np.zeros(HIST_BINS, np.int64)
        self.hist_p = np.zeros(HIST_BINS)  # Σ p a bin: the equal-mass calibration bins are formed from it
        self.touched = np.zeros(HIST_BINS, np.int32)
        self.state = new_state()
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []  # (histogram rows, AUC sums) written so far
        self.n_seg = 0  # pieces of the batches summed since the last merge_into
        self._size(capacity)
        self._pieces(64)

    def _size(self, capacity: int) -> None:
        # a batch's arrays, and what its flushes can write: at most one new bin a row, and the open
        # histogram. The five arrays are cut from one aligned block at fixed strides: the compiled
        # loop checks at run time whether its arrays overlap and takes another (differently summed)
        # path when they are close, so their distances must not depend on where malloc put them
        self.capacity = capacity
        stride = -(-capacity // 8) * 8 + 64
        block = _aligned(5 * stride)
        self.s, self.y, self.a, self.b, self.p = (block[k * stride : k * stride + capacity] for k in range(5))
        self.out = np.empty((capacity + HIST_BINS, 5))  # (partition, bin, n, n_pos, Σp): counts exact as floats

    def _pieces(self, n_seg: int) -> None:
        # room for n_seg pieces (their bounds and sums kept until merged), and a flush for each
        old = (self.seg_lo, self.seg_hi, self.seg_part, self.seg_stats) if self.n_seg else None
        self.seg_lo, self.seg_hi, self.seg_part = (np.empty(n_seg, np.int64) for _ in range(3))
        self.seg_stats = np.empty((n_seg, len(STATS)))
        self.flushes = np.empty((n_seg + 1, 6))
        if old is not None:
            for new, kept in zip((self.seg_lo, self.seg_hi, self.seg_part, self.seg_stats), old):
                new[: self.n_seg] = kept[: self.n_seg]

    def run(self, batches: list[tuple]) -> None:
        """Sum consecutive batches' pieces (see :func:`sum_segments`); no GIL held over their rows."""
        for batch in batches:
            self._run_one(*batch)

    def _run_one(self, s: np.ndarray, y: np.ndarray, run_ends: np.ndarray, run_ids: np.ndarray, logit: bool) -> None:
        n, at = len(s), self.n_seg
        if n > self.capacity:
            self._size(n)
        if at + len(run_ends) + n // BLOCK_ROWS + 1 > len(self.seg_lo):  # each piece starts a run or a block
            self._pieces(2 * (at + len(run_ends) + n // BLOCK_ROWS + 1))
        lo, hi, part = self.seg_lo[at:], self.seg_hi[at:], self.seg_part[at:]
        n_seg = plan_segments(run_ends, run_ids, lo, hi, part)
        S, Y, A, B = self.s[:n], self.y[:n], self.a[:n], self.b[:n]
        S[:] = s
        Y[:] = y
        terms(S, A, B, logit)
        n_out, n_flush = sum_segments(
            S,
            A,
            B,
            Y,
            logit,
            lo,
            hi,
            part,
            0,
            n_seg,
            self.seg_stats[at:],
            self.hist_n,
            self.hist_pos,
            self.hist_p,
            self.touched,
            self.state,
            self.out,
            self.flushes,
            self.p[:n],
            self.figures,
        )
        self.n_seg = at + n_seg
        if n_out or n_flush:
            self.kept.append((self.out[:n_out].copy(), self.flushes[:n_flush].copy()))

    def merge_into(self, stats: np.ndarray) -> float:
        """Add its batches' pieces to ``stats`` in row order; returns their bad rows."""
        bad = merge_segments(self.seg_stats, self.seg_part, self.n_seg, stats)
        self.n_seg = 0
        return bad


class Reducer:
    """The per-row pass over a chunk's batches, on ``threads`` threads, each batch whole on one.

    Batches are taken in rounds of ``threads`` × :data:`BATCHES_PER_LANE` (at most
    :data:`MAX_ROUND_BATCHES`, and ``threads`` × :data:`MAX_LANE_BYTES` of them: the memory held):
    lane i sums the round's i-th run of consecutive batches (numpy's terms and the compiled loop
    both run without the GIL) while the caller reads the next round from Polars; the pieces are then added to
    :attr:`stats`
    in batch order. The pieces of a batch do not depend on the lane or on ``threads``, nor does the
    order they are added in: the same sums to the last bit whatever ``threads`` is. Each lane keeps
    a histogram of its own; :meth:`finish` merges them per partition (counts exactly; Σ p, a float, to its
    last bits as the lanes shared the rows).
    """

    def __init__(self, threads: int, capacity: int = 131_072, figures: bool = True) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.threads = max(1, threads)
        self.per_lane = max(1, min(BATCHES_PER_LANE, MAX_ROUND_BATCHES // self.threads))
        # figures=False leaves the calibration sums at 0: make bench times the pass without them, nothing else
        self.lanes = [_Lane(capacity, figures) for _ in range(self.threads)]
        # lanes on threads of their own, even one: the caller reads the next round from Polars meanwhile
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bce-reduce")
        self.stats = np.zeros((16, len(STATS)))
        self.bad = 0.0  # bad rows in the batches added to stats so far
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._running: list = []  # (lane, future) of the round being summed

    def add(
        self, s: np.ndarray, y: np.ndarray, run_ends: np.ndarray, run_ids: np.ndarray, logit: bool, n_parts: int
    ) -> float:
        """Queue a batch (scores, labels, runs of partition numbers below ``n_parts``); returns :attr:`bad` so far."""
        self._grow(n_parts)
        self._pending.append((s, y, run_ends, run_ids, logit))
        self._pending_bytes += s.nbytes + y.nbytes
        if len(self._pending) == self.threads * self.per_lane or self._pending_bytes >= self.threads * MAX_LANE_BYTES:
            self._start_round()
        return self.bad

    def set_aside_unlabelled(
        self, s: np.ndarray, y: np.ndarray, run_ends: np.ndarray, run_ids: np.ndarray, logit: bool, n_parts: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sum a batch's rows whose label has not arrived into their partitions' unlabelled sums (in batch order,
        here), and return the other rows (scores, labels, run ends) for :meth:`add`."""
        self._grow(n_parts)
        out = np.isneginf(y)
        u = s[out]
        a, b = np.empty_like(u), np.empty_like(u)
        terms(u, a, b, logit)
        self.bad += sum_unlabelled(u, a, b, np.repeat(run_ids, np.diff(run_ends, prepend=0))[out], logit, self.stats)
        # each run's end among the rows kept: the kept rows before it (a run may be empty: a file of no rows)
        kept = np.r_[0, np.cumsum(~out)]
        return s[~out], y[~out], kept[run_ends]

    def _grow(self, n_parts: int) -> None:
        if n_parts > self.stats.shape[0]:
            grown = np.zeros((max(n_parts, 2 * self.stats.shape[0]), self.stats.shape[1]))
            grown[: self.stats.shape[0]] = self.stats
            self.stats = grown

    def _start_round(self) -> None:
        self._wait_round()
        batches, self._pending, self._pending_bytes = self._pending, [], 0
        per = -(
            -len(batches) // self.threads
        )  # per_lane in a full round; fewer each in a short one, so every lane works
        shares = [batches[i : i + per] for i in range(0, len(batches), per)]
        self._running = [(lane, self.pool.submit(lane.run, share)) for lane, share in zip(self.lanes, shares)]

    def _wait_round(self) -> None:
        running, self._running = self._running, []
        for lane, future in running:
            future.result()
            self.bad += lane.merge_into(self.stats)

    def abandon(self) -> None:
        """Stop: wait for the round being summed (its lanes use this reducer's buffers), keep nothing."""
        for _, future in self._running:
            future.exception()
        self._running, self._pending, self._pending_bytes = [], [], 0
        self.pool.shutdown()

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sum what is queued; ``(stats, histogram rows, AUC sums)``, one flush per partition."""
        try:
            if self._pending:
                self._start_round()
            self._wait_round()
        finally:
            self.pool.shutdown()
        pieces, flushes = [], []
        for lane in self.lanes:
            n_out, n_flush = close_histogram(
                lane.hist_n, lane.hist_pos, lane.hist_p, lane.touched, lane.state, lane.out, lane.flushes
            )
            lane.kept.append((lane.out[:n_out].copy(), lane.flushes[:n_flush].copy()))
            pieces += [b for b, _ in lane.kept]
            flushes += [f for _, f in lane.kept]
        return (self.stats, *_merged(pieces, np.concatenate(flushes)))


def _merged(pieces: list[np.ndarray], flushes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The histogram rows of ``pieces`` in one array, one flush per partition: the flushes of
    partitions that several lanes (or runs) saw, merged, after the others' rows in their order.

    Small partitions have about one histogram row per row scanned, so the rows are copied once,
    into one array: each extra copy of them cost 0.1 s for 10,000 partitions in a CLI run here.
    """
    parts, counts = np.unique(flushes[:, 0], return_counts=True)
    if len(parts) == len(flushes):
        return np.concatenate(pieces), flushes
    shared = np.isin(flushes[:, 0], parts[counts > 1])
    rows = np.repeat(shared, flushes[:, 5].astype(np.int64))  # the bins each flush wrote
    ends = np.cumsum([len(p) for p in pieces])
    masks = np.split(rows, ends[:-1])
    n_keep = len(rows) - int(rows.sum())
    out = np.empty((len(rows), 5))  # the kept rows, then the merged ones (never more than were merged)
    at = 0
    for piece, mask in zip(pieces, masks):
        k = len(piece) - int(mask.sum())
        np.compress(~mask, piece, axis=0, out=out[at : at + k])
        at += k
    out_flushes = np.empty((int(shared.sum()), 6))
    sel = np.concatenate([piece[mask] for piece, mask in zip(pieces, masks)])
    n_out, n_flush = merge_flushes(sel, flushes[shared], out[n_keep:], out_flushes)
    return out[: n_keep + n_out], np.concatenate([flushes[~shared], out_flushes[:n_flush]])


def terms(S: np.ndarray, A: np.ndarray, B: np.ndarray, logit: bool) -> None:
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
    _, bins, flushes = reducer.finish()
    twice = np.vstack([bins, bins])  # the same partition written by two lanes: merged
    merge_flushes(twice, np.vstack([flushes, flushes]), np.empty_like(twice), np.empty((2, 6)))
