"""The compiled walk of :mod:`tasks.metrics.decisions`: each group's decision figures from its histogram rows.

Imported only when a summary runs (numba loads its compiled code from the on-disk cache).
"""

from __future__ import annotations

import numba
import numpy as np

from tasks.metrics.auc import HIST_BINS


@numba.njit(nogil=True, cache=True, error_model="numpy")
def decide_sorted(group, bins, n, n_pos, sum_p, edge, at_fpr, cost_fp, cost_fn, n_mass, out):  # pragma: no cover
    """Decision figures of each group from its histogram rows, each group's rows one run in bin order (else it
    returns False, having written part of ``out``, and the caller sorts them by (group, bin)): ``out[g]`` =
    (tp, pp, P, W, best tp at FPR ≤ at_fpr, cost at ``edge``, lowest cost, its edge, Σ over ``n_mass`` equal-mass
    bins of |Σ w·p − Σ w·y|). Walks each group's bins from the top, twice (its totals, then the figures); a bin's
    repeated rows are added first, in their order, so every tail is the same sum, in the same order, as a
    cumulative sum over the dense histogram. A histogram bin goes to equal-mass bin ⌊n_mass·C/W⌋, C the weight
    of the rows in lower bins: each holds about W/n_mass, and a histogram bin is never split."""
    i, rows = 0, group.shape[0]
    seen = np.zeros(out.shape[0], np.bool_)
    while i < rows:
        g, end = group[i], i
        while end < rows and group[end] == g:
            if end > i and bins[end] < bins[end - 1]:
                return False  # bins out of order: the caller sorts the rows
            end += 1
        if seen[g]:
            return False  # a group in two runs: the caller sorts the rows
        seen[g] = True
        for walk in range(2):
            tail_n, tail_pos, tp, pp = 0.0, 0.0, 0.0, 0.0
            P, W = out[g, 2], out[g, 3]
            best_tp, best_cost, best_edge = 0.0, cost_fn * P / W if W > 0 else 0.0, float(HIST_BINS)
            mass, mass_p, mass_y, gaps = -1, 0.0, 0.0, 0.0
            j = end
            while j > i:
                b, first = bins[j - 1], j - 1
                while first > i and bins[first - 1] == b:
                    first -= 1
                bin_n, bin_pos, bin_p = 0.0, 0.0, 0.0
                for r in range(first, j):  # forward, as bincount adds a bin's rows
                    bin_n += n[r]
                    bin_pos += n_pos[r]
                    bin_p += sum_p[r]
                j = first
                tail_n += bin_n
                tail_pos += bin_pos
                if b >= edge:
                    tp, pp = tail_pos, tail_n
                if walk == 1:
                    if W - P > 0 and (tail_n - tail_pos) / (W - P) <= at_fpr and tail_pos > best_tp:
                        best_tp = tail_pos
                    cost = (cost_fp * (tail_n - tail_pos) + cost_fn * (P - tail_pos)) / W
                    if cost < best_cost:  # strictly: the highest edge of the lowest cost
                        best_cost, best_edge = cost, float(b)
                    k = min(int(n_mass * (W - tail_n) / W), n_mass - 1) if W > 0 else 0  # W − tail: weight below
                    if k != mass:
                        gaps += abs(mass_p - mass_y)
                        mass, mass_p, mass_y = k, 0.0, 0.0
                    mass_p += bin_p
                    mass_y += bin_pos
            if walk == 0:
                out[g, 0], out[g, 1], out[g, 2], out[g, 3] = tp, pp, tail_pos, tail_n
        out[g, 4], out[g, 6], out[g, 7], out[g, 8] = best_tp, best_cost, best_edge, gaps + abs(mass_p - mass_y)
        out[g, 5] = (cost_fp * (out[g, 1] - out[g, 0]) + cost_fn * (out[g, 2] - out[g, 0])) / out[g, 3]
        i = end
    return True
