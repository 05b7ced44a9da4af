"""The per-row loop of the streaming reduce, compiled with numba: one pass, no temporary per figure.

The transcendental parts (``exp``, ``log1p``, ``log``) are computed by numpy on the whole batch
where they are vectorised; this loop then reads each row once and adds its loss, its figures and
its histogram bin to the statistics of its partition. Imported only when a reduce runs (numba
loads its compiled code from the on-disk cache, next to this file).

The loop's inputs, per row: ``s`` is the score (a logit when ``logit``, else a probability of class 1)
and ``y`` the label. For a logit, ``a = exp(−|s|)`` and ``b = log1p(a)``, so the loss is
``max(s, 0) − s·y + b`` and σ(s) is ``1/(1+a)`` or ``a/(1+a)``; for a probability clipped to
[eps, 1 − eps], ``a`` and ``b`` are the losses ``−log p`` and ``−log1p(−p)`` of a positive and of a
negative row.
"""

from __future__ import annotations

import numba
import numpy as np

from tasks.metrics.auc import HIST_BINS
from tasks.metrics.calibration import CAL_BINS
from tasks.metrics.loss import PROBA_EPS
from tasks.metrics.schema import KERNEL_COLUMNS

#: Columns of the per-partition statistics array (all float64; counts are exact below 2**53): the
#: metric schema's sums, then its bad-input counters
STATS = KERNEL_COLUMNS
# each sum's column, by name: numba reads these module constants as compile-time constants
_N_ROWS, _N_POS, _N_NEG = (STATS.index(c) for c in ("n_rows", "n_pos", "n_neg"))
_SUM_LOSS, _SUM_LOSS_SQ, _SUM_LOSS_POS = (STATS.index(c) for c in ("sum_loss", "sum_loss_sq", "sum_loss_pos"))
_N_CORRECT, _SUM_BRIER, _SUM_P, _N_SATURATED = (
    STATS.index(c) for c in ("sum_correct", "sum_brier", "sum_p", "n_saturated")
)
_SUM_W, _SUM_W_SQ, _SUM_W_POS = (STATS.index(c) for c in ("sum_w", "sum_w_sq", "sum_w_pos"))
_SUM_ENTROPY, _SUM_EXCESS_SQ = (STATS.index(c) for c in ("sum_entropy", "sum_excess_sq"))
# the calibration bins' Σ w, Σ w·p, Σ w·y: CAL_BINS consecutive columns each
_CAL_W, _CAL_P, _CAL_Y = (STATS.index(f"cal_{k}_0") for k in ("w", "p", "y"))
_BAD_SCORE, _BAD_LABEL = (STATS.index(c) for c in ("bad_score", "bad_label"))
# rows whose label has not arrived (tasks.metrics.late_labels)
_N_UNL, _SUM_W_UNL, _SUM_H_UNL, _SUM_V_UNL = (
    STATS.index(c) for c in ("n_unlabelled", "sum_w_unlabelled", "sum_entropy_unlabelled", "sum_var_unlabelled")
)
#: −log(eps): beyond this |logit| a probability is within machine epsilon of 0 or 1
SATURATED_LOGIT = 36.04365338911715


# error_model="numpy": x/0 gives inf like numpy instead of a Python exception check per row (which
# stops vectorisation); reassociation lets LLVM vectorise the sums (several partial sums: if
# anything more accurate than one running sum); no other fast-math flag, so NaN and inf keep
# their meaning
_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
_SUMS_FLAGS = {"reassoc", "contract"}


@numba.njit(inline="always", **_JIT)
def row_terms(si, ai, bi, yi, logit):  # pragma: no cover - compiled
    """One row's ``(loss, p, excess, correct, saturated, bad score)`` from its score, its terms and its label (see
    the module's docstring): the one per-row loss of both compiled loops (this module's and the sliced one's).

    ``excess`` = loss − H(p), H(p) = −p·ln p − (1 − p)·ln(1 − p) the loss the model expects of the row; it is
    (p − y)·logit(p) exactly (logit(p) = s, or ln p − ln(1 − p) = b − a from the clipped terms), with no
    cancellation between two large logs, and its mean is 0 when y is drawn with probability p."""
    if logit:
        loss = (si if si > 0.0 else 0.0) - si * yi + bi
        q = 1.0 / (1.0 + ai)
        p = q if si >= 0.0 else ai * q
        excess = (p - yi) * si
        correct = 1.0 if (si > 0.0) == (yi == 1.0) else 0.0
        sat = 1.0 if abs(si) >= SATURATED_LOGIT else 0.0
        bad = 0.0 if abs(si) < np.inf else 1.0
    else:
        loss = ai if yi == 1.0 else bi
        p = si
        excess = (p - yi) * (bi - ai)
        correct = 1.0 if (si > 0.5) == (yi == 1.0) else 0.0
        sat = 1.0 if (si <= PROBA_EPS) | (si >= 1.0 - PROBA_EPS) else 0.0
        bad = 0.0 if (si >= 0.0) & (si <= 1.0) else 1.0
    return loss, p, excess, correct, sat, bad


@numba.njit(inline="always", **_JIT)
def unlabelled_terms(si, ai, bi, logit):  # pragma: no cover - compiled
    """A row whose label has not arrived: ``(H(p), p(1 − p)·logit(p)², bad score)``, the loss the model expects of
    it and that loss's variance when its label is drawn with probability p (the losses of both labels, from
    :func:`row_terms`: their difference is −logit(p))."""
    loss1, p, _, _, _, bad = row_terms(si, ai, bi, 1.0, logit)
    loss0 = row_terms(si, ai, bi, 0.0, logit)[0]
    d = loss1 - loss0
    return p * loss1 + (1.0 - p) * loss0, p * (1.0 - p) * d * d, bad


@numba.njit(**_JIT)
def sum_unlabelled(s, a, b, parts, logit, acc):  # pragma: no cover - compiled
    """Add rows without a label (each weighing 1) to their partition's row of ``acc`` (columns :data:`STATS`): the
    unlabelled count, Σ w, Σ H(p), Σ p(1 − p)·logit(p)², and bad scores. Returns the bad scores."""
    bad_scores = 0.0
    for i in range(s.shape[0]):
        h, v, bad = unlabelled_terms(s[i], a[i], b[i], logit)
        row = acc[parts[i]]
        row[_N_UNL] += 1.0
        row[_SUM_W_UNL] += 1.0
        row[_SUM_H_UNL] += h
        row[_SUM_V_UNL] += v
        row[_BAD_SCORE] += bad
        bad_scores += bad
    return bad_scores


@numba.njit(fastmath=_SUMS_FLAGS, **_JIT)
def _run_sums(s, a, b, y, lo, hi, logit, acc, ps, figures):  # pragma: no cover - compiled
    # branch-free figures of rows lo..hi of one partition, added to acc (columns of STATS, by name); each
    # row's probability goes to ps, for the histogram (a scatter, which cannot be vectorised). Without
    # ``figures`` (only the bench's "without them", to time what they cost) the calibration sums stay 0:
    # the test is loop-invariant, so the compiler makes one loop of each kind
    n_pos = 0.0
    n_neg = 0.0
    s_loss = 0.0
    s_loss2 = 0.0
    s_loss_pos = 0.0
    n_correct = 0.0
    s_brier = 0.0
    s_p = 0.0
    s_ent = 0.0
    s_ex2 = 0.0
    n_sat = 0.0
    bad_score = 0.0
    for i in range(lo, hi):
        yi = y[i]
        fpos = 1.0 if yi == 1.0 else 0.0
        loss, p, excess, correct, sat, bad = row_terms(s[i], a[i], b[i], yi, logit)
        if figures:
            s_ent += loss - excess
            s_ex2 += excess * excess
        n_correct += correct
        n_sat += sat
        bad_score += bad
        d = p - yi
        n_pos += fpos
        n_neg += 1.0 if yi == 0.0 else 0.0
        s_loss += loss
        s_loss2 += loss * loss
        s_loss_pos += loss * fpos
        s_brier += d * d
        s_p += p
        ps[i] = p
    acc[_N_ROWS] += hi - lo
    acc[_N_POS] += n_pos
    acc[_N_NEG] += n_neg
    # every row weighs 1 here (weights take tasks.metrics.cell_kernel): the weighted sums are the counts
    acc[_SUM_W] += hi - lo
    acc[_SUM_W_SQ] += hi - lo
    acc[_SUM_W_POS] += n_pos
    acc[_SUM_LOSS] += s_loss
    acc[_SUM_LOSS_SQ] += s_loss2
    acc[_SUM_LOSS_POS] += s_loss_pos
    acc[_N_CORRECT] += n_correct
    acc[_SUM_BRIER] += s_brier
    acc[_SUM_P] += s_p
    acc[_SUM_ENTROPY] += s_ent
    acc[_SUM_EXCESS_SQ] += s_ex2
    acc[_N_SATURATED] += n_sat
    acc[_BAD_SCORE] += bad_score
    acc[_BAD_LABEL] += (hi - lo) - n_pos - n_neg
    return bad_score + ((hi - lo) - n_pos - n_neg)


@numba.njit(**_JIT)
def _flush_histogram(
    part, hist_n, hist_pos, hist_p, touched, n_touched, out, n_out, flushes, n_flush
):  # pragma: no cover - compiled
    # emit the open partition's touched bins, in bin order, as (partition, bin, n, n_pos, Σp) rows of
    # out, and its AUC sums (partition, P, N, Σ pos·neg_below, Σ pos·neg) as a row of flushes.
    # Bin order: sort the few touched bins, or walk all bins when many are touched (a sort of
    # thousands would cost more than the rows that touched them)
    if n_touched * 16 > HIST_BINS:
        bins = np.flatnonzero(hist_n).astype(np.int32)
    else:
        bins = np.sort(touched[:n_touched])
    n_p = 0.0
    n_n = 0.0
    above = 0.0
    ties = 0.0
    for t in range(n_touched):
        b = bins[t]
        pos = float(hist_pos[b])
        neg = float(hist_n[b]) - pos
        above += pos * n_n
        ties += pos * neg
        n_p += pos
        n_n += neg
        o = out[n_out]
        o[0], o[1], o[2], o[3], o[4] = part, b, hist_n[b], hist_pos[b], hist_p[b]
        n_out += 1
        hist_n[b] = 0
        hist_pos[b] = 0
        hist_p[b] = 0.0
    f = flushes[n_flush]  # n_touched: the rows of out this flush wrote
    f[0], f[1], f[2], f[3], f[4], f[5] = part, n_p, n_n, above, ties, n_touched
    return n_out


@numba.njit(**_JIT)
def _switch_partition(
    part, cur, hist_n, hist_pos, hist_p, touched, n_touched, out, n_out, flushes, n_flush
):  # pragma: no cover - compiled
    # rows of another partition come: the open one's histogram is written first (none is open when
    # cur < 0); returns (bins touched, rows written to out, rows written to flushes)
    if part != cur and cur >= 0:
        n_out = _flush_histogram(cur, hist_n, hist_pos, hist_p, touched, n_touched, out, n_out, flushes, n_flush)
        return 0, n_out, n_flush + 1
    return n_touched, n_out, n_flush


@numba.njit(**_JIT)
def _add_to_bin(bin_, n, n_pos, sum_p, hist_n, hist_pos, hist_p, touched, n_touched):  # pragma: no cover
    # count n rows (n_pos of them positive, their probabilities adding to sum_p) in a bin of the open
    # histogram; returns the bins touched
    if hist_n[bin_] == 0:
        touched[n_touched] = bin_
        n_touched += 1
    hist_n[bin_] += n
    hist_pos[bin_] += n_pos
    hist_p[bin_] += sum_p
    return n_touched


@numba.njit(**_JIT)
def merge_flushes(bins, flushes, out, out_flushes):  # pragma: no cover - compiled
    """One histogram per partition from flushes that may share one (threads that each saw part of it).

    ``bins`` and ``flushes`` are as :func:`sum_segments` writes them (flush f wrote the next
    ``flushes[f, 5]`` rows of ``bins``). Counts add up exactly, and each partition's AUC sums are
    computed once from its merged bins, as for a partition that one flush wrote whole: the same
    figures whatever the number of threads. Returns the rows written to ``out`` and ``out_flushes``.
    """
    n_f = flushes.shape[0]
    starts = np.zeros(n_f + 1, np.int64)
    for f in range(n_f):
        starts[f + 1] = starts[f] + int(flushes[f, 5])
    order = np.argsort(flushes[:, 0], kind="mergesort")
    hist_n = np.zeros(HIST_BINS, np.int64)
    hist_pos = np.zeros(HIST_BINS, np.int64)
    hist_p = np.zeros(HIST_BINS)
    touched = np.zeros(HIST_BINS, np.int32)
    n_touched, n_out, n_flush, cur = 0, 0, 0, -1
    for j in range(n_f):
        f = order[j]
        part = int(flushes[f, 0])
        n_touched, n_out, n_flush = _switch_partition(
            part, cur, hist_n, hist_pos, hist_p, touched, n_touched, out, n_out, out_flushes, n_flush
        )
        cur = part
        for r in range(starts[f], starts[f + 1]):
            n_touched = _add_to_bin(
                int(bins[r, 1]),
                int(bins[r, 2]),
                int(bins[r, 3]),
                bins[r, 4],
                hist_n,
                hist_pos,
                hist_p,
                touched,
                n_touched,
            )
    _, n_out, n_flush = _switch_partition(
        -1, cur, hist_n, hist_pos, hist_p, touched, n_touched, out, n_out, out_flushes, n_flush
    )
    return n_out, n_flush


#: Rows of a block. A run of one partition is cut where a block ends (counted from the batch's
#: first row), each piece is summed on its own and the pieces are added in row order: the sums do
#: not depend on how many threads share a batch, or which thread summed which piece.
BLOCK_ROWS = 16_384


@numba.njit(**_JIT)
def plan_segments(run_ends, run_ids, seg_lo, seg_hi, seg_part):  # pragma: no cover - compiled
    """Cut a batch's runs where blocks of :data:`BLOCK_ROWS` end; returns the number of pieces."""
    n_seg = 0
    lo = 0
    for r in range(run_ends.shape[0]):
        hi = run_ends[r]
        while lo < hi:
            cut = min(hi, (lo // BLOCK_ROWS + 1) * BLOCK_ROWS)
            seg_lo[n_seg] = lo
            seg_hi[n_seg] = cut
            seg_part[n_seg] = run_ids[r]
            n_seg += 1
            lo = cut
    return n_seg


@numba.njit(**_JIT)
def sum_segments(
    s,
    a,
    b,
    y,
    logit,
    seg_lo,
    seg_hi,
    seg_part,
    first,
    last,
    seg_stats,
    hist_n,
    hist_pos,
    hist_p,
    touched,
    state,
    out,
    flushes,
    ps,
    figures=True,
):  # pragma: no cover - compiled
    """Sum pieces ``first..last`` of a batch, each into its own row of ``seg_stats``, and bin their rows.

    ``s``, ``a``, ``b``, ``y`` and ``logit``: as the module's docstring says. Piece g is rows
    ``seg_lo[g]..seg_hi[g]`` (exclusive) of partition ``seg_part[g]``; its sums (columns :data:`STATS`) go
    to ``seg_stats[g]``, for :func:`merge_segments`. Rows with a non-finite or out-of-range score, or a
    label other than 0/1, are counted in ``bad_score``/``bad_label`` (their other figures are meaningless:
    the caller raises). The histogram of this caller's open partition (``state[0]``, with ``state[1]``
    bins touched) stays open across calls and is written to ``out`` as ``(partition, bin, n, n_pos, Σp)`` rows
    when the partition changes, with a row of ``flushes``: ``(partition, P, N, A, T)``, from which
    AUC = (A + T/2)/(P·N) within ± T/(2·P·N) when the partition was written once. ``ps`` is scratch
    space of the batch's length. Returns the number of rows written to ``out`` and to ``flushes``.
    Each thread that shares a batch passes its own histogram, state and outputs.
    """
    cur = state[0]
    n_touched = state[1]
    n_out = 0
    n_flush = 0
    for g in range(first, last):
        k = seg_part[g]
        lo = seg_lo[g]
        hi = seg_hi[g]
        n_touched, n_out, n_flush = _switch_partition(
            k, cur, hist_n, hist_pos, hist_p, touched, n_touched, out, n_out, flushes, n_flush
        )
        cur = k
        seg_stats[g, :] = 0.0
        _run_sums(s, a, b, y, lo, hi, logit, seg_stats[g], ps, figures)
        n_touched = _bin_rows(ps, y, lo, hi, seg_stats[g], hist_n, hist_pos, hist_p, touched, n_touched, figures)
    state[0] = cur
    state[1] = n_touched
    return n_out, n_flush


@numba.njit(inline="always", **_JIT)
def _bin_rows(ps, y, lo, hi, row, hist_n, hist_pos, hist_p, touched, n_touched, figures):  # pragma: no cover
    # rows lo..hi to their calibration bin (row's Σ w, Σ w·p, Σ w·y of it; with ``figures``) and their score
    # histogram bin (with ``figures``, its Σ p too: the equal-mass calibration bins are formed from it); returns
    # the histogram's bins touched. A bad score (NaN or outside [0, 1]) goes to bin 0:
    # the caller raises
    for i in range(lo, hi):
        p = ps[i]
        valid = (p >= 0.0) & (p <= 1.0)
        if figures:
            cal = min(int(p * CAL_BINS), CAL_BINS - 1) if valid else 0
            row[_CAL_W + cal] += 1.0
            row[_CAL_P + cal] += p
            row[_CAL_Y + cal] += y[i]
        bin_ = min(int(p * HIST_BINS), HIST_BINS - 1) if valid else 0
        if hist_n[bin_] == 0:  # _add_to_bin, written out: this loop runs per row
            touched[n_touched] = bin_
            n_touched += 1
        hist_n[bin_] += 1
        hist_pos[bin_] += 1 if y[i] == 1.0 else 0
        if figures:
            hist_p[bin_] += p
    return n_touched


@numba.njit(**_JIT)
def merge_segments(seg_stats, seg_part, n_seg, stats):  # pragma: no cover - compiled
    """Add each piece's sums to its partition's row of ``stats``, in row order; returns the bad rows."""
    bad = 0.0
    for g in range(n_seg):
        k = seg_part[g]
        for c in range(seg_stats.shape[1]):
            stats[k, c] += seg_stats[g, c]
        bad += seg_stats[g, _BAD_SCORE] + seg_stats[g, _BAD_LABEL]
    return bad


@numba.njit(**_JIT)
def close_histogram(hist_n, hist_pos, hist_p, touched, state, out, flushes):  # pragma: no cover - compiled
    """Write the open partition's histogram (at the end of a chunk); returns the rows written."""
    _, n_out, n_flush = _switch_partition(-1, state[0], hist_n, hist_pos, hist_p, touched, state[1], out, 0, flushes, 0)
    state[0] = -1
    state[1] = 0
    return n_out, n_flush


def new_state() -> np.ndarray:
    """The loop's state between batches: open partition (none), bins touched."""
    return np.array([-1, 0], np.int64)
