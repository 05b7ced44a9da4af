"""Quality gates: thresholds on BCE overall and per partition, and on regression against a baseline.

A gate never hides the evaluation: the run is logged whole and tagged ``quality_gate=failed``;
only then does the flow fail, naming the partitions at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, Field, model_validator

from tasks._prefect import as_task
from tasks.metrics import normal_interval


class GateSettings(BaseModel):
    """Thresholds; each one unset means "not checked"."""

    max_bce: float | None = Field(default=None, gt=0, description="Fail when the overall BCE exceeds this.")
    max_partition_bce: float | None = Field(default=None, gt=0, description="Fail partitions whose BCE exceeds this.")
    max_regression: float | None = Field(
        default=None, ge=0, description="Fail when BCE exceeds the baseline's by more than this (overall or per partition)."
    )
    baseline_run_id: str | None = Field(
        default=None,
        description="The MLflow run whose BCE is the baseline, or 'latest': the newest earlier run of the same evaluation (data, label and model).",
    )
    max_drift: float | None = Field(
        default=None, gt=0,
        description="Fail when the overall BCE or a partition's leaves the band of its own series: median ± this many robust σ.",
    )
    min_rows: int = Field(default=1, ge=1, description="Partitions with fewer rows are reported as too small, not judged.")
    min_class_rows: int = Field(default=0, ge=0, description="Partitions with fewer positives or negatives are too small to judge.")
    judge_on: Literal["interval", "point"] = Field(
        default="interval",
        description="interval: a partition fails only when its whole 95% BCE interval is above the threshold; point: when its BCE is.",
    )

    @model_validator(mode="after")
    def _baseline_pairs_with_regression(self) -> "GateSettings":
        """A regression gate needs its baseline, and a baseline is read only for that gate."""
        # messages name the CLI option first (most users start there), then the settings path
        # that a deployment's parameters use; this model is always EvaluateSettings.gates
        if self.max_regression is not None and not self.baseline_run_id:
            raise ValueError(
                "--max-regression needs --baseline-run RUN_ID (or latest) (settings: gates.max_regression needs gates.baseline_run_id)."
            )
        if self.baseline_run_id and self.max_regression is None:
            raise ValueError(
                "--baseline-run is only read for --max-regression; pass --max-regression DELTA or drop --baseline-run "
                "(settings: gates.baseline_run_id needs gates.max_regression)."
            )
        return self

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_bce, self.max_partition_bce, self.max_regression, self.max_drift))


@dataclass
class GateResult:
    """The verdict: passed, and if not, one line per failure and the partitions at fault."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        if self.passed:
            return "quality gate passed"
        return "quality gate failed: " + "; ".join(self.failures)

    def tags(self) -> dict[str, str]:
        out = {"quality_gate": "passed" if self.passed else "failed"}
        if not self.passed:
            out["quality_gate.failures"] = self.message[:4000]
            out["quality_gate.partitions"] = ",".join(self.partitions)[:4000]
        return out


def check_gates(
    table: pl.DataFrame,
    overall: dict[str, Any],
    gates: GateSettings,
    baseline: dict[str, Any] | None = None,
    drift: pl.DataFrame | None = None,
) -> GateResult:
    """Judge an evaluation against ``gates``.

    ``drift`` is the series band (:func:`tasks.series.drift_band`), judged with ``gates.max_drift``.

    ``baseline`` is ``{"bce": overall, "partitions": {partition label: bce}}`` of the baseline run.
    """
    failures: list[str] = []
    at_fault: list[str] = []
    if "partition" not in table.columns:
        table = table.with_columns(pl.lit("all").alias("partition"))
    small = (pl.col("n_rows") < gates.min_rows) | (
        pl.min_horizontal(pl.col("n_pos"), pl.col("n_rows") - pl.col("n_pos")) < gates.min_class_rows
    )
    if gates.judge_on == "interval" and "bce_se" in table.columns:
        small = small | pl.col("bce_se").is_null()  # one row: no interval to judge
    judged = table.filter(~small)
    too_small = table.filter(small).get_column("partition").to_list()
    verdicts = {p: "too small" for p in too_small}
    verdicts.update({p: "passed" for p in judged.get_column("partition").to_list()})
    if gates.max_bce is not None and overall["bce"] > gates.max_bce:
        failures.append(f"overall BCE {overall['bce']:.4f} > {gates.max_bce}")
    if gates.max_partition_bce is not None:
        low, _ = normal_interval(pl.col("bce"), pl.col("bce_se"))
        measure = low if gates.judge_on == "interval" else pl.col("bce")
        bad = judged.filter(measure > gates.max_partition_bce).sort("bce", descending=True)
        if bad.height:
            how = "whose 95% interval lies above" if gates.judge_on == "interval" else "with BCE above"
            names = [
                "{} ({:.4f} [{:.4f}, {:.4f}])".format(p, b, *normal_interval(b, se)) for p, b, se in bad.select("partition", "bce", "bce_se").iter_rows()
            ]
            failures.append(f"{bad.height} partition(s) {how} {gates.max_partition_bce}: " + ", ".join(names[:20]))
            at_fault.extend(bad.get_column("partition").to_list())
            verdicts.update({p: "failed" for p in bad.get_column("partition").to_list()})
    if gates.max_regression is not None and baseline is not None:
        delta = overall["bce"] - baseline["bce"]
        if delta > gates.max_regression:
            failures.append(f"overall BCE regressed by {delta:.4f} (> {gates.max_regression}) against the baseline {baseline['bce']:.4f}")
        parts = baseline.get("partitions", {})
        if parts and "partition" in table.columns:
            worse = []
            for p, b in judged.select("partition", "bce").iter_rows():
                if p in parts and b - parts[p] > gates.max_regression:
                    worse.append((p, b - parts[p]))
            if worse:
                failures.append(
                    f"{len(worse)} partition(s) regressed by more than {gates.max_regression}: "
                    + ", ".join(f"{p} (+{d:.4f})" for p, d in worse[:20])
                )
                at_fault.extend(p for p, _ in worse if p not in at_fault)
                verdicts.update({p: "failed" for p, _ in worse})
    if gates.max_drift is not None and drift is not None:
        _judge_drift(drift, gates.max_drift, failures, at_fault, verdicts)
    return GateResult(not failures, failures, at_fault, too_small, verdicts)


def _judge_drift(drift: pl.DataFrame, k: float, failures: list[str], at_fault: list[str], verdicts: dict[str, str]) -> None:
    """A partition (or the overall BCE) outside the band of its own series fails the gate."""
    from tasks.series import drift_failures

    line, left = drift_failures(drift, k)
    if line:
        failures.append(line)
        at_fault.extend(p for p in left if p not in at_fault)
        verdicts.update({p: "failed" for p in left if p in verdicts})


def with_verdicts(table: pl.DataFrame, result: "GateResult | None") -> pl.DataFrame:
    """The table with the gate's ``verdict`` per partition (``not judged`` without a gate)."""
    if result is None:
        return table.with_columns(pl.lit("not judged").alias("verdict"))
    names = table.get_column("partition") if "partition" in table.columns else pl.Series(["all"] * table.height)
    return table.with_columns(pl.Series("verdict", [result.verdicts.get(p, "not judged") for p in names.to_list()]))


def read_baseline(run_id: str, tracking_uri: str) -> dict[str, Any]:
    """Overall and per-partition BCE of an earlier evaluation run."""
    import json

    from tasks.errors import InputError
    from tasks.naming import partition_label
    from tasks.tracking import MlflowTracker

    metrics, text = MlflowTracker(tracking_uri).read_run_artifact(run_id, "bce_by_partition.json", what="--baseline-run")
    if "bce" not in metrics:
        raise InputError(f"--baseline-run {run_id}: that run has no 'bce' metric; pass an evaluation run.")
    doc = json.loads(text)
    cols = doc.get("columns", [])
    if "bce" not in cols:
        raise InputError(f"--baseline-run {run_id}: its bce_by_partition.json has no 'bce' column; pass an evaluation run.")
    keys = baseline_key_columns(cols)
    parts = {}
    for row in doc["data"]:
        r = dict(zip(cols, row))
        label = r["partition"] if keys == ["partition"] else partition_label({k: r[k] for k in keys})
        parts[label] = r["bce"]
    return {"bce": metrics["bce"], "partitions": parts}


def baseline_key_columns(columns: list[str]) -> list[str]:
    """The partition key columns of a logged ``bce_by_partition.json`` (``["partition"]`` when unpartitioned).

    ``table_for_mlflow`` writes the key columns, then value columns from ``table_columns()`` only, so
    the keys are whatever is not a value column: one source of truth, so a value column added to
    the table later can never be taken for a key (which made every partition's label unmatched).
    """
    from tasks.results import table_columns

    values = set(table_columns())
    return [c for c in columns if c not in values]


check_gates_task = as_task(check_gates, name="check-gates")
read_baseline_task = as_task(read_baseline, name="read-baseline", retries=3)
