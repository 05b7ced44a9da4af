"""Few false alarms among many slices: one-sided tests per slice, Benjamini–Hochberg across them.

A per-slice gate that fails a slice when its 95% interval lies beyond the bound is a one-sided
2.5% test: with 300 healthy slices it fails about 7 of them by chance on every run. Controlling the
false discovery rate instead keeps the expected share of false alarms among the failed slices at
or below ``level``, whatever the number of slices:

- per slice, the one-sided normal test of H0 "the slice meets the bound" against "it is beyond",
  with z = (value − bound) / se:

  - ``op "<="`` (e.g. ``bce <= b``): p = 1 − Φ(z) = Φ(−z)
  - ``op ">="`` (e.g. ``roc_auc >= b``): p = Φ(z)

  computed as ``ndtr(±z)`` (exact in both tails: ``1 − ndtr(z)`` would round to 0 from z ≈ 8.3);
  a slice without a usable standard error (NaN, infinite, 0 or negative) has no p-value and is not tested;
- across the m tested slices, the Benjamini–Hochberg step-up procedure: sort the p-values,
  p₍₁₎ ≤ … ≤ p₍ₘ₎, find the largest k with p₍ₖ₎ ≤ k·level/m, and fail the k slices with the
  smallest p-values (none when there is no such k). For independent (or positively dependent)
  tests this bounds the expected false discovery proportion by m₀/m · level ≤ level.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from tasks.errors import InputError

_OPS = ("<=", ">=")


def one_sided_p_values(value: ArrayLike, se: ArrayLike, bound: ArrayLike, op: str) -> np.ndarray:
    """Per slice, the p-value of "the slice meets ``value op bound``" against "it is beyond" (NaN: not tested).

    ``bound`` is one number, or one per slice.
    """
    if op not in _OPS:
        raise InputError(f"comparison {op!r}: expected one of {', '.join(_OPS)}; spell the bound as '<=' or '>='.")
    value = np.asarray(value, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    bound = np.asarray(bound, dtype=np.float64)
    _check_same_shape(value=value, se=se, **({"bound": bound} if bound.ndim else {}))
    testable = np.isfinite(se) & (se > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (value - bound) / np.where(testable, se, np.nan)
    from scipy.special import ndtr  # scipy loads when a per-slice gate is judged, not when a flow imports this

    # the tail beyond the bound, taken directly (not 1 − Φ) so a far-off slice keeps a tiny, exact p
    return ndtr(-z) if op == "<=" else ndtr(z)


def benjamini_hochberg(p: ArrayLike, level: float) -> np.ndarray:
    """Which p-values the Benjamini–Hochberg step-up procedure rejects at false discovery rate ``level``."""
    _check_level(level)
    p = np.asarray(p, dtype=np.float64)
    tested = ~np.isnan(p)
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        bad = p[tested][(p[tested] < 0) | (p[tested] > 1)][0]
        raise InputError(f"p-value {bad!r} is outside [0, 1]; pass p-values (NaN for a slice that is not tested).")
    rejected = np.zeros(p.shape, dtype=bool)
    index = np.flatnonzero(tested)
    m = index.size
    if m == 0:
        return rejected
    order = np.argsort(p[index], kind="stable")
    ranked = p[index][order]
    # step-up: the largest k whose p₍ₖ₎ is within k·level/m; every smaller p-value goes with it
    within = np.flatnonzero(ranked <= np.arange(1, m + 1) * level / m)
    if within.size:
        rejected[index[order[: within[-1] + 1]]] = True
    return rejected


def fdr_failures(
    values: ArrayLike, ses: ArrayLike, bound: ArrayLike, op: str, level: float, judged_mask: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slices that fail ``value op bound`` under Benjamini–Hochberg at ``level``, their p-values and which were
    tested.

    Slices outside ``judged_mask`` (too small to judge) get no p-value, do not count in m, and are never failed.
    """
    _check_level(level)
    p = one_sided_p_values(values, ses, bound, op)
    judged = np.asarray(judged_mask, dtype=bool)
    _check_same_shape(values=p, judged_mask=judged)
    p = np.where(judged, p, np.nan)
    return benjamini_hochberg(p, level), p, ~np.isnan(p)


def _check_level(level: float) -> None:
    try:
        number = float(level)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and 0 < number < 1):
        raise InputError(
            f"false discovery rate level {level!r}: expected a number strictly between 0 and 1, e.g. 0.05."
        )


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        found = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise InputError(f"per-slice arrays of different shapes ({found}); pass one entry per slice in each.")
