"""The tracking adapter: :class:`MlflowTracker`, the one door to MLflow (runs, the registry, artifacts), on the
tracking URI it is given; :mod:`tasks.tracking.registry` and :mod:`tasks.tracking.lifecycle` run on its client.
MLflow's process-wide URI is set only in :meth:`MlflowTracker._fluent_scope`, around ``log_model``.

A run is created only once every figure is computed, and ends FINISHED only when everything was
logged; if logging fails half-way it is ended FAILED, so a FINISHED run is always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

from tasks.errors import InputError, TrackingError
from tasks.redact import redact_text, redact_uri
from tasks.tracking.access import access_denied, default_store_uri
from tasks.tracking.content import RunContent
from tasks.tracking.entities import dataset_inputs, param_value
from tasks.tracking.lifecycle import (
    owner_tags,
    previous_attempt,
    request_workers,
    run_all,
    sqlite_path,
    store_lock,
)
from tasks.tracking.metric_stream import MetricStream
from tasks.tracking.registry import (
    describe_model_uri,
    model_location,
    record_registration,
)
from tasks.tracking.registry import move_alias as move_registry_alias
from tasks.tracking.run_files import files_written

# MLflow's UI opens an experiment in its GenAI view unless this tag says it is for model training
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def resolve_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store in the repo's ``mlflow/`` folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or default_store_uri()


def default_artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go in ``artifacts/`` beside the database file."""
    db = sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db is not None else None


class MlflowTracker:
    """MLflow at one tracking URI (its registry too): every call goes to that store, and only there.

    Public methods that write take the store's lock (:func:`tasks.tracking.lifecycle.store_lock`) once.
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
        return self.client.create_experiment(
            name,
            artifact_location=default_artifact_location(self.tracking_uri),
            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
        )

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> tuple[str, str]:
        """Create a RUNNING run in ``experiment``; returns (run id, experiment id)."""
        with store_lock(self.tracking_uri):
            return self._create_run(experiment, run_name, tags)

    def _create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> tuple[str, str]:
        experiment_id = self._ensure_experiment(experiment)
        return self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id, experiment_id

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
        with store_lock(self.tracking_uri), files_written(content) as files:
            self._log_content(run_id, experiment_id, content, files)

    def log_into_run(self, run_id: str, content: "RunContent", prefix: str = "") -> None:
        """Log ``content`` into a run someone else opened (MLflow's ``evaluate``, a notebook's ``start_run``) and
        leave it open: no model, no status, no description over theirs; its tables join those the run lists;
        ``prefix`` before every metric key."""
        import dataclasses

        with store_lock(self.tracking_uri):
            run = self.client.get_run(run_id)
            listed = json.loads(run.data.tags.get("mlflow.loggedArtifacts", "[]"))
            keep = "" if run.data.tags.get("mlflow.note.content") else content.description
            content = dataclasses.replace(
                content,
                model=None,
                metrics={prefix + k: v for k, v in {**content.metrics, **content.partition_metrics}.items()},
                partition_metrics={},
                description=keep,
            )
            with files_written(content) as files:
                calls = [
                    partial(
                        self._log_values, run_id, content, None, [t for t in listed if t["path"] not in content.tables]
                    )
                ]
                run_all(
                    calls + self._uploads(run.info.artifact_uri, files[0].result()), request_workers(self.tracking_uri)
                )

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
                raise access_denied(
                    self.tracking_uri, 403 if code == "PERMISSION_DENIED" or " 403 " in f" {exc} " else 401
                ) from None
            if type(exc).__name__ in {"MlflowException", "RestException"} or "requests" in type(exc).__module__:
                raise self._tracking_error(exc, content) from exc
            raise

    def _log_once(self, content: "RunContent") -> tuple[str, str]:
        """One experiment lookup, the searches for an earlier attempt (at once), the run, its content;
        its files are written meanwhile."""
        identity = {
            k: content.tags[k] for k in ("prefect.flow_run_id", "bce_eval.evaluation_key") if content.tags.get(k)
        }
        # SQLite: one writer at a time instead of "database is locked"
        with store_lock(self.tracking_uri), files_written(content) as files:
            experiment_id = self._ensure_experiment(content.experiment)
            existing = previous_attempt(self.client, experiment_id, identity, request_workers(self.tracking_uri))
            if existing is not None:
                return existing, experiment_id
            run = self.client.create_run(experiment_id, run_name=content.run_name, tags={**identity, **owner_tags()})
            self._log_content(run.info.run_id, experiment_id, content, files, run.info.artifact_uri)
        return run.info.run_id, experiment_id

    def _tracking_error(self, exc: BaseException, content: "RunContent") -> Exception:
        reason = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
        saved = f"; the results are saved in {content.results_path}" if content.results_path else ""
        return TrackingError(
            f"could not log to MLflow at {redact_uri(self.tracking_uri)} ({reason}){saved}; rerun the same command "
            "when the tracking server is back: cached partitions are reused, nothing is recomputed"
        )

    def _log_content(
        self,
        run_id: str,
        experiment_id: str,
        content: "RunContent",
        files: tuple[Future, Future | None],
        artifact_uri: str | None = None,
    ) -> None:
        """Everything in as few requests as MLflow allows, at once where they do not depend on each
        other: the run's files (MLflow's HTTP artifact store takes one per request), its inputs, and
        the model (:meth:`_log_model`; without one, the values); then the model READY and the run
        FINISHED. ``files`` are :func:`tasks.tracking.run_files.files_written`'s. Any error: the run FAILED."""
        from mlflow.entities import RunStatus

        made: list[Any] = []  # the logged model, once made
        try:
            artifact_uri = artifact_uri or self.client.get_run(run_id).info.artifact_uri
            # the longest chain first: the model's requests wait on its entry, the values on the model
            first = (
                partial(self._log_model, run_id, experiment_id, content, files[1], made)
                if content.model is not None
                else partial(self._log_values, run_id, content, None)
            )
            inputs = (
                [partial(self.client.log_inputs, run_id, datasets=dataset_inputs(content.datasets))]
                if content.datasets
                else []
            )
            run_all(
                [first, *inputs, *self._uploads(artifact_uri, files[0].result())], request_workers(self.tracking_uri)
            )
            if made:
                self.client.finalize_logged_model(made[0].model_id, "READY")
                self._register(run_id, made.pop().model_id, content.register)  # READY from here on, even if this fails
            # FINISHED in one request (set_terminated first reads the run back to print its URL; the CLI prints it)
            self.client._tracking_client.store.update_run_info(
                run_id, RunStatus.FINISHED, int(time.time() * 1000), None
            )
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            for model in made:
                self.client.finalize_logged_model(model.model_id, "FAILED")
            raise

    def _log_model(
        self, run_id: str, experiment_id: str, content: "RunContent", saved: Future, made: list[Any]
    ) -> None:
        """The logged model (appended to ``made``; first: the run's metrics name it, as ``log_model``
        links them), then at once the run's values, its output (the model) and the model's files."""
        from mlflow.entities import LoggedModelOutput
        from mlflow.tracking.context import registry

        model = self.client.create_logged_model(
            experiment_id,
            name="model",
            source_run_id=run_id,
            tags=registry.resolve_tags(),
            params={k: param_value(v) for k, v in content.params.items()},
        )
        made.append(model)
        folder, entry = saved.result()
        entry.artifact_path, entry.model_uuid, entry.run_id, entry.model_id = (
            model.artifact_location,
            model.model_id,
            run_id,
            model.model_id,
        )
        entry.save(str(folder / "MLmodel"))  # what log_model writes: the model's ids in its MLmodel
        calls = [
            partial(self._log_values, run_id, content, model.model_id),
            partial(self.client.log_outputs, run_id, [LoggedModelOutput(model.model_id, step=0)]),
        ]
        run_all(calls + self._uploads(model.artifact_location, folder), request_workers(self.tracking_uri))

    def _log_values(
        self, run_id: str, content: "RunContent", model_id: str | None, listed: list[dict[str, str]] | None = None
    ) -> None:
        """Metrics (of the run's model too), params and tags: one ``log_batch`` (MLflow's client
        splits it only past 1000 metrics, 100 params or 100 tags)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        params = [Param(k, param_value(v)) for k, v in content.params.items()]
        metrics = [
            Metric(k, float(v), now, 0, model_id=model_id)
            for k, v in {**content.metrics, **content.partition_metrics}.items()
        ]
        tags = {**content.tags, **({"mlflow.note.content": content.description} if content.description else {})}
        if content.tables:  # the tag log_table sets: the UI lists them as the run's tables
            tags["mlflow.loggedArtifacts"] = json.dumps(
                [*(listed or []), *({"path": name, "type": "table"} for name in content.tables)]
            )
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items()])

    def _uploads(self, artifact_uri: str, folder: Path) -> list[Callable[[], Any]]:
        """One upload per file under ``folder``, to the same path under ``artifact_uri`` (no lookup of the URI)."""
        from mlflow.store.artifact.artifact_repository_registry import (
            get_artifact_repository,
        )

        repo = get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return [
            partial(repo.log_artifact, str(p), p.parent.relative_to(folder).as_posix() if p.parent != folder else None)
            for p in files
        ]

    def _register(self, run_id: str, model_id: str, register: tuple[str, str | None] | None) -> None:
        """A new version of the registered model (as ``log_model`` registers it), its alias and the run's tags."""
        if register is None:
            return
        import mlflow

        name, alias = register
        with self._fluent_scope():
            version = mlflow.register_model(f"models:/{model_id}", name, await_registration_for=0).version
        record_registration(self.client, run_id, name, str(version), alias)

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
        """A logged model's files (``runs:/…``, ``models:/name/N``, ``models:/name@alias``) in the local folder
        ``into``."""
        import mlflow.artifacts
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        if model_uri.startswith("runs:/"):
            RunsArtifactRepository.parse_runs_uri(model_uri)  # MLflow's check of its form (its error says the form)
        with store_lock(self.tracking_uri):  # a fresh SQLite store: its first migrations, once (see describe_model)
            location = model_location(self.client, model_uri)
        return mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=into, tracking_uri=self.tracking_uri)

    # the registry

    def describe_model(self, model_uri: str) -> dict[str, str]:
        """Registry name, version and source run of a ``models:/`` or ``runs:/`` URI, as tags."""
        from mlflow.exceptions import MlflowException

        try:
            # the CLI's helper process describes the model while the flow does: on a fresh SQLite store
            # both would run its first migrations at once ("No such index"); one at a time instead
            with store_lock(self.tracking_uri):
                return describe_model_uri(self.client, model_uri)
        except (MlflowException, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"--model-uri {model_uri}: cannot resolve it in the registry ({first}).") from exc

    def move_alias(self, challenger_uri: str, champion_uri: str, alias: str, run_id: str) -> tuple[str, str]:
        """Point ``alias`` of the champion's registered model at the challenger's version."""
        champion = self.describe_model(champion_uri)
        challenger = self.describe_model(challenger_uri)
        return move_registry_alias(self.client, champion, challenger, alias, run_id)
