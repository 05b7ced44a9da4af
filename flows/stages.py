"""The typed results of the evaluation's four stages (:mod:`flows.evaluate`): each frozen, built once.

(No ``from __future__ import annotations``: Prefect resolves these types when a deployment loads the flow.)
"""

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from tasks.data.dataset import Dataset
from tasks.judge.drift import Series
from tasks.judge.gates import GateResult
from tasks.judge.slice_gates import SliceJudgement
from tasks.models.scoring import Scorer
from tasks.review.results import ModelInfo


@dataclass(frozen=True)
class Scoring:
    """What is evaluated, on which data: the dataset, its scorer, and the model behind it."""

    dataset: Dataset
    scorer: Scorer
    info: ModelInfo
    tags: dict[str, str]
    lineage: str  # the model's part of the series key (tasks.judge.drift.model_lineage)
    name: str  # the model's short name, for the run's default name (tasks.review.results.model_label)
    model: Any = None  # the loaded or fitted model (None for stored scores)
    fitted: Any = None  # the model fitted by this run (logged with it), else None


@dataclass(frozen=True)
class Reduced:
    """The per-partition table and the overall row, merged from computed and cached partitions, and the table of
    each declared slicing (by its key) rolled up from the same sums."""

    table: pl.DataFrame
    overall: dict[str, Any]
    slices: dict[str, pl.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Judged:
    """The table with each partition's verdict, the gate's result, the series' bands, and the audit when it ran."""

    table: pl.DataFrame
    verdict: GateResult | None
    audit: tuple[pl.DataFrame, pl.DataFrame] | None
    series: Series
    slices: SliceJudgement | None = None  # each slicing's table with verdicts, and its gaps
