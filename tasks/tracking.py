"""The tracking adapter: everything bce-eval asks of MLflow, against the tracking URI it is given.

:class:`MlflowTracker` is the one door to MLflow for tracking (experiments, runs and what they hold,
the registry, a run's artifacts, where a logged model's files are); :mod:`tasks.registry` and
:mod:`tasks.run_lifecycle` run on the client it hands them. No module-level state; MLflow's
process-wide URI is set only in :meth:`MlflowTracker._fluent_scope`, around ``log_model``.

A run is created only once every figure is computed, and ends FINISHED only when everything was
logged; if logging fails half-way it is ended FAILED, so a FINISHED run is always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from tasks._prefect import as_task
from tasks.errors import InputError, TrackingError
from tasks.redact import redact_text, redact_uri
from tasks.registry import describe_model_uri, move_alias as move_registry_alias, record_registration, registered_version
from tasks.run_lifecycle import owner_tags, previous_attempt, sqlite_path, store_lock
from tasks.tracking_access import DEFAULT_STORE_DIR, access_denied, check_tracking_access, ui_command  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from tasks.run_content import DatasetRef, RunContent



# MLflow's UI opens an experiment in its GenAI view unless this tag says it is for model training
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def resolve_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store in the repo's ``mlflow/`` folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{DEFAULT_STORE_DIR / 'mlflow.db'}"


def default_artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go in ``artifacts/`` beside the database file."""
    db = sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db is not None else None


class MlflowTracker:
    """MLflow at one tracking URI (its registry too): every call goes to that store, and only there.

    Public methods that write take the store's lock (:func:`tasks.run_lifecycle.store_lock`) once.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None

    @property
    def client(self) -> Any:
        """An ``MlflowClient`` bound to this tracking URI."""
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(self.tracking_uri)
        return self._client

    # experiments and runs

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (with artifacts beside a SQLite store) if needed."""
        with store_lock(self.tracking_uri):
            return self._ensure_experiment(name)

    def _ensure_experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older version, or by hand
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp.experiment_id
        return self.client.create_experiment(name, artifact_location=default_artifact_location(self.tracking_uri),
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> tuple[str, str]:
        """Create a RUNNING run in ``experiment``; returns (run id, experiment id)."""
        with store_lock(self.tracking_uri):
            return self._create_run(experiment, run_name, tags)

    def _create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> tuple[str, str]:
        experiment_id = self._ensure_experiment(experiment)
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        return run.info.run_id, experiment_id

    def end_run_failed(self, run_id: str) -> None:
        """Mark a run FAILED (used when the work before logging fails)."""
        self.client.set_terminated(run_id, "FAILED")

    def log_metrics(self, run_id: str, metrics: list[Any]) -> None:
        """Log a batch of ``mlflow.entities.Metric`` into an open run."""
        with store_lock(self.tracking_uri):
            self.client.log_batch(run_id, metrics=metrics)

    def metric_stream(self, run_id: str, every: int = 25) -> "MetricStream":
        return MetricStream(self, run_id, every)

    # one run's content

    def log_run_content(self, run_id: str, experiment_id: str, content: "RunContent") -> None:
        """Log ``content`` into an open run, then end it FINISHED; on any error end it FAILED and re-raise."""
        with store_lock(self.tracking_uri):
            self._log_content(run_id, experiment_id, content)

    def log_evaluation(self, content: "RunContent") -> tuple[str, str]:
        """Log one evaluation as one MLflow run; returns its run id and experiment id.

        The run is created only now, after every figure was computed, and is FINISHED only when
        everything was logged (FAILED otherwise; MLflow and network errors become :class:`TrackingError`).
        """
        try:
            return self._log_once(content)
        except (OSError, ConnectionError) as exc:
            raise self._tracking_error(exc, content) from exc
        except Exception as exc:
            code = getattr(exc, "error_code", "")
            if code in {"UNAUTHENTICATED", "PERMISSION_DENIED"} or " 401 " in f" {exc} " or " 403 " in f" {exc} ":
                # credentials, not the network: a retry cannot help
                raise access_denied(self.tracking_uri, 403 if code == "PERMISSION_DENIED" or " 403 " in f" {exc} " else 401) from None
            if type(exc).__name__ in {"MlflowException", "RestException"} or "requests" in type(exc).__module__:
                raise self._tracking_error(exc, content) from exc
            raise

    def _log_once(self, content: "RunContent") -> tuple[str, str]:
        identity = {k: content.tags[k] for k in ("prefect.flow_run_id", "bce_eval.evaluation_key") if content.tags.get(k)}
        with store_lock(self.tracking_uri):  # SQLite: one writer at a time instead of "database is locked"
            experiment_id = self._ensure_experiment(content.experiment)
            existing = previous_attempt(self.client, experiment_id, identity)
            if existing is not None:
                return existing, experiment_id
            run_id, experiment_id = self._create_run(content.experiment, content.run_name, {**identity, **owner_tags()})
            self._log_content(run_id, experiment_id, content)
        return run_id, experiment_id

    def _tracking_error(self, exc: BaseException, content: "RunContent") -> Exception:
        reason = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
        saved = f"; the results are saved in {content.results_path}" if content.results_path else ""
        return TrackingError(
            f"could not log to MLflow at {redact_uri(self.tracking_uri)} ({reason}){saved}; rerun the same command "
            "when the tracking server is back: cached partitions are reused, nothing is recomputed"
        )

    def _log_content(self, run_id: str, experiment_id: str, content: "RunContent") -> None:
        try:
            self._log_values(run_id, content)
            self._log_artifacts(run_id, content)
            if content.model is not None:
                self._log_model(run_id, experiment_id, content)  # last: it ends the run
            else:
                self.client.set_terminated(run_id, "FINISHED")
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise

    def _log_values(self, run_id: str, content: "RunContent") -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        params = [Param(k, _param_value(v)) for k, v in content.params.items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in {**content.metrics, **content.partition_metrics}.items()]
        tags = [RunTag(k, v) for k, v in content.tags.items()]
        if content.description:
            tags.append(RunTag("mlflow.note.content", content.description))
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    def _log_artifacts(self, run_id: str, content: "RunContent") -> None:
        client = self.client
        for name, table in content.tables.items():
            # log_table's JSON ("split"), at full precision (its pandas JSON keeps 10 digits; 10,000 rows cost 0.25 s)
            rows = [list(r) for r in zip(*table.values())]
            client.log_text(run_id, json.dumps({"columns": list(table), "data": rows}), artifact_file=name)
        if content.tables:  # the tag log_table sets: the UI lists them as the run's tables
            tables = [{"path": name, "type": "table"} for name in content.tables]
            client.set_tag(run_id, "mlflow.loggedArtifacts", json.dumps(tables))
        if content.figures:
            import tempfile

            from tasks.plots import write_pngs

            with tempfile.TemporaryDirectory(prefix="bce-eval-plots-") as tmp:
                write_pngs(content.figures, Path(tmp))  # the report's bytes, in one upload
                client.log_artifacts(run_id, tmp)
            import matplotlib.pyplot as plt

            for fig in content.figures.values():
                plt.close(fig)
        for name, text in content.text_artifacts.items():
            client.log_text(run_id, text, artifact_file=name)
        if content.datasets:
            client.log_inputs(run_id, datasets=_dataset_inputs(content.datasets))

    def _log_model(self, run_id: str, experiment_id: str, content: "RunContent") -> None:
        """Log the model (registered as a new version when asked); leaving ``start_run`` ends the run
        FINISHED, or FAILED on an error."""
        import mlflow

        from tasks.model import log_sklearn_model

        name, alias = content.register or (None, None)
        with self._fluent_scope(), mlflow.start_run(run_id=run_id, experiment_id=experiment_id):
            info = log_sklearn_model(content.model, content.model_input_example, content.model_output_example, name)
            if name is not None:
                record_registration(self.client, run_id, name, str(info.registered_model_version), alias)

    def log_registered_model(
        self, experiment: str, run_name: str, log: Callable[[str], Any], registered_name: str, alias: str
    ) -> tuple[str, str]:
        """A new run whose model ``log(registered_name)`` logs (an ``mlflow.<flavour>.log_model`` call that
        registers it), with ``alias`` set on the new version; returns (run id, version)."""
        import mlflow

        experiment_id = self.ensure_experiment(experiment)
        with self._fluent_scope(), mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            info = log(registered_name)
            version = str(info.registered_model_version)
            record_registration(self.client, run.info.run_id, registered_name, version, alias)
        return run.info.run_id, version

    @contextlib.contextmanager
    def _fluent_scope(self) -> Iterator[None]:
        """``log_model`` (it needs an active run), its registration and the SQLite registry's lookup
        of a logged model read the process-wide tracking URI and MLflow 3.17 takes none there: set
        it for this block only, then put back what was there (``MLFLOW_TRACKING_URI`` too)."""
        import mlflow
        from mlflow.tracking._tracking_service import utils

        previous, previous_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)
            if previous_env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env

    # reading back

    def read_run_artifact(self, run_id: str, artifact: str, what: str = "run") -> tuple[dict[str, float], str]:
        """A run's metrics and the text of one of its artifacts; :class:`InputError` naming ``what`` if unreadable."""
        import tempfile

        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
            with tempfile.TemporaryDirectory(prefix="bce-eval-run-") as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=self.tracking_uri
                )
                text = Path(local).read_text()
        except (MlflowException, OSError) as exc:
            raise InputError(f"{what} {run_id}: cannot read it ({str(exc).splitlines()[0]}).") from exc
        return dict(run.data.metrics), text

    def download_model(self, model_uri: str, into: str) -> str:
        """A logged model's files (``runs:/…``, ``models:/name/N``, ``models:/name@alias``) in the local folder ``into``."""
        import mlflow.artifacts

        location = self._model_location(model_uri)
        return mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=into, tracking_uri=self.tracking_uri)

    def _model_location(self, model_uri: str) -> str:
        """Where a model's files are, looked up through this store's client: MLflow's own resolution
        of a ``runs:/`` or ``models:/`` URI reads a run's logged model from the process-wide URI."""
        ref = model_uri[len("models:/") :].strip("/") if model_uri.startswith("models:/") else ""
        if ref and "/" not in ref and "@" not in ref:  # models:/<logged model id>
            location = self.client.get_logged_model(ref).artifact_location
        elif ref:
            mv = registered_version(self.client, model_uri)
            location = self.client.get_model_version_download_uri(mv.name, mv.version)
        elif model_uri.startswith("runs:/"):
            location = self._run_model_location(model_uri)
        else:
            return model_uri
        return self._model_location(location) if location.startswith(("runs:/", "models:/")) else location

    def _run_model_location(self, model_uri: str) -> str:
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        run_id, path = RunsArtifactRepository.parse_runs_uri(model_uri)
        run = self.client.get_run(run_id)
        name, _, rest = (path or "").partition("/")
        token = None
        while name:  # a model logged by MLflow 3 is a logged model named by the path's first part
            page = self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'", page_token=token
            )
            for model in page:
                if model.source_run_id == run_id:
                    return model.artifact_location.rstrip("/") + (f"/{rest}" if rest else "")
            if not page.token:
                break
            token = page.token
        return run.info.artifact_uri.rstrip("/") + (f"/{path}" if path else "")  # else among the run's artifacts

    # the registry

    def describe_model(self, model_uri: str) -> dict[str, str]:
        """Registry name, version and source run of a ``models:/`` or ``runs:/`` URI, as tags."""
        from mlflow.exceptions import MlflowException

        try:
            return describe_model_uri(self.client, model_uri)
        except (MlflowException, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"--model-uri {model_uri}: cannot resolve it in the registry ({first}).") from exc

    def move_alias(self, challenger_uri: str, champion_uri: str, alias: str, run_id: str) -> tuple[str, str]:
        """Point ``alias`` of the champion's registered model at the challenger's version."""
        champion = self.describe_model(champion_uri)
        challenger = self.describe_model(challenger_uri)
        return move_registry_alias(self.client, champion, challenger, alias, run_id)


class MetricStream:
    """An epoch callback that logs metrics with ``step`` = epoch, a batch every ``every`` epochs."""

    def __init__(self, tracker: MlflowTracker, run_id: str, every: int = 25) -> None:
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


def _dataset_inputs(refs: list["DatasetRef"]) -> list[Any]:
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


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else repr(v) if not isinstance(v, (int, float)) else str(v)
    return s if len(s) <= 6000 else s[:5990] + "…"


# The flows' Prefect tasks: the adapter's methods, each taking the tracking URI (a plain string,
# shown in the UI and safe to send to another process) and making its adapter.


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


check_tracking_access_task = as_task(check_tracking_access, name="check-tracking-access")
create_run_task = as_task(create_run, name="create-mlflow-run", retries=3)
log_run_content_task = as_task(log_run_content, name="log-to-mlflow", retries=3)
log_evaluation_task = as_task(log_evaluation, name="log-to-mlflow", retries=3)
describe_model_task = as_task(describe_model, name="describe-model", retries=3)
move_alias_task = as_task(move_alias, name="move-alias", retries=3)
