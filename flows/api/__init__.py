"""bce-eval from Python: ``evaluate(data, label=..., model=...)`` in a notebook or a script, and MLflow's
``mlflow.models.evaluate(..., evaluators=["bce-eval"])`` (:mod:`flows.api.mlflow_evaluator`).

Importing this package loads Polars, pydantic and bce-eval's computation, not Prefect, MLflow or
matplotlib: those load when a model URI is read, a run is logged or the report is drawn.
"""

from flows.api.evaluation import evaluate
from flows.api.result import BceEvaluation


def tracking_uri() -> str:
    """The MLflow store bce-eval's CLI logs to (``MLFLOW_TRACKING_URI``, else ``mlflow/mlflow.db`` in the checkout):
    ``mlflow.set_tracking_uri(tracking_uri())`` points a notebook at the runs and models the CLI made."""
    from tasks.tracking.adapter import resolve_tracking_uri

    return resolve_tracking_uri()


__all__ = ["BceEvaluation", "evaluate", "tracking_uri"]
