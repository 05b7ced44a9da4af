"""The tracking adapter's calls the flows' steps make (:mod:`flows.steps`), as plain functions.

Each takes the tracking URI (a plain string, shown in the UI and safe to send to another process)
and makes its :class:`tasks.tracking.adapter.MlflowTracker`.
"""

from __future__ import annotations

from tasks.tracking.adapter import MlflowTracker
from tasks.tracking.content import RunContent


def create_run(experiment: str, run_name: str, tags: dict[str, str], tracking_uri: str) -> tuple[str, str]:
    return MlflowTracker(tracking_uri).create_run(experiment, run_name, tags)


def log_run_content(run_id: str, experiment_id: str, content: "RunContent", tracking_uri: str) -> None:
    MlflowTracker(tracking_uri).log_run_content(run_id, experiment_id, content)


def log_evaluation(content: "RunContent", tracking_uri: str) -> tuple[str, str]:
    return MlflowTracker(tracking_uri).log_evaluation(content)


def describe_model(model_uri: str, tracking_uri: str) -> dict[str, str]:
    return MlflowTracker(tracking_uri).describe_model(model_uri)


def move_alias(challenger_uri: str, champion_uri: str, alias: str, run_id: str, tracking_uri: str) -> tuple[str, str]:
    return MlflowTracker(tracking_uri).move_alias(challenger_uri, champion_uri, alias, run_id)
