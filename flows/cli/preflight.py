"""What the CLI checks before the flow runs: at once, while the Prefect server starts (a typo in a
path, the options, the local footers), and before ``serve`` (everything a scheduled run would refuse)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from flows.cli.parser import evaluate_settings

if TYPE_CHECKING:
    from flows.settings import EvaluateSettings
    from tasks.data.dataset import DatasetFiles


def check_serve(settings: "EvaluateSettings") -> str:
    """What every scheduled run would refuse, refused now; returns a line describing what was checked.

    The same calls the flow makes before reading any data: the model loads and is a binary 0/1
    classifier taking the features, the baseline run is an evaluation, and the data's footers have
    the columns and partitions (the date window is taken up to now). Raises :class:`InputError`.
    """
    from tasks.data.dataset import discover_dataset
    from tasks.models.loading import check_model_output, load_model
    from tasks.tracking.adapter import resolve_tracking_uri

    features = list(settings.features)
    loaded = None
    if settings.model_uri:
        loaded = load_model(settings.model_uri, resolve_tracking_uri(), settings.score_kind)
        features = loaded.features(features)
    dataset = discover_dataset(
        settings.data,
        settings.label,
        features,
        settings.partition_by,
        [settings.score_col] if settings.score_col else [],
        settings.where,
        settings.date_key,
        settings.window_days,
        model_types=loaded.inputs.by_name() if loaded and loaded.inputs else None,
        model_name=settings.model_uri or "",
    )
    if loaded is not None:
        loaded.scorer(dataset.features, dataset.text_features)  # the model takes these columns
        check_model_output(loaded, dataset)
    run = settings.gates.baseline_run_id
    if run and run != "latest":  # latest: the run before each night's, read by that night's run
        from tasks.review.results import baseline_from
        from tasks.tracking.history import read_run_table

        baseline_from(run, *read_run_table(resolve_tracking_uri(), run, "bce_by_partition.json", "--baseline-run"))
    by = f", partitioned by {','.join(dataset.partition_by)}" if dataset.partition_by else ""
    return (
        f"checked {settings.data}: {dataset.num_rows:,} rows in {len(dataset.files)} file(s){by}; "
        f"label {dataset.label!r}, "
        + (f"features {','.join(dataset.features)}" if dataset.features else f"scores {settings.score_col!r}")
    )


def check_before_server(args: argparse.Namespace, server_url: str | None) -> None:
    """Say at once what starts, then check what needs no server while the Prefect server starts.

    A typo in a local path or in the form of a model URI is reported within a fraction of a second
    (before pydantic, Polars, MLflow or Prefect are imported); then the options against each other,
    and the local data's footers against the label and feature columns (their types too when no
    model is given: a model's signature may take text, and the flow checks it once the model is
    loaded). Object storage and what a model URI names are checked by the flow.
    """
    from tasks.redact import redact_uri

    data = getattr(args, "data", None)
    if server_url:
        print(
            (
                f"bce-eval {args.command}: {'checking ' + data + ', ' if data else ''}using the Prefect server at "
                f"{redact_uri(server_url)}"
            ),
            flush=True,
        )
    else:
        print(
            (
                f"bce-eval {args.command}: {'checking ' + data + ' while ' if data else ''}a temporary Prefect server "
                "starts"
            ),
            flush=True,
        )
    for option, uri in _model_uris(args):
        check_model_uri(uri, option)
    if not data or "://" in data:
        return
    from tasks.data.storage import LocalStorage

    LocalStorage().entry(data)  # InputError naming the path
    if args.command != "evaluate":  # serve: check_serve reads the footers (and the model) itself
        return
    settings = evaluate_settings(args)
    if settings.model_uri and not settings.features:
        return  # the columns come from the model's signature: the flow checks them once it is loaded
    extra = [settings.score_col] if settings.score_col else []
    from tasks.data.dataset import check_dataset, read_dataset_files

    listing = read_dataset_files(settings.data, settings.where, settings.date_key, settings.window_days)
    if settings.model_uri:
        _check_columns_exist(listing, settings.label, settings.features, settings.partition_by, extra)
    else:
        check_dataset(listing, settings.label, settings.features, settings.partition_by, extra)
    print(
        f"  {len(listing.files)} file(s), {sum(f.num_rows for f in listing.files):,} rows; loading the libraries",
        flush=True,
    )


def _check_columns_exist(
    listing: "DatasetFiles", label: str, features: list[str], partition_by: list[str], extra: list[str]
) -> None:
    """The label, score and partition columns as :func:`tasks.data.dataset.check_dataset` checks them, and
    that the feature columns exist: which of them may be text is the model's signature's to say."""
    from tasks.data.column_types import check_columns
    from tasks.errors import InputError

    available = set(listing.ref_schema.names) | set(listing.hive_keys)
    for col in features:
        if col not in available:
            raise InputError(f"{listing.ref_file}: no feature column {col!r}; columns are {sorted(available)}.")
    parts = tuple(partition_by) if partition_by else listing.hive_keys
    check_columns(listing.ref_file, listing.ref_schema, listing.hive_keys, label, (), tuple(extra), parts)


def _model_uris(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(option, model URI) of each model the command names."""
    if args.command == "compare":
        return [("--champion", args.champion), ("--challenger", args.challenger)]
    return [("--model-uri", args.model_uri)] if getattr(args, "model_uri", None) else []


#: the stores MLflow downloads a model's folder from (mlflow.store.artifact.artifact_repository_registry)
_ARTIFACT_SCHEMES = {
    "file",
    "s3",
    "r2",
    "b2",
    "gs",
    "wasbs",
    "abfss",
    "ftp",
    "sftp",
    "dbfs",
    "hdfs",
    "viewfs",
    "http",
    "https",
    "mlflow-artifacts",
}
_MODELS_FORMS = "models:/<name>/<version>, models:/<name>@<alias> or models:/<model_id>"
_RUNS_FORM = "runs:/<run_id>/<artifact path> (for example runs:/<run_id>/model)"


def check_model_uri(uri: str, option: str) -> None:
    """``uri`` has a form MLflow loads a model from; raises :class:`InputError` naming it and the form to use.

    The forms MLflow parses (``mlflow.store.artifact.utils.models._parse_model_uri``,
    ``RunsArtifactRepository.parse_runs_uri``) and the artifact stores it has a repository for,
    read without importing MLflow. Whether the URI names a model is the flow's to find out.
    """
    from urllib.parse import urlparse

    from tasks.errors import InputError

    parsed = urlparse(uri, allow_fragments=False)  # the scheme comes lower-cased, as MLflow compares it
    scheme, path = parsed.scheme, parsed.path
    other_host = parsed.netloc and not parsed.netloc.endswith(
        "databricks"
    )  # models://profile@databricks/...: Databricks' own
    if not uri.strip():
        raise InputError(
            f"{option} is empty; pass a model URI: {_MODELS_FORMS}, {_RUNS_FORM}, or the model folder's path or URL."
        )
    if scheme == "models":
        if other_host or not _models_path(path):
            raise InputError(f"{option} {uri}: not a models:/ URI MLflow reads; write {_MODELS_FORMS}.")
    elif scheme == "runs":
        if other_host or not path.startswith("/") or not path[1:].split("/")[0]:
            raise InputError(f"{option} {uri}: not a runs:/ URI MLflow reads; write {_RUNS_FORM}.")
    elif (
        len(scheme) > 1 and scheme not in _ARTIFACT_SCHEMES and scheme not in _plugin_schemes()
    ):  # one letter: a Windows drive
        if f"{scheme}s" in ("models", "runs"):
            raise InputError(
                f"{option} {uri}: it must start with {scheme}s:/ (not {scheme}:/): "
                f"{_MODELS_FORMS if scheme == 'model' else _RUNS_FORM}."
            )
        raise InputError(
            f"{option} {uri}: MLflow loads no model from '{scheme}:' URIs; pass {_MODELS_FORMS}, {_RUNS_FORM}, "
            f"or the model folder's path or URL ({', '.join(sorted(_ARTIFACT_SCHEMES))})."
        )


def _models_path(path: str) -> bool:
    """A models:/ URI's path as MLflow parses it: ``/<name>/<version, stage or latest>``, ``/<name>@<alias>``
    or ``/<model_id>`` (and a name, which MLflow would look up even when empty)."""
    parts = path.lstrip("/").split("/")
    if not path.startswith("/") or len(parts) > 2 or not parts[0].strip():
        return False
    if len(parts) == 2:
        return bool(parts[1].strip())
    name, at, alias = parts[0].rpartition("@")
    return not at or bool(name.strip() and alias.strip())


def _plugin_schemes() -> set[str]:
    """URI schemes of the artifact repositories MLflow plugins add (their entry points)."""
    from importlib.metadata import entry_points

    return {e.name for e in entry_points(group="mlflow.artifact_repository")}
