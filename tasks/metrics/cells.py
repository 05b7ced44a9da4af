"""The cells of the finest cross, row by row, and the pass that adds each row to its cell.

A *cell* is one partition × one value (or bin) of each slice column: the finest grouping any
declared slicing asks for (:func:`tasks.data.slicing.finest_cross`). :class:`CellIndex` gives each
row of a batch its cell's number, the same number for the same cell in every batch of a chunk;
:class:`CellReducer` sums each batch's rows into their cells on a pool of threads
(:func:`tasks.metrics.cell_kernel.sum_cells`) and keeps one score histogram per cell.

Sums are added batch by batch in batch order, so they do not depend on the number of threads. The
histograms' counts add up exactly for unweighted rows; weighted bins, and every bin's Σ w·p, are sums of
floats whose last bit may depend on how the batches were shared among threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from tasks.data.slicing import CellColumn
from tasks.errors import InputError
from tasks.metrics.cell_kernel import (
    bin_codes,
    histogram_rows,
    number_cells,
    rows_from_segments,
    sort_by_cell,
    sum_cells,
)
from tasks.metrics.kernels import HIST_BINS, STATS
from tasks.metrics.lanes import terms
from tasks.metrics.schema import CHECKS

#: Cells a chunk may hold: each costs a histogram of HIST_BINS bins per thread
MAX_CELLS = 16_384
#: Bits of a packed cell key below which a lookup table maps keys to numbers (else a sort)
_TABLE_BITS = 22
#: Cells up to which each thread keeps dense histograms (96 KiB a cell: they stay in its caches); above, rows'
#: (cell, bin) keys are kept and added after the pass (:func:`tasks.metrics.cell_kernel.rows_from_segments`)
_DENSE_CELLS = 64


class _Codes:
    """The code of each value of one cell column: bins by edges, or values in the order first seen (0: null)."""

    def __init__(self, cell: CellColumn) -> None:
        self.cell = cell
        self.values: list = [None]  # by value: code → value; null is code 0, new values are appended
        self.dtype: pl.DataType | None = None
        self._of_physical = np.empty(0, np.int64)  # a Categorical's physical code → this column's code (-1: new)

    @property
    def cardinality(self) -> int:
        return len(self.cell.edges) + 2 if self.cell.edges else len(self.values)

    def codes(self, series: pl.Series) -> np.ndarray:
        if self.cell.edges:
            x = series.cast(pl.Float64).fill_null(float("nan")).to_numpy()
            codes = np.empty(len(x), np.int64)
            bin_codes(x, np.asarray(self.cell.edges, np.float64), codes)
            return codes
        if series.dtype.is_float():
            series = series.fill_nan(None)  # NaN is not equal to itself: it goes with null, as in bins
        if isinstance(
            series.dtype, pl.Categorical
        ):  # text the scan read as categories (see tasks.data.slicing.category_expression)
            self.dtype = pl.String
            return self._categorical_codes(series)
        self.dtype = self.dtype or series.dtype
        if series.dtype == pl.String:
            try:  # the common case: every value seen before (a strict cast fails on a new one)
                return self._string_codes(series)
            except pl.exceptions.InvalidOperationError:
                self._learn(series)
                return self._string_codes(series)
        self._learn(series)
        return series.replace_strict(self.values, range(len(self.values)), return_dtype=pl.Int64).to_numpy()

    def _string_codes(self, series: pl.Series) -> np.ndarray:
        # the Enum of the known values numbers them as this column does, less one (its code 0 is null)
        physical = series.cast(pl.Enum(self.values[1:])).to_physical()
        if physical.null_count():
            physical = physical.cast(pl.Int64).fill_null(-1)
        return physical.to_numpy().astype(np.int64) + 1

    def _categorical_codes(self, series: pl.Series) -> np.ndarray:
        # the scan's categories are numbered once per process (a named Categories): a lookup array maps
        # their numbers to this column's codes, and only numbers not seen before are looked at as text
        physical = series.to_physical()
        valid = physical.is_not_null().to_numpy() if physical.null_count() else None
        p = physical.fill_null(0).to_numpy().astype(np.int64)
        top = int(p.max(initial=-1)) + 1
        if top > len(self._of_physical):
            grown = np.full(max(top, 2 * len(self._of_physical)), -1, np.int64)
            grown[: len(self._of_physical)] = self._of_physical
            self._of_physical = grown
        codes = self._of_physical[p]
        new = codes < 0 if valid is None else (codes < 0) & valid
        if new.any():
            rows = np.flatnonzero(new)
            numbers, first = np.unique(p[rows], return_index=True)
            text = series.gather(rows[first]).cast(pl.String).to_list()
            self._learn(pl.Series(text, dtype=pl.String))
            self._of_physical[numbers] = [self.values.index(t) for t in text]
            codes = self._of_physical[p]
        if valid is not None:
            codes[~valid] = 0
        return codes

    def _learn(self, series: pl.Series) -> None:
        seen = set(self.values)
        self.values += [v for v in series.unique(maintain_order=True).to_list() if v not in seen]
        if len(self.values) > MAX_CELLS:
            bins = f", or declare numeric bins ('{self.cell.column}:10,20,50')" if series.dtype.is_numeric() else ""
            raise InputError(
                f"--slice {self.cell.column}: more than {MAX_CELLS:,} values; slice by a column with few values{bins}."
            )

    def labels(self) -> pl.Series:
        """The value of each code (bins: their labels)."""
        if self.cell.edges:
            labels = self.cell.bin_labels()  # an Enum: slices sort in bin order, not as text
            return pl.Series(self.cell.name, labels, pl.Enum(labels))
        return pl.Series(self.cell.name, self.values, self.dtype)


class CellIndex:
    """Numbers for the cells (partition × slice values) rows fall in, stable across a chunk's batches."""

    def __init__(self, cross: tuple[CellColumn, ...]) -> None:
        self.columns = [_Codes(c) for c in cross]
        self.cells: list[tuple[int, ...]] = []  # cell number → (partition, code of each column)
        self._bits: tuple[int, ...] = ()
        self._table = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self.cells)

    def ids(self, parts: np.ndarray, batch: pl.DataFrame) -> np.ndarray:
        """The cell number of each row, given its partition number ``parts``."""
        codes = [parts.astype(np.int64), *(c.codes(batch.get_column(c.cell.column)) for c in self.columns)]
        need = (max(1, max(int(k.max(initial=0)) + 1, c).bit_length()) for k, c in zip(codes, self._caps()))
        # widths only grow: the table is rebuilt when a column outgrows its bits, not batch by batch
        bits = tuple(max(b, n) for b, n in zip(self._bits or (0,) * len(codes), need))
        if bits != self._bits:
            self._bits = bits
            self._table = np.full(1 << sum(bits), -1, np.int64) if sum(bits) <= _TABLE_BITS else np.empty(0)
            for n, cell in enumerate(self.cells):
                if self._table.size:
                    self._table[self._pack(cell)] = n
        # new cells are numbered in the order their first rows come: the same numbers (so the same order of
        # records, and of the roll-ups' additions) however the rows are cut into batches
        if self._table.size:
            ids, new_keys = np.empty(len(parts), np.int64), np.empty(len(parts), np.int64)
            n_new = number_cells(np.stack(codes), np.array(bits, np.int64), self._table, ids, new_keys, len(self.cells))
            for k in new_keys[:n_new]:
                self._add(self._unpack(int(k)))
            return ids
        key = self._pack(codes)
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        lookup = {tuple(c): n for n, c in enumerate(self.cells)}
        numbers = np.array([lookup.get(self._unpack(int(k))) for k in uniq], dtype=object)
        for i in np.argsort(first, kind="stable"):
            if numbers[i] is None:
                numbers[i] = self._add(self._unpack(int(uniq[i])))
        return numbers.astype(np.int64)[inverse]

    def _caps(self) -> list[int]:
        return [1, *(c.cardinality for c in self.columns)]

    def _pack(self, codes) -> np.ndarray | int:
        key = 0
        for k, b in zip(codes, self._bits):
            key = (key << b) | k
        return key

    def _unpack(self, key: int) -> tuple[int, ...]:
        out = []
        for b in reversed(self._bits):
            out.append(key & ((1 << b) - 1))
            key >>= b
        return tuple(reversed(out))

    def _add(self, cell: tuple[int, ...]) -> int:
        if len(self.cells) >= MAX_CELLS:
            names = ", ".join(c.cell.name for c in self.columns)
            raise InputError(
                f"--slice: more than {MAX_CELLS:,} cells of partitions × {names} in one chunk; "
                "slice by fewer values (numeric bins, or a filter like 'country=de')."
            )
        self.cells.append(cell)
        return len(self.cells) - 1

    def frame(self) -> pl.DataFrame:
        """``__part`` (the partition number) and each cell column's value, one row per cell number."""
        cells = np.array(self.cells, np.int64).reshape(len(self.cells), 1 + len(self.columns))
        out = {"__part": cells[:, 0]}
        for j, c in enumerate(self.columns, 1):
            out[c.cell.name] = c.labels().gather(cells[:, j]) if len(cells) else c.labels().head(0)
        return pl.DataFrame(out)


class CellReducer:
    """Sum batches into cells on ``threads`` threads; sums added in batch order (see the module docstring).

    Histograms are dense per thread while cells are few (:data:`_DENSE_CELLS`); from the round where they
    are more, each batch's rows are kept sorted by cell instead (on the thread that summed them), and
    :meth:`finish` adds each cell's rows, the dense rounds' bins first.
    """

    def __init__(self, threads: int, rows: int = 0) -> None:
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bce-cells")
        self.stats = np.zeros((0, len(STATS)))
        self.hists = [np.zeros((0, HIST_BINS, 3)) for _ in range(self.threads)]
        self.keyed: list[tuple[np.ndarray, ...]] = []  # each batch's rows by cell: start, bin, n, n_pos, w·p
        self._rows = rows  # the rows expected: kept rows go to one buffer of that size, end to end
        self._buffer: tuple[np.ndarray, ...] = ()
        self._used = 0  # rows of the buffer handed out
        self._handed = 0  # rows handed out for keeping, in the buffer or not
        self.bad = 0.0
        self._pending: list[tuple] = []
        self._running: list = []

    def add(self, s, y, w, cells: np.ndarray, logit: bool, n_cells: int) -> float:
        """Queue a batch (scores, labels, weights, cell numbers below ``n_cells``); returns the bad rows so far."""
        self._pending.append((s, y, w, cells, logit, n_cells))
        if len(self._pending) == 2 * self.threads:
            self._start_round()
        return self.bad

    def _start_round(self) -> None:
        self._wait_round()
        batches, self._pending = self._pending, []
        n_cells = max(b[-1] for b in batches)
        if self.keyed or n_cells > _DENSE_CELLS:
            keys = [self._by_cell(len(b[0]), b[-1]) for b in batches]
            self.keyed += keys
        else:
            self._grow(n_cells)
            keys = [()] * len(batches)
        per = -(-len(batches) // self.threads)
        shares = [list(zip(batches[i : i + per], keys[i : i + per])) for i in range(0, len(batches), per)]
        self._running = [self.pool.submit(_run_share, share, h) for share, h in zip(shares, self.hists)]

    def _grow(self, n_cells: int) -> None:
        if n_cells <= self.hists[0].shape[0]:
            return
        size = max(n_cells, 2 * self.hists[0].shape[0], 16)
        for i, hist in enumerate(self.hists):
            new = np.zeros((size, HIST_BINS, 3))
            new[: hist.shape[0]] = hist
            self.hists[i] = new

    def _wait_round(self) -> None:
        running, self._running = self._running, []
        for future in running:
            for acc in future.result():  # each batch's sums, in batch order
                if acc.shape[0] > self.stats.shape[0]:
                    grown = np.zeros((max(acc.shape[0], 2 * self.stats.shape[0]), len(STATS)))
                    grown[: self.stats.shape[0]] = self.stats
                    self.stats = grown
                self.stats[: acc.shape[0]] += acc
                self.bad += float(acc[:, len(STATS) - len(CHECKS) :].sum())

    def abandon(self) -> None:
        """Stop: wait for the round being summed, keep nothing."""
        for future in self._running:
            future.exception()
        self._running, self._pending = [], []
        self.pool.shutdown()

    def finish(self, n_cells: int) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
        """``(stats, histogram rows (cell, bin, n, n_pos, sum_p) as five arrays, AUC sums (P, N, A, T) per cell)``."""
        try:
            if self._pending:
                self._start_round()
            self._wait_round()
        finally:
            self.pool.shutdown()
        stats = np.zeros((n_cells, len(STATS)))
        stats[: min(n_cells, self.stats.shape[0])] = self.stats[:n_cells]
        hist = self.hists[0]
        for other in self.hists[1:]:  # in lane order
            hist += other
        sums = np.zeros((n_cells, 4))
        if not self.keyed:
            hist = hist[:n_cells] if hist.shape[0] >= n_cells else np.zeros((n_cells, HIST_BINS, 3))
            size = int(np.count_nonzero(hist[:, :, 0]))
            rows = _histogram_arrays(size)
            histogram_rows(hist, n_cells, *rows, sums)
            return stats, rows, sums
        # every batch's rows in batch order (after the dense rounds' bins, which came first)
        segments, self.keyed = self.keyed, []
        base = np.cumsum([0, *(len(seg[1]) for seg in segments)])
        starts = np.empty((n_cells + 1, len(segments)), np.int64)
        for g, seg in enumerate(segments):  # a batch that saw fewer cells has none of the later ones
            starts[:, g] = base[g] + seg[0][np.minimum(np.arange(n_cells + 1), len(seg[0]) - 1)]
        if self._buffer and base[-1] == self._used:  # the rows lie end to end in the buffer already
            o_bin, o_n, o_pos, o_p = (b[: self._used] for b in self._buffer)
        else:
            o_bin, o_n, o_pos, o_p = (np.concatenate([seg[i] for seg in segments]) for i in (1, 2, 3, 4))
        size = int(np.count_nonzero(hist[:, :, 0])) + len(o_bin)
        rows = _histogram_arrays(size)
        size = rows_from_segments(hist, starts, o_bin, o_n, o_pos, o_p, *rows, sums)
        return stats, tuple(r[:size] for r in rows), sums

    def _by_cell(self, rows: int, n_cells: int) -> tuple[np.ndarray, ...]:
        """Room for a batch's rows sorted by cell (:func:`tasks.metrics.cell_kernel.sort_by_cell`): the next rows
        of one buffer, end to end, while it has room (then :meth:`finish` need not copy them)."""
        if not self._buffer and self._rows:
            self._buffer = (np.empty(self._rows, np.int32), *(np.empty(self._rows) for _ in range(3)))
        start = np.zeros(n_cells + 1, np.int64)
        at, self._handed = self._handed, self._handed + rows
        if self._used == at and at + rows <= self._rows:  # every row so far in the buffer, and room for these
            self._used = at + rows
            return (start, *(b[at : at + rows] for b in self._buffer))
        return start, np.empty(rows, np.int32), np.empty(rows), np.empty(rows), np.empty(rows)


def _histogram_arrays(size: int) -> tuple[np.ndarray, ...]:
    """Room for ``size`` histogram rows ``(cell, bin, n, n_pos, sum_p)``, as the compiled writers fill them."""
    return np.empty(size, np.int32), np.empty(size, np.int32), np.empty(size), np.empty(size), np.empty(size)


#: a batch summed into dense histograms keeps no rows: it writes no bins
_NO_BINS, _NO_PS = np.empty(0, np.int32), np.empty(0)


def _run_share(batches: list[tuple], hist: np.ndarray) -> list[np.ndarray]:
    """Sum a lane's batches, each into sums of its own (added in batch order by the caller)."""
    accs = []
    for (s, y, w, cells, logit, n_cells), by_cell in batches:
        a, b = np.empty_like(s), np.empty_like(s)
        terms(s, a, b, logit)
        acc = np.zeros((n_cells, len(STATS)))
        # each row's score bin and p, when rows are kept
        bins, ps = (np.empty(len(s), np.int32), np.empty(len(s))) if by_cell else (_NO_BINS, _NO_PS)
        sum_cells(s, a, b, y, w, cells, logit, acc, hist, bins, ps)
        if by_cell:
            sort_by_cell(cells, bins, ps, w, y, *by_cell)
        accs.append(acc)
    return accs


class CellSink:
    """The pass's rows into cells: each batch's cell numbers (:class:`CellIndex`), weights, and sums."""

    def __init__(self, cross: tuple[CellColumn, ...], weight: str | None, threads: int, rows: int = 0) -> None:
        self.index = CellIndex(cross)
        self.weight = weight
        self.reducer = CellReducer(threads, rows)

    def add(self, batch: pl.DataFrame, s, y, run_ends: np.ndarray, run_ids: np.ndarray, logit: bool) -> float:
        """Queue a batch whose rows lie in runs of partition numbers; returns the bad rows so far."""
        parts = np.repeat(run_ids, np.diff(run_ends, prepend=0))
        cells = self.index.ids(parts, batch)
        if self.weight is None:
            w = np.ones(len(s))
        else:
            w = batch.get_column(self.weight).cast(pl.Float64).fill_null(float("nan")).to_numpy()
        return self.reducer.add(s, y, w, cells, logit, len(self.index))

    def abandon(self) -> None:
        self.reducer.abandon()

    def finish(self) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
        """See :meth:`CellReducer.finish`."""
        return self.reducer.finish(len(self.index))
