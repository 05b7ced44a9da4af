"""The results of an evaluation as the flows hand them on: their types and the table's columns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from tasks.data.naming import partition_label
from tasks.errors import InputError
from tasks.metrics import schema as metric_schema


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
    gate: Any = None  # the quality gate's verdict (tasks.judge.gates.GateResult), None without a gate
    audit_headline: str = ""  # the audit in one line, when it ran
    model: str = ""  # which model was evaluated, in words (ModelInfo.description)
    drift: str = ""  # the series' drift notice (tasks.judge.drift.Series.notice), "" when nothing left its band
    slices: Any = None  # each slicing's judged table and gaps (tasks.judge.slice_gates.SliceJudgement), or None
    estimates: str = ""  # the series' estimates checked against labels come since (Series.estimate_line), or ""

    @property
    def gate_passed(self) -> bool:
        """True without a gate, or when it passed."""
        return self.gate is None or self.gate.passed


def model_label(tags: Mapping[str, str], type_name: str) -> str:
    """A loaded model's short name (a run's name): its registered name and version, else its flavour and class.

    The class alone says too little: XGBoost's and LightGBM's boosters are both ``Booster``.
    """
    if tags.get("model_name") and tags.get("model_version"):
        return f"{tags['model_name']} v{tags['model_version']}"
    return " ".join(p for p in (tags.get("model_flavor", ""), type_name) if p)


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


def baseline_from(run_id: str, metrics: dict[str, float], text: str) -> dict[str, Any]:
    """An earlier evaluation run's figures, overall (its metrics) and per partition (its logged
    ``bce_by_partition.json``, :func:`tasks.tracking.history.read_run_table`):
    ``{"overall": {figure: value}, "partitions": {label: {figure: value}}}``."""
    import json

    if "bce" not in metrics:
        raise InputError(f"--baseline-run {run_id}: that run has no 'bce' metric; pass an evaluation run.")
    doc = json.loads(text)
    cols = doc.get("columns", [])
    if "bce" not in cols:
        raise InputError(
            f"--baseline-run {run_id}: its bce_by_partition.json has no 'bce' column; pass an evaluation run."
        )
    keys = baseline_key_columns(cols)
    values = set(cols) - set(keys)
    parts = {}
    for row in doc["data"]:
        r = dict(zip(cols, row))
        label = r["partition"] if keys == ["partition"] else partition_label({k: r[k] for k in keys})
        parts[label] = {c: v for c, v in r.items() if c in values and isinstance(v, (int, float))}
    return {"overall": dict(metrics), "partitions": parts}


def baseline_key_columns(columns: list[str]) -> list[str]:
    """The partition key columns of a logged ``bce_by_partition.json`` (``["partition"]`` when unpartitioned).

    ``table_for_mlflow`` writes the key columns, then value columns from ``table_columns()`` only, so
    the keys are whatever is not a value column: one source of truth, so a value column added to
    the table later can never be taken for a key (which made every partition's label unmatched).
    """
    values = set(table_columns())
    return [c for c in columns if c not in values]
