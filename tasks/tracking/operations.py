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


def log_into_run(run_id: str, content: "RunContent", tracking_uri: str, prefix: str = "") -> None:
    MlflowTracker(tracking_uri).log_into_run(run_id, content, prefix)


def log_into_active_run(content: "RunContent") -> str:
    """Log ``content`` into the process's active MLflow run (a notebook's ``start_run``), left open; its run id."""
    import mlflow

    from tasks.errors import InputError

    run = mlflow.active_run()
    if run is None:
        raise InputError("log_to='active' needs an active MLflow run: call it inside `with mlflow.start_run():`.")
    log_into_run(run.info.run_id, content, mlflow.get_tracking_uri())
    return run.info.run_id


def log_evaluation(content: "RunContent", tracking_uri: str) -> tuple[str, str]:
    return MlflowTracker(tracking_uri).log_evaluation(content)


def describe_model(model_uri: str, tracking_uri: str) -> dict[str, str]:
    return MlflowTracker(tracking_uri).describe_model(model_uri)


def move_alias(challenger_uri: str, champion_uri: str, alias: str, run_id: str, tracking_uri: str) -> tuple[str, str]:
    return MlflowTracker(tracking_uri).move_alias(challenger_uri, champion_uri, alias, run_id)
