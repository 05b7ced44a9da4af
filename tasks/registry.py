"""The model registry: what a model URI resolves to, new versions, and aliases."""

from __future__ import annotations

from tasks._prefect import as_task
from tasks.run_lifecycle import store_lock


def describe_model_uri(model_uri: str, tracking_uri: str) -> dict[str, str]:
    """Registry name, version and source run of a ``models:/`` or ``runs:/`` URI, as tags."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.errors import InputError

    info: dict[str, str] = {"model_uri": model_uri}
    client = mlflow.MlflowClient(tracking_uri)
    try:
        if model_uri.startswith("models:/"):
            ref = model_uri[len("models:/") :].strip("/")
            if "@" in ref:
                name, alias = ref.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
                info["model_alias"] = alias
            else:
                name, version = ref.split("/", 1)
                mv = client.get_model_version(name, version)
            info.update(model_name=mv.name, model_version=str(mv.version))
            if mv.run_id:
                info["model_source_run_id"] = mv.run_id
        elif model_uri.startswith("runs:/"):
            info["model_source_run_id"] = model_uri[len("runs:/") :].split("/", 1)[0]
    except (MlflowException, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--model-uri {model_uri}: cannot resolve it in the registry ({first}).") from exc
    return info


def register_model(model_uri: str, run_id: str, name: str, alias: str | None, tracking_uri: str) -> str:
    """Register the logged model as a new version of ``name`` (and set ``alias``); returns the version."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    with store_lock(tracking_uri):
        mv = mlflow.register_model(model_uri, name, await_registration_for=0)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    client.set_tag(run_id, "registered_model_name", name)
    client.set_tag(run_id, "registered_model_version", str(mv.version))
    return str(mv.version)


def move_alias(challenger_uri: str, champion_uri: str, alias: str, run_id: str, tracking_uri: str) -> tuple[str, str]:
    """Point ``alias`` of the champion's registered model at the challenger's version."""
    import mlflow

    from tasks.errors import InputError

    champ = describe_model_uri(champion_uri, tracking_uri)
    chall = describe_model_uri(challenger_uri, tracking_uri)
    if "model_version" not in chall or chall.get("model_name") != champ.get("model_name"):
        raise InputError(
            f"--promote needs the challenger to be a version of the champion's registered model "
            f"({champ.get('model_name', 'not registered')}); got {challenger_uri}."
        )
    client = mlflow.MlflowClient(tracking_uri)
    client.set_registered_model_alias(chall["model_name"], alias, chall["model_version"])
    client.set_tag(run_id, "comparison.promoted", f"{chall['model_name']} v{chall['model_version']} is now @{alias}")
    return chall["model_name"], chall["model_version"]


describe_model_task = as_task(describe_model_uri, name="describe-model", retries=3)
move_alias_task = as_task(move_alias, name="move-alias", retries=3)
