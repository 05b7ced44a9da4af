"""Earlier runs read back from MLflow: a series' last runs and a run's logged table.

The judgement over them (the drift band, the baseline's figures) is plain code in :mod:`tasks.judge`;
this module only asks the store, through the adapter.
"""

from __future__ import annotations

import logging

from tasks.errors import is_transient
from tasks.tracking.adapter import MlflowTracker
from tasks.tracking.lifecycle import store_lock


def search_runs(
    tracking_uri: str, experiment: str, tag: str, value: str, limit: int
) -> list[tuple[str, int, dict[str, float]]]:
    """The last ``limit`` FINISHED runs of ``experiment`` tagged ``tag = value``, newest first, as
    ``(run id, start time, metrics)``; none (with a warning in the log) when the server is away."""
    try:
        # a fresh SQLite store migrates on first use: one process at a time, as the logging step does
        with store_lock(tracking_uri):
            client = MlflowTracker(tracking_uri).client
            exp = client.get_experiment_by_name(experiment)
            runs = (
                []
                if exp is None
                else client.search_runs(
                    [exp.experiment_id],
                    f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'",
                    order_by=["attributes.start_time DESC"],
                    max_results=limit,
                )
            )
    except Exception as exc:
        if not is_transient(exc):
            raise
        # the tracking server is away: no band this time (said in the log); the logging step that
        # follows retries, then keeps the results locally
        logging.getLogger("bce_eval").warning(
            "the series' earlier runs could not be read (%s): no drift band this run", type(exc).__name__
        )
        return []
    return [(run.info.run_id, run.info.start_time, dict(run.data.metrics)) for run in runs]


def read_run_table(tracking_uri: str, run_id: str, artifact: str, what: str) -> tuple[dict[str, float], str]:
    """A run's metrics and the text of one of its artifacts; :class:`InputError` naming ``what`` if unreadable."""
    return MlflowTracker(tracking_uri).read_run_artifact(run_id, artifact, what=what)
