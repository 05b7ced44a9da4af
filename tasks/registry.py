"""The model registry: what a model URI names (registered name, version, source run), and aliases.

Plain functions over the ``MlflowClient`` that :class:`tasks.tracking.MlflowTracker` hands in, bound
to its tracking URI; this module imports no MLflow, and the adapter words MLflow's errors.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import InputError


def registered_version(client: Any, model_uri: str) -> Any | None:
    """The model version a ``models:/name/N`` or ``models:/name@alias`` URI names; None for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri[len("models:/") :].strip("/")
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
    elif model_uri.startswith("runs:/"):
        info["model_source_run_id"] = model_uri[len("runs:/") :].split("/", 1)[0]
    return info


def record_registration(client: Any, run_id: str, name: str, version: str, alias: str | None) -> None:
    """A new version ``version`` of ``name`` (registered with the run's model): set ``alias``, tag the run."""
    if alias:
        client.set_registered_model_alias(name, alias, version)
    client.set_tag(run_id, "registered_model_name", name)
    client.set_tag(run_id, "registered_model_version", str(version))


def move_alias(client: Any, champion: dict[str, str], challenger: dict[str, str], alias: str, run_id: str) -> tuple[str, str]:
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
