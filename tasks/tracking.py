"""Everything that talks to MLflow: where the store is, and logging one evaluation as one run.

A run is created only once every figure is computed, and ends FINISHED only when everything was
logged; if logging fails half-way it is ended FAILED, so a FINISHED run is always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tasks._prefect import as_task
from tasks.redact import redact_text, redact_uri
from tasks.registry import register_model
from tasks.run_lifecycle import owner_tags, previous_attempt, sqlite_path, store_lock

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE_DIR = REPO_ROOT / "mlflow"

def resolve_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store in the repo's ``mlflow/`` folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{DEFAULT_STORE_DIR / 'mlflow.db'}"


def default_artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go in ``artifacts/`` beside the database file."""
    db = sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db is not None else None


def ensure_experiment(name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside a SQLite store) if needed."""
    import mlflow

    with store_lock(tracking_uri):  # re-entrant per process: see store_lock
        client = mlflow.MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))


def ui_command(tracking_uri: str) -> str:
    """The command that opens MLflow's UI on this store."""
    if tracking_uri == f"sqlite:///{DEFAULT_STORE_DIR / 'mlflow.db'}":
        return "bce-eval ui"
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {redact_uri(tracking_uri)} in a browser"
    return f"bce-eval ui --backend-store-uri {redact_uri(tracking_uri)}"


@dataclass
class DatasetRef:
    """A dataset input of a run: where it is, a digest of its content, its schema, its role."""

    source: str
    name: str
    digest: str
    schema: Any = None  # a few rows (pandas) whose column types become the dataset's schema
    context: str = "evaluation"


@dataclass
class RunContent:
    """Everything one run logs to MLflow."""

    experiment: str
    run_name: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    partition_metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    tables: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    model_input_example: Any = None
    model_output_example: Any = None
    datasets: list[DatasetRef] = field(default_factory=list)
    text_artifacts: dict[str, str] = field(default_factory=dict)
    register: tuple[str, str | None] | None = None  # (registered model name, alias)
    results_path: str | None = None  # where the computed results were saved before logging


EvaluationLog = RunContent


def _log_model(model: Any, X_example: Any, y_example: Any) -> Any:
    from importlib.metadata import version

    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(X_example, y_example) if X_example is not None else None
    kwargs: dict[str, Any] = {}
    if type(model).__name__ == "MLPClassifier" and getattr(model, "solver", "") == "sgd":
        kwargs["skops_trusted_types"] = ["sklearn.neural_network._stochastic_optimizers.SGDOptimizer"]
    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        # given requirements: MLflow would otherwise spend ~7 s inferring them in a subprocess
        pip_requirements=[f"scikit-learn=={version('scikit-learn')}"],
        **kwargs,
    )


def create_run(experiment: str, run_name: str, tags: dict[str, str], tracking_uri: str) -> tuple[str, str]:
    """Create a RUNNING run in ``experiment``; returns (run id, experiment id)."""
    import mlflow

    with store_lock(tracking_uri):
        experiment_id = ensure_experiment(experiment, tracking_uri)
        run = mlflow.MlflowClient(tracking_uri).create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id, experiment_id


@contextlib.contextmanager
def scoped_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (``log_model`` needs an active run) and its loading of a run's logged
    model read a process-wide tracking URI: set it for this block only, then put back what was
    there. The one place that touches it."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, previous_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)  # (it also writes MLFLOW_TRACKING_URI: put that back too)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _dataset_inputs(refs: list[DatasetRef]) -> list[Any]:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.models import infer_signature

    out = []
    for ref in refs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": both are local
            source = resolve_dataset_source(ref.source)
        schema = infer_signature(ref.schema).inputs if ref.schema is not None else None
        ds = MetaDataset(source, name=ref.name, digest=ref.digest[:36], schema=schema)
        out.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", ref.context)]))
    return out


def log_run_content(run_id: str, experiment_id: str, content: RunContent, tracking_uri: str) -> None:
    """Log ``content`` into an open run, then end it FINISHED; on any error end it FAILED and re-raise."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    with store_lock(tracking_uri):
        _log_run_content(client, run_id, experiment_id, content, tracking_uri)


def _log_run_content(client: Any, run_id: str, experiment_id: str, content: RunContent, tracking_uri: str) -> None:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    try:
        now = int(time.time() * 1000)
        params = [Param(k, _param_value(v)) for k, v in content.params.items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in {**content.metrics, **content.partition_metrics}.items()]
        tags = [RunTag(k, v) for k, v in content.tags.items()]
        if content.description:
            tags.append(RunTag("mlflow.note.content", content.description))
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        for name, table in content.tables.items():
            client.log_table(run_id, data=table, artifact_file=name)  # registers it as a table for the UI
            # ... then the same table at full precision (log_table's JSON keeps 10 digits)
            cols = list(table)
            rows = [list(r) for r in zip(*(table[c] for c in cols))]
            client.log_text(run_id, json.dumps({"columns": cols, "data": rows}), artifact_file=name)
        for name, fig in content.figures.items():
            client.log_figure(run_id, fig, artifact_file=name)
        _close_figures(content.figures)
        for name, text in content.text_artifacts.items():
            client.log_text(run_id, text, artifact_file=name)
        if content.datasets:
            client.log_inputs(run_id, datasets=_dataset_inputs(content.datasets))
        if content.model is not None:
            # the model goes last: leaving start_run ends the run FINISHED (FAILED on an error)
            with scoped_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id, experiment_id=experiment_id):
                info = _log_model(content.model, content.model_input_example, content.model_output_example)
                if content.register is not None:
                    register_model(info.model_uri, run_id, content.register[0], content.register[1], tracking_uri)
        else:
            client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise


def read_run_artifact(run_id: str, artifact: str, tracking_uri: str, what: str = "run") -> tuple[dict[str, float], str]:
    """A run's metrics and the text of one of its artifacts; :class:`InputError` naming ``what`` if unreadable."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.errors import InputError

    try:
        run = mlflow.MlflowClient(tracking_uri).get_run(run_id)
        with tempfile.TemporaryDirectory(prefix="bce-eval-run-") as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=tracking_uri)
            text = Path(local).read_text()
    except (MlflowException, OSError) as exc:
        raise InputError(f"{what} {run_id}: cannot read it ({str(exc).splitlines()[0]}).") from exc
    return dict(run.data.metrics), text


def log_evaluation(log: RunContent, tracking_uri: str) -> tuple[str, str]:
    """Log one evaluation as one MLflow run; returns its run id and experiment id.

    The run is created only now, after every figure was computed, and is FINISHED only when
    everything was logged (FAILED otherwise, and the error is raised again).
    """
    try:
        return _log_evaluation(log, tracking_uri)
    except (OSError, ConnectionError) as exc:
        raise _tracking_error(exc, log, tracking_uri) from exc
    except Exception as exc:
        if type(exc).__name__ in {"MlflowException", "RestException"} or "requests" in type(exc).__module__:
            raise _tracking_error(exc, log, tracking_uri) from exc
        raise


def _tracking_error(exc: BaseException, log: RunContent, tracking_uri: str) -> Exception:
    from tasks.errors import TrackingError

    reason = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
    saved = f"; the results are saved in {log.results_path}" if log.results_path else ""
    return TrackingError(
        f"could not log to MLflow at {redact_uri(tracking_uri)} ({reason}){saved}; rerun the same command "
        "when the tracking server is back: cached partitions are reused, nothing is recomputed"
    )


def _log_evaluation(log: RunContent, tracking_uri: str) -> tuple[str, str]:
    identity = {k: log.tags[k] for k in ("prefect.flow_run_id", "bce_eval.evaluation_key") if log.tags.get(k)}
    with store_lock(tracking_uri):  # SQLite: one writer at a time instead of "database is locked"
        experiment_id = ensure_experiment(log.experiment, tracking_uri)
        existing = previous_attempt(experiment_id, identity, tracking_uri)
        if existing is not None:
            return existing, experiment_id
        run_id, experiment_id = create_run(log.experiment, log.run_name, {**identity, **owner_tags()}, tracking_uri)
        log_run_content(run_id, experiment_id, log, tracking_uri)
    return run_id, experiment_id


class MetricStream:
    """An epoch callback that logs metrics with ``step`` = epoch, a batch every ``every`` epochs."""

    def __init__(self, run_id: str, tracking_uri: str, every: int = 25) -> None:
        self.run_id, self.tracking_uri, self.every = run_id, tracking_uri, every
        self._pending: list[Any] = []

    def __call__(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in values.items())
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        import mlflow

        if self._pending:
            with store_lock(self.tracking_uri):
                mlflow.MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=self._pending)
            self._pending = []


def _close_figures(figures: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else repr(v) if not isinstance(v, (int, float)) else str(v)
    return s if len(s) <= 6000 else s[:5990] + "…"


def end_run_failed(run_id: str, tracking_uri: str) -> None:
    """Mark a run FAILED (used when the work before logging fails)."""
    import mlflow

    mlflow.MlflowClient(tracking_uri).set_terminated(run_id, "FAILED")


log_evaluation_task = as_task(log_evaluation, name="log-to-mlflow", retries=3)
create_run_task = as_task(create_run, name="create-mlflow-run", retries=3)
log_run_content_task = as_task(log_run_content, name="log-to-mlflow", retries=3)
