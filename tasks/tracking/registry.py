"""The model registry: what a model URI names (registered name, version, source run, where its files
are), and aliases.

Plain functions over the ``MlflowClient`` that :class:`tasks.tracking.adapter.MlflowTracker` hands in, bound
to its tracking URI; this module imports no MLflow, and the adapter words MLflow's errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from tasks.errors import InputError


def registered_version(client: Any, model_uri: str) -> Any | None:
    """The model version a ``models:/name/N`` or ``models:/name@alias`` URI names; None for other URIs (a
    ``models:/<logged model id>``, as MLflow 3's ``log_model`` returns, names no registered version)."""
    ref = _models_ref(model_uri)
    if not ref or _is_logged_model_id(ref):
        return None
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, version = ref.split("/", 1)
    return client.get_model_version(name, version)


def describe_model_uri(client: Any, model_uri: str) -> dict[str, str]:
    """Registry name, version and source run of a ``models:/`` or ``runs:/`` URI, as tags.

    Raises MLflow's error or ``ValueError`` when the registry does not resolve it.
    """
    info: dict[str, str] = {"model_uri": model_uri}
    mv = registered_version(client, model_uri)
    if mv is not None:
        ref = model_uri[len("models:/") :].strip("/")
        if "@" in ref:
            info["model_alias"] = ref.split("@", 1)[1]
        info.update(model_name=mv.name, model_version=str(mv.version))
        if mv.run_id:
            info["model_source_run_id"] = mv.run_id
    elif _is_logged_model_id(_models_ref(model_uri)):
        logged = client.get_logged_model(_models_ref(model_uri))
        info["model_id"] = logged.model_id
        if logged.source_run_id:
            info["model_source_run_id"] = logged.source_run_id
    elif model_uri.startswith("runs:/"):
        info["model_source_run_id"] = model_uri[len("runs:/") :].split("/", 1)[0]
    return info


def _models_ref(model_uri: str) -> str:
    """What follows ``models:/`` (``name/N``, ``name@alias``, a logged model's id); "" for other URIs."""
    return model_uri[len("models:/") :].strip("/") if model_uri.startswith("models:/") else ""


def _is_logged_model_id(ref: str) -> bool:
    return bool(ref) and "/" not in ref and "@" not in ref


def model_location(client: Any, model_uri: str) -> str:
    """Where a model's files are (``runs:/…``, ``models:/name/N``, ``models:/name@alias``, ``models:/<id>``),
    looked up through ``client``: MLflow's own resolution of such a URI reads a run's logged model from
    the process-wide URI."""
    ref = _models_ref(model_uri)
    if _is_logged_model_id(ref):  # models:/<logged model id>
        location = client.get_logged_model(ref).artifact_location
    elif ref:
        mv = registered_version(client, model_uri)
        location = client.get_model_version_download_uri(mv.name, mv.version)
    elif model_uri.startswith("runs:/"):
        location = _run_model_location(client, model_uri)
    else:
        return model_uri
    return model_location(client, location) if location.startswith(("runs:/", "models:/")) else location


def _run_model_location(client: Any, model_uri: str) -> str:
    run_id, _, path = urlparse(model_uri).path[1:].partition("/")  # as MLflow's RunsArtifactRepository.parse_runs_uri
    run = client.get_run(run_id)
    name, _, rest = path.partition("/")
    token = None
    while name:  # a model logged by MLflow 3 is a logged model named by the path's first part
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'", page_token=token
        )
        for model in page:
            if model.source_run_id == run_id:
                return model.artifact_location.rstrip("/") + (f"/{rest}" if rest else "")
        if not page.token:
            break
        token = page.token
    return run.info.artifact_uri.rstrip("/") + (f"/{path}" if path else "")  # else among the run's artifacts


def record_registration(client: Any, run_id: str, name: str, version: str, alias: str | None) -> None:
    """A new version ``version`` of ``name`` (registered with the run's model): set ``alias``, tag the run."""
    if alias:
        client.set_registered_model_alias(name, alias, version)
    client.set_tag(run_id, "registered_model_name", name)
    client.set_tag(run_id, "registered_model_version", str(version))


def move_alias(
    client: Any, champion: dict[str, str], challenger: dict[str, str], alias: str, run_id: str
) -> tuple[str, str]:
    """Point ``alias`` of the champion's registered model at the challenger's version.

    ``champion`` and ``challenger`` are :func:`describe_model_uri`'s tags of the two models.
    """
    if "model_version" not in challenger or challenger.get("model_name") != champion.get("model_name"):
        raise InputError(
            f"--promote needs the challenger to be a version of the champion's registered model "
            f"({champion.get('model_name', 'not registered')}); got {challenger['model_uri']}."
        )
    name, version = challenger["model_name"], challenger["model_version"]
    client.set_registered_model_alias(name, alias, version)
    client.set_tag(run_id, "comparison.promoted", f"{name} v{version} is now @{alias}")
    return name, version
