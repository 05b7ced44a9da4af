"""Metrics logged as they come (the circles' learning curves, per epoch), a batch at a time."""

from __future__ import annotations

import time
from typing import Any


class MetricStream:
    """An epoch callback that logs metrics with ``step`` = epoch, a batch every ``every`` epochs (``tracker``: a
    :class:`tasks.tracking.adapter.MlflowTracker`)."""

    def __init__(self, tracker: Any, run_id: str, every: int = 25) -> None:
        self.tracker, self.run_id, self.every = tracker, run_id, every
        self._pending: list[Any] = []

    def __call__(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in values.items())
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.tracker.log_metrics(self.run_id, self._pending)
            self._pending = []
