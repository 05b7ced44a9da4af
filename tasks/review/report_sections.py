"""The report's calibration and decisions sections: each a heading, its figures in words, its plot, and a table per
partition and per slice of the figures it is about (the same values as the run's tables, fewer columns)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from tasks.metrics import schema as metrics
from tasks.metrics.calibration import ECE_EQUAL_MASS
from tasks.metrics.decisions import COSTS, COUNTS, RATES, further_columns
from tasks.metrics.rollup import SLICE_LABEL
from tasks.review.summary import calibration_line, decisions_line

#: the calibration table's figures, in reading order (``confidence`` says what the gap's interval says)
CALIBRATION_COLUMNS = (
    "n_rows",
    "bce",
    "expected_bce",
    "calibration_gap",
    "calibration_gap_low",
    "calibration_gap_high",
    "confidence",
    "ece",
    ECE_EQUAL_MASS,
)
#: the decisions table's figures (the costs' only where costs were declared)
DECISION_COLUMNS = ("n_rows", *COUNTS, *RATES, *COSTS)


@dataclass(frozen=True)
class ReportSection:
    """A part of the report: its heading, paragraphs, the figures drawn in it and its tables by caption."""

    heading: str
    paragraphs: tuple[str, ...]
    figures: tuple[str, ...]
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)


def with_confidence(table: pl.DataFrame) -> pl.DataFrame:
    """``table`` with ``confidence``: over-confident where the gap's 95% interval is above 0, under-confident where
    below, within chance where it covers 0 (the gap tests confidence, not bias); null where there is no interval."""
    low, high = pl.col("calibration_gap_low"), pl.col("calibration_gap_high")
    words = (
        pl.when(low > 0)
        .then(pl.lit("over-confident"))
        .when(high < 0)
        .then(pl.lit("under-confident"))
        .when(low.is_not_null() & high.is_not_null())
        .then(pl.lit("within chance"))
    )
    return table.with_columns(words.alias("confidence"))


def _figure_table(table: pl.DataFrame, label: str, figures: tuple[str, ...]) -> pl.DataFrame:
    """The label column and those of ``figures`` that ``table`` has and are not all null, rows with labels only,
    each figure headed by its name in the metric schema (``ECE (equal mass)``, not ``ece_equal_mass``)."""
    keep = [c for c in figures if c in table.columns and table.get_column(c).null_count() < table.height]
    shown = {f.name: f.display for f in (*metrics.FIGURES, *metrics.HISTOGRAM_FIGURES) if f.name in keep}
    shown |= {"confidence": "the gap's interval says"}
    rows = table.filter(pl.col("n_rows") > 0)
    # counts of unweighted rows are whole numbers: shown as such, not as 948.0000
    counts = [c for c in keep if c.rsplit("/", 1)[-1] in COUNTS]  # at the threshold and at each further one
    whole = [c for c in counts if rows.select((pl.col(c) == pl.col(c).round()).all()).item()]
    rows = rows.with_columns(pl.col(whole).cast(pl.Int64))
    return rows.select(label, *(pl.col(c).alias(shown.get(c, c)) for c in keep))


def _tables(
    table: pl.DataFrame, slices: Mapping[str, pl.DataFrame], figures: tuple[str, ...], what: str
) -> dict[str, pl.DataFrame]:
    label = "partition" if "partition" in table.columns else table.columns[0]
    out = {f"{what} by partition": _figure_table(table, label, figures)}
    for key, sliced in slices.items():
        out[f"{what} by slice of {key}"] = _figure_table(sliced, SLICE_LABEL, figures)
    return out


def calibration_section(
    table: pl.DataFrame, slices: Mapping[str, pl.DataFrame], overall: Mapping[str, Any]
) -> ReportSection:
    """Expected against realized BCE and both ECEs, overall in words, per partition and slice in tables, with the
    reliability diagram."""
    confident = {k: with_confidence(t) for k, t in slices.items()}
    tables = _tables(with_confidence(table), confident, CALIBRATION_COLUMNS, "Calibration")
    line = calibration_line(dict(overall))
    intro = "Realized BCE against the BCE the model expects of itself (mean H(p)), and the expected calibration error."
    return ReportSection(
        "Calibration",
        (intro, *([f"Overall, {line}."] if line else [])),
        ("plots/reliability.png",),
        tables,
    )


def decisions_section(
    table: pl.DataFrame, slices: Mapping[str, pl.DataFrame], overall: Mapping[str, Any]
) -> ReportSection:
    """The decision at the threshold, overall in words, per partition and slice in tables, with the cost curve."""
    line = decisions_line(dict(overall))
    return ReportSection(
        "Decisions",
        (f"Overall, {line}." if line else "No labelled row: no decision to count.",),
        ("plots/cost_curve.png",),
        _tables(table, slices, (*DECISION_COLUMNS, *further_columns(table.columns)), "Decisions"),
    )
