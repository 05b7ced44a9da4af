"""The per-row loop of a sliced or weighted pass, compiled with numba: each row added to its cell.

Where rows of one cell do not come in runs (a slice column inside the files, in any order), or rows
carry weights, each row's loss and figures go straight to its cell's row of the statistics (a
scatter) and its weight to its cell's score histogram. The terms ``a`` and ``b`` are those of
:mod:`tasks.metrics.kernels` (computed by numpy on the batch); each sum of
:data:`tasks.metrics.schema.SUMS` is weighted by the row's weight ``w`` (1 without weights), the
counts (``n_rows``, ``n_pos``, ``n_neg``, ``n_saturated``) are not.
"""

from __future__ import annotations

import numba
import numpy as np

from tasks.metrics.calibration import CAL_BINS
from tasks.metrics.kernels import HIST_BINS, STATS, row_terms, unlabelled_terms

_N_ROWS, _N_POS, _N_NEG = (STATS.index(c) for c in ("n_rows", "n_pos", "n_neg"))
_SUM_W, _SUM_W_SQ, _SUM_W_POS = (STATS.index(c) for c in ("sum_w", "sum_w_sq", "sum_w_pos"))
_SUM_LOSS, _SUM_LOSS_SQ, _SUM_LOSS_POS = (STATS.index(c) for c in ("sum_loss", "sum_loss_sq", "sum_loss_pos"))
_SUM_CORRECT, _SUM_BRIER, _SUM_P, _N_SATURATED = (
    STATS.index(c) for c in ("sum_correct", "sum_brier", "sum_p", "n_saturated")
)
_SUM_ENTROPY, _SUM_EXCESS_SQ = (STATS.index(c) for c in ("sum_entropy", "sum_excess_sq"))
_CAL_W, _CAL_P, _CAL_Y = (STATS.index(f"cal_{k}_0") for k in ("w", "p", "y"))
_BAD_SCORE, _BAD_LABEL, _BAD_WEIGHT = (STATS.index(c) for c in ("bad_score", "bad_label", "bad_weight"))
_N_UNL, _SUM_W_UNL, _SUM_H_UNL, _SUM_V_UNL = (
    STATS.index(c) for c in ("n_unlabelled", "sum_w_unlabelled", "sum_entropy_unlabelled", "sum_var_unlabelled")
)


@numba.njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _add_unlabelled(row, si, ai, bi, wi, logit):  # pragma: no cover - compiled
    """Add a row whose label has not arrived to its cell's unlabelled sums; returns its bad score and weight."""
    h, v, bad_s = unlabelled_terms(si, ai, bi, logit)
    bad_w = 0.0 if (wi >= 0.0) & (wi < np.inf) else 1.0
    row[_N_UNL] += 1.0
    row[_SUM_W_UNL] += wi
    row[_SUM_H_UNL] += wi * h
    row[_SUM_V_UNL] += wi * wi * v
    row[_BAD_SCORE] += bad_s
    row[_BAD_WEIGHT] += bad_w
    return bad_s + bad_w


@numba.njit(nogil=True, cache=True, error_model="numpy")
def sum_cells(s, a, b, y, w, cell, logit, acc, hist, keys, ps):  # pragma: no cover - compiled
    """Add rows of a batch to their cells: ``acc[cell[i]]`` (columns :data:`STATS`) and the cell's histogram.

    ``hist[c, bin, 0]`` holds the weight of cell c's rows in a score bin, ``hist[c, bin, 1]`` that of
    its positive rows and ``hist[c, bin, 2]`` their Σ w·p (side by side: one cache line a row, whichever
    cell). With many cells, dense histograms outgrow the caches (and memory: 96 KiB a cell and thread):
    then ``keys`` and ``ps`` are as long as the batch and get each row's bin (−1: no label) and p, for
    :func:`sort_by_cell`, and ``hist`` is not touched. Returns the bad rows (score, label or weight) seen.
    """
    sparse = keys.shape[0] > 0
    bad = 0.0
    for i in range(s.shape[0]):
        c = cell[i]
        si, yi, wi = s[i], y[i], w[i]
        if yi == -np.inf:  # no label yet (tasks.metrics.late_labels.UNLABELLED): expected, not realized
            bad += _add_unlabelled(acc[c], si, a[i], b[i], wi, logit)
            if sparse:
                keys[i] = -1  # in no histogram
            continue
        fpos = 1.0 if yi == 1.0 else 0.0
        fneg = 1.0 if yi == 0.0 else 0.0
        loss, p, excess, correct, sat, bad_s = row_terms(si, a[i], b[i], yi, logit)
        bad_w = 0.0 if (wi >= 0.0) & (wi < np.inf) else 1.0  # NaN fails both
        bad_y = 1.0 - fpos - fneg
        d = p - yi
        row = acc[c]
        row[_N_ROWS] += 1.0
        row[_N_POS] += fpos
        row[_N_NEG] += fneg
        row[_SUM_W] += wi
        row[_SUM_W_SQ] += wi * wi
        row[_SUM_W_POS] += wi * fpos
        row[_SUM_LOSS] += wi * loss
        row[_SUM_LOSS_SQ] += wi * loss * loss
        row[_SUM_LOSS_POS] += wi * loss * fpos
        row[_SUM_CORRECT] += wi * correct
        row[_SUM_BRIER] += wi * d * d
        row[_SUM_P] += wi * p
        row[_SUM_ENTROPY] += wi * (loss - excess)
        row[_SUM_EXCESS_SQ] += wi * excess * excess
        row[_N_SATURATED] += sat
        row[_BAD_SCORE] += bad_s
        row[_BAD_LABEL] += bad_y
        row[_BAD_WEIGHT] += bad_w
        bad += bad_s + bad_y + bad_w
        valid = (p >= 0.0) & (p <= 1.0)
        cal = min(int(p * CAL_BINS), CAL_BINS - 1) if valid else 0
        row[_CAL_W + cal] += wi
        row[_CAL_P + cal] += wi * p
        row[_CAL_Y + cal] += wi * yi
        bin_ = min(int(p * HIST_BINS), HIST_BINS - 1) if valid else 0
        if sparse:
            keys[i] = bin_
            ps[i] = p
        else:
            hist[c, bin_, 0] += wi
            hist[c, bin_, 1] += wi * fpos
            hist[c, bin_, 2] += wi * p
    return bad


@numba.njit(nogil=True, cache=True)
def sort_by_cell(cell, bins, ps, w, y, start, o_bin, o_n, o_pos, o_p):  # pragma: no cover - compiled
    """A batch's rows ordered by cell (stable), as their bins, weights, positive weights and w·p: cell c's rows are
    ``start[c]:start[c + 1]`` (``start``: zeros, one longer than the batch's cells). A counting sort on the
    thread that summed the batch, in cache: :func:`rows_from_segments` then reads each cell's rows in runs."""
    for i in range(cell.shape[0]):
        if bins[i] >= 0:  # a row without a label has no bin
            start[cell[i] + 1] += 1
    for c in range(start.shape[0] - 1):
        start[c + 1] += start[c]
    at = start[:-1].copy()
    for i in range(cell.shape[0]):
        if bins[i] < 0:
            continue
        c = cell[i]
        j = at[c]
        at[c] = j + 1
        o_bin[j] = bins[i]
        o_n[j] = w[i]
        o_pos[j] = w[i] * (1.0 if y[i] == 1.0 else 0.0)
        o_p[j] = w[i] * ps[i]


@numba.njit(nogil=True, cache=True)
def rows_from_segments(
    hist, starts, o_bin, o_n, o_pos, o_p, cell, bin_, n_out, pos_out, p_out, sums
):  # pragma: no cover
    """:func:`histogram_rows` from dense histograms ``hist`` (cells × bins × 3: the first rounds', maybe no cells)
    and segments of rows sorted by cell (:func:`sort_by_cell`, end to end): cell c's rows of segment k are
    ``starts[c, k]:starts[c + 1, k]``. Each cell's dense bins, then its rows segment by segment (so a bin's
    weights in segment order, whatever the threads did) are added in a dense row that stays in cache, whose
    nonzero bins are then written in bin order. Returns the rows written."""
    hn = np.zeros(HIST_BINS)
    hp = np.zeros(HIST_BINS)
    hs = np.zeros(HIST_BINS)
    k = 0
    for c in range(starts.shape[0] - 1):
        rows = 0
        if c < hist.shape[0]:
            for b in range(HIST_BINS):
                hn[b] += hist[c, b, 0]
                hp[b] += hist[c, b, 1]
                hs[b] += hist[c, b, 2]
            rows = 1
        for g in range(starts.shape[1]):
            for j in range(starts[c, g], starts[c + 1, g]):
                hn[o_bin[j]] += o_n[j]
                hp[o_bin[j]] += o_pos[j]
                hs[o_bin[j]] += o_p[j]
            rows += starts[c + 1, g] - starts[c, g]
        if rows > 0:
            k = _write_bins(hn, hp, hs, c, True, k, cell, bin_, n_out, pos_out, p_out, sums[c])
    return k


@numba.njit(nogil=True, cache=True)
def _write_bins(hn, hp, hs, label, clear, k, label_out, bin_out, n_out, pos_out, p_out, sums_row):  # pragma: no cover
    """Write one histogram's nonzero bins, in bin order, as rows labelled ``label`` from row ``k`` on, and its AUC
    sums ``(P, N, A, T)`` in ``sums_row`` (see :func:`tasks.metrics.auc.auc_from_sums`); ``clear`` zeroes the bins
    written (a scratch row used again). Returns the next row."""
    n_p, n_n, above, ties = 0.0, 0.0, 0.0, 0.0
    for b in range(HIST_BINS):
        nb = hn[b]
        if nb == 0.0:
            continue
        pb = hp[b]
        neg = nb - pb
        above += pb * n_n
        ties += pb * neg
        n_p += pb
        n_n += neg
        label_out[k], bin_out[k], n_out[k], pos_out[k], p_out[k] = label, b, nb, pb, hs[b]
        k += 1
        if clear:
            hn[b] = 0.0
            hp[b] = 0.0
            hs[b] = 0.0
    sums_row[0], sums_row[1], sums_row[2], sums_row[3] = n_p, n_n, above, ties
    return k


@numba.njit(nogil=True, cache=True)
def histogram_rows(hist, n_cells, cell, bin_, n_out, pos_out, p_out, sums):  # pragma: no cover - compiled
    """Each cell's nonzero bins as rows ``(cell, bin, n, n_pos, sum_p)`` of five arrays (in cell, then bin order)
    and its AUC sums ``(P, N, A, T)`` in ``sums[cell]`` (see :func:`tasks.metrics.auc.auc_from_sums`); returns the
    rows."""
    k = 0
    for c in range(n_cells):
        k = _write_bins(
            hist[c, :, 0], hist[c, :, 1], hist[c, :, 2], c, False, k, cell, bin_, n_out, pos_out, p_out, sums[c]
        )
    return k


@numba.njit(nogil=True, cache=True)
def bin_codes(x, edges, out):  # pragma: no cover - compiled
    """Each value's bin among increasing ``edges`` (0: below the first; len(edges): at or above the last) and
    ``len(edges) + 1`` for NaN; as ``numpy.searchsorted(edges, x, side="right")``, without its branchy search."""
    m = edges.shape[0]
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            out[i] = m + 1
            continue
        k = 0
        for j in range(m):
            k += 1 if v >= edges[j] else 0
        out[i] = k


@numba.njit(nogil=True, cache=True)
def number_cells(codes, bits, table, ids, new_keys, first_id):  # pragma: no cover - compiled
    """Each row's cell number: its codes (``codes[j]``: column j's) packed into a key of ``bits[j]`` bits each,
    looked up in ``table``; a key not there gets the next number from ``first_id`` on, in the order of its first
    row, and is written to ``new_keys``. Returns how many keys were new."""
    n_new = 0
    for i in range(ids.shape[0]):
        key = 0
        for j in range(codes.shape[0]):
            key = (key << bits[j]) | codes[j, i]
        v = table[key]
        if v < 0:
            v = first_id + n_new
            table[key] = v
            new_keys[n_new] = key
            n_new += 1
        ids[i] = v
    return n_new


@numba.njit(nogil=True, cache=True)
def is_sorted(x):  # pragma: no cover - compiled
    """Whether ``x`` never decreases."""
    for i in range(1, x.shape[0]):  # noqa: SIM110 - numba compiles a loop, not all() of a generator
        if x[i] < x[i - 1]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def add_rows_by_group(rows, group, out):  # pragma: no cover - compiled
    """``out[group[c]] += rows[c]`` for every row c whose group is not negative, in row order."""
    for c in range(rows.shape[0]):
        g = group[c]
        if g >= 0:
            for b in range(rows.shape[1]):
                out[g, b] += rows[c, b]


@numba.njit(nogil=True, cache=True)
def group_histogram_rows(
    cell_start, group_ptr, group_cells, bins, n, pos, sp, g_out, bin_out, n_out, pos_out, p_out, sums
):  # pragma: no cover - compiled
    """Each group's histogram as rows ``(group, bin, n, n_pos, sum_p)`` in group, then bin order, and its AUC sums
    ``(P, N, A, T)`` in ``sums[group]``, from its cells' histogram rows (cell c's rows: ``cell_start[c]`` to
    ``cell_start[c + 1]``; group g's cells: ``group_cells[group_ptr[g]:group_ptr[g + 1]]``, in record order).
    A group's cells are added in one dense row that stays in cache (a bin's rows in cell order): memory and
    time follow the rows, not groups × bins. Returns the rows written."""
    hn = np.zeros(HIST_BINS)
    hp = np.zeros(HIST_BINS)
    hs = np.zeros(HIST_BINS)
    k = 0
    for g in range(group_ptr.shape[0] - 1):
        rows = 0
        for q in range(group_ptr[g], group_ptr[g + 1]):
            c = group_cells[q]
            for j in range(cell_start[c], cell_start[c + 1]):
                hn[bins[j]] += n[j]
                hp[bins[j]] += pos[j]
                hs[bins[j]] += sp[j]
            rows += cell_start[c + 1] - cell_start[c]
        if rows > 0:
            k = _write_bins(hn, hp, hs, g, True, k, g_out, bin_out, n_out, pos_out, p_out, sums[g])
    return k
