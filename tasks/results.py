"""The results of an evaluation as the flows hand them on: their types and the table's columns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from tasks import metrics as metric_schema
from tasks.naming import partition_label


def table_columns() -> tuple[str, ...]:
    """Value columns of the per-partition table as logged: the metric schema's, then the gate's verdict."""
    return (*metric_schema.table_value_columns(), "verdict")


@dataclass
class ModelInfo:
    """Which model was evaluated, as recorded in the run."""

    description: str
    uri: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None
    source_run_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The outcome of one evaluation, before and after it is logged."""

    table: pl.DataFrame
    overall: dict[str, Any]
    partition_by: tuple[str, ...]
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    rows: pl.DataFrame | None = None  # the scored sample (every row of a small dataset)
    gate: Any = None  # the quality gate's verdict (tasks.gates.GateResult), None without a gate
    audit_headline: str = ""  # the audit in one line, when it ran

    @property
    def gate_passed(self) -> bool:
        """True without a gate, or when it passed."""
        return self.gate is None or self.gate.passed


def with_partition_label(table: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    """Add ``partition`` (``k=v/k=v``) when the table is keyed by partition columns."""
    if not keys:
        return table
    labels = [partition_label(dict(zip(keys, row))) for row in table.select(keys).iter_rows()]
    return table.with_columns(pl.Series("partition", labels, dtype=pl.String))


def clean_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
