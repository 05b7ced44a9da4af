"""Gaps between slices of a slicing table, as Fairlearn's ``MetricFrame`` defines them.

For a figure with value v_s on each slice s and o over all rows:

- ``difference``            = max_s v_s − min_s v_s            (``MetricFrame.difference(method="between_groups")``)
- ``difference_to_overall`` = max_s |v_s − o|                  (``difference(method="to_overall")``)
- ``ratio``                 = min_s v_s / max_s v_s            (``ratio(method="between_groups")``)
- ``ratio_to_overall``      = min_s r(v_s / o), r(x) = 1/x if x > 1 else x   (``ratio(method="to_overall")``)

Slices whose value is null (or NaN: ROC AUC of a single-class slice) are left out, as pandas'
``skipna`` leaves NaN groups out of Fairlearn's min and max; so are slices with fewer than
``min_rows`` rows. A gap over no slice at all is null. Divisions follow IEEE as pandas does:
x / 0 is ±inf, 0 / 0 is NaN (left out of the min, or null when nothing else is left).

Fairlearn's ratios are "forced below 1" only for positive figures. ``ratio`` is not flipped at
all: for a figure that can be negative (``d2_log_loss``) min/max may be negative, or above 1 when
both are negative. ``r`` flips only ratios above 1, so a negative v_s / o stays as it is (−0.5
stays −0.5, where min(x, 1/x) would give −2). Both are reproduced here as Fairlearn computes them.

``worst_slice`` / ``best_slice`` follow :func:`tasks.metrics.schema.better_direction` (null for a
figure without one, e.g. ``positive_rate``); among equal values the first slice in table order is
the minimum and the last is the maximum.

A figure with a standard error column (``bce``: ``bce_se``) also gets a 95% normal interval for
its ``difference``, the maximum slice minus the minimum one (for BCE, worst − best):

    difference ± Z95 · sqrt(se_max² + se_min²)

treating the two slices as independent samples (their rows are disjoint). The two slices were
picked *because* they are the extremes, so the interval describes those two slices; it is not a
test that the slices differ at all (with many slices the extremes differ by chance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from tasks.errors import InputError
from tasks.metrics.schema import Z95, better_direction, interval_of

#: The columns of :func:`slicing_gaps`' frame, one row per figure
GAP_SCHEMA: dict[str, type[pl.DataType]] = {
    "figure": pl.String,
    "worst_slice": pl.String,
    "worst_value": pl.Float64,
    "best_slice": pl.String,
    "best_value": pl.Float64,
    "difference": pl.Float64,
    "difference_to_overall": pl.Float64,
    "ratio": pl.Float64,
    "ratio_to_overall": pl.Float64,
    "difference_se": pl.Float64,
    "difference_low": pl.Float64,
    "difference_high": pl.Float64,
}


def slicing_gaps(
    table: pl.DataFrame, overall: Mapping[str, object], figures: Sequence[str], min_rows: int = 0
) -> pl.DataFrame:
    """One row per figure of ``figures`` in ``table``: worst and best slice, Fairlearn's differences and ratios."""
    missing = [c for c in ("slice", "n_rows") if c not in table.columns]
    if missing:
        raise InputError(
            f"slicing table without column(s) {', '.join(missing)} (it has {', '.join(table.columns)}); "
            "pass the table of one row per slice, with its 'slice' label and 'n_rows'."
        )
    if min_rows < 0:
        raise InputError(f"min_rows {min_rows}: expected a count of rows >= 0 (0 keeps every slice).")
    kept = table.filter(pl.col("n_rows") >= min_rows)
    labels = kept.get_column("slice").cast(pl.String).to_list()
    rows = [_figure_gaps(kept, labels, name, overall.get(name)) for name in figures if name in kept.columns]
    return pl.DataFrame(rows, schema=GAP_SCHEMA)


def _figure_gaps(kept: pl.DataFrame, labels: list[str], name: str, overall: object) -> dict[str, object]:
    """The gaps of one figure over the kept slices (every value null where no slice has a value)."""
    values = _column_values(kept, name)
    present = np.flatnonzero(~np.isnan(values))
    row: dict[str, object] = dict.fromkeys(GAP_SCHEMA)
    row["figure"] = name
    if present.size == 0:
        return row
    v = values[present]
    order = np.argsort(v, kind="stable")
    low, high = present[order[0]], present[order[-1]]
    row["difference"] = _nan_to_none(values[high] - values[low])
    row["ratio"] = _nan_to_none(_divide(values[low], values[high]))
    row.update(_gaps_to_overall(v, _as_float(overall)))
    direction = better_direction(name)
    if direction is not None:
        worst, best = (high, low) if direction == "lower" else (low, high)
        row.update(worst_slice=labels[worst], worst_value=float(values[worst]))
        row.update(best_slice=labels[best], best_value=float(values[best]))
    if interval_of(name) is not None and f"{name}_se" in kept.columns and present.size > 1:
        row.update(_difference_interval(values[high] - values[low], _column_values(kept, f"{name}_se")[[high, low]]))
    return row


def _gaps_to_overall(v: np.ndarray, overall: float) -> dict[str, float | None]:
    """``difference_to_overall`` and ``ratio_to_overall`` of the non-null slice values ``v``."""
    if math.isnan(overall):
        return {"difference_to_overall": None, "ratio_to_overall": None}
    ratios = _divide(v, overall)
    # Fairlearn's ratio_sub_one: only a ratio above 1 is turned over (a negative one is left as it is)
    with np.errstate(divide="ignore"):
        ratios = np.where(ratios > 1, 1.0 / ratios, ratios)
    ratios = ratios[~np.isnan(ratios)]
    return {
        "difference_to_overall": _nan_to_none(np.max(np.abs(v - overall))),
        "ratio_to_overall": _nan_to_none(np.min(ratios)) if ratios.size else None,
    }


def _difference_interval(difference: float, ses: np.ndarray) -> dict[str, float | None]:
    """The 95% normal interval of a difference between two independent slices with standard errors ``ses``."""
    se = math.sqrt(float(ses[0]) ** 2 + float(ses[1]) ** 2)
    if math.isnan(se):  # a slice of one row has no standard error
        return {}
    return {"difference_se": se, "difference_low": difference - Z95 * se, "difference_high": difference + Z95 * se}


def _column_values(frame: pl.DataFrame, name: str) -> np.ndarray:
    """A column as float64, null as NaN."""
    return frame.get_column(name).cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _divide(a: float | np.ndarray, b: float | np.ndarray) -> np.ndarray:
    """a / b as pandas divides: ±inf for x / 0, NaN for 0 / 0, without a warning."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(np.float64(a), np.float64(b))


def _as_float(value: object) -> float:
    """An overall figure as a float (None, or a figure missing from ``overall``, as NaN)."""
    return float("nan") if value is None else float(value)


def _nan_to_none(value: float | np.floating) -> float | None:
    """NaN (no value) as None; ±inf is kept, as Fairlearn keeps it."""
    return None if math.isnan(value) else float(value)
