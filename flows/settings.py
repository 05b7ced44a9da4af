"""The one settings model per flow (built by the CLI, or by a deployment's parameters)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from tasks.gates import GateSettings


def split_commas(v: Any) -> Any:
    """``"a,b"`` → ``["a", "b"]``, so a deployment's parameters may spell column lists either way."""
    if isinstance(v, str):
        return [c.strip() for c in v.split(",") if c.strip()]
    return v


class EvaluateSettings(BaseModel):
    """Parameters of one evaluation: what data, which model, where the results go."""

    data: str = Field(description="A Parquet file, a folder of them, or a hive-partitioned tree.")
    label: str = Field(description="The 0/1 (or boolean) label column.")
    features: list[str] = Field(default_factory=list, description="Feature columns, in the model's order.")
    partition_by: list[str] = Field(default_factory=list, description="Partition columns (default: hive keys).")
    model_uri: str | None = Field(default=None, description="Evaluate this MLflow model instead of fitting one.")
    score_col: str | None = Field(default=None, description="Evaluate predictions stored in this column.")
    score_kind: Literal["logit", "probability"] = "probability"
    model_params: dict[str, Any] = Field(default_factory=dict, description="LogisticRegression overrides.")
    experiment: str = "bce-evaluation"
    run_name: str | None = None
    chunk_rows: int | None = Field(
        default=None,
        gt=0,
        description="Rows per task (whole partitions). Default: 4,000,000 where a task holds its rows "
        "(--auc exact, --audit) or spreads work over Dask workers; else 64,000,000 (the streaming pass holds one batch).",
    )
    fit: Literal["sklearn", "streaming"] = Field(default="sklearn", description="sklearn: in memory; streaming: exact L-BFGS over chunks, bounded memory.")
    dask: str | None = Field(default=None, description="Run the partition work on Dask: a scheduler address, or 'local' for a local cluster.")
    dask_workers: int = Field(default=2, ge=1, description="Workers of a local Dask cluster.")
    audit: bool = Field(default=False, description="One more pass: BCE three ways, saturation, calibration split, largest losses.")
    cache: bool = Field(default=True, description="Reuse and store per-partition results (keyed by model, file content, metric version).")
    full: bool = Field(default=False, description="Ignore cached results (they are still written).")
    auc: Literal["binned", "exact"] = Field(default="binned", description="ROC AUC per partition from 4096-bin histograms with a stated bound, or exact from ranks (a sort per partition). Overall AUC is always binned.")
    sample_rows: int = Field(default=5000, gt=0, description="Rows sampled for the row-level plots.")
    top_partitions: int = Field(default=5, ge=0, description="Worst partitions shown in the summary.")
    max_partition_metrics: int = Field(default=1000, ge=0, description="Per-partition MLflow metrics up to this many partitions.")
    register_name: str | None = Field(default=None, description="Register the fitted model as a new version of this name.")
    register_alias: str | None = Field(default=None, description="Alias to set on the new version (e.g. champion).")
    gates: GateSettings = Field(default_factory=GateSettings)
    where: dict[str, list[str]] = Field(default_factory=dict, description="Keep hive partitions whose key has one of these values.")
    date_key: str | None = Field(default=None, description="Hive key holding an ISO date, for a window of recent partitions.")
    window_days: int | None = Field(default=None, ge=1, description="Days up to the scheduled time (or now) to evaluate.")

    _split = field_validator("features", "partition_by", mode="before")(split_commas)

    def rows_per_task(self, holds_rows: bool) -> int:
        """``chunk_rows``, or its default: small when a task holds its rows or Dask spreads the work."""
        if self.chunk_rows:
            return self.chunk_rows
        return 4_000_000 if holds_rows or self.dask else 64_000_000


class CirclesSettings(BaseModel):
    """Parameters of the seed's two-circles experiment."""

    epochs: int = Field(default=200, ge=1, description="Training epochs (one partial_fit pass each).")
    random_state: int = Field(default=1, description="Seed of the network's initialisation and shuffling.")
    experiment: str = "bce-circles"
    run_name: str | None = None
    data_dir: str | None = Field(default=None, description="Where the Parquet split is written (default data/circles).")


class CompareSettings(BaseModel):
    """Parameters of a champion/challenger comparison on the same data."""

    data: str
    label: str
    champion: str = Field(description="MLflow URI of the champion (e.g. models:/churn@champion).")
    challenger: str = Field(description="MLflow URI of the challenger (e.g. models:/churn/7).")
    features: list[str] = Field(default_factory=list)
    partition_by: list[str] = Field(default_factory=list)
    experiment: str = "bce-comparison"
    run_name: str | None = None
    promote: bool = Field(default=False, description="Move the champion alias to the challenger if it is better by margin.")
    margin: float = Field(default=0.0, ge=0, description="Required BCE improvement (the interval's upper bound below −margin).")
    alias: str = "champion"
    min_rows: int = Field(default=30, ge=2, description="Partitions with fewer rows get no verdict.")
    max_regression: float | None = Field(
        default=None, ge=0, description="Gate: fail when the challenger is surely worse (95% paired interval) by more than this, overall or in a partition."
    )
    chunk_rows: int = Field(default=4_000_000, gt=0)

    _split = field_validator("features", "partition_by", mode="before")(split_commas)
