"""tasks/tracking/registry.py against a real local SQLite MLflow store (one built per module, copied
for each test so no test writes to another's): what ``models:/name/N``, ``models:/name@alias`` and
``runs:/`` URIs name, where their files are, and moving an alias."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks.errors import InputError
from tasks.tracking.registry import (
    describe_model_uri,
    model_location,
    move_alias,
    record_registration,
    registered_version,
)


class Store(NamedTuple):
    client: MlflowClient
    run_a: str
    run_b: str
    source_a: str
    source_b: str


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Store]:
    """A store with runs A and B, model ``churn`` version 1 from A (alias champion) and version 2 from B
    (alias challenger), and model ``other`` version 1 from B."""
    folder = tmp_path_factory.mktemp("registry")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=str(folder / "artifacts"))
    run_a, run_b = (client.create_run(exp).info.run_id for _ in range(2))
    source_a, source_b = str(folder / "models" / "a"), str(folder / "models" / "b")
    client.create_registered_model("churn")
    client.create_registered_model("other")
    assert client.create_model_version("churn", source_a, run_id=run_a).version == 1
    assert client.create_model_version("churn", source_b, run_id=run_b).version == 2
    client.create_model_version("other", source_b, run_id=run_b)
    client.set_registered_model_alias("churn", "champion", "1")
    client.set_registered_model_alias("churn", "challenger", "2")
    return folder / "mlflow.db", Store(client, run_a, run_b, source_a, source_b)


@pytest.fixture
def store(template: tuple[Path, Store], tmp_path: Path) -> Store:
    db, built = template
    shutil.copyfile(db, tmp_path / "mlflow.db")
    return built._replace(client=MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"))


def test_registered_version_of_a_number_and_of_an_alias(store: Store):
    one = registered_version(store.client, "models:/churn/1")
    assert (one.name, str(one.version), one.run_id) == ("churn", "1", store.run_a)
    champion = registered_version(store.client, "models:/churn@champion")
    challenger = registered_version(store.client, "models:/churn@challenger/")
    assert (str(champion.version), champion.run_id) == ("1", store.run_a)
    assert (str(challenger.version), challenger.run_id) == ("2", store.run_b)
    assert registered_version(store.client, f"runs:/{store.run_a}/model") is None
    assert registered_version(store.client, "/some/folder/model") is None


def test_describe_model_uri_of_each_form(store: Store):
    assert describe_model_uri(store.client, "models:/churn/2") == {
        "model_uri": "models:/churn/2",
        "model_name": "churn",
        "model_version": "2",
        "model_source_run_id": store.run_b,
    }
    assert describe_model_uri(store.client, "models:/churn@champion") == {
        "model_uri": "models:/churn@champion",
        "model_alias": "champion",
        "model_name": "churn",
        "model_version": "1",
        "model_source_run_id": store.run_a,
    }
    assert describe_model_uri(store.client, f"runs:/{store.run_b}/model") == {
        "model_uri": f"runs:/{store.run_b}/model",
        "model_source_run_id": store.run_b,
    }
    assert describe_model_uri(store.client, "/some/folder/model") == {"model_uri": "/some/folder/model"}


def test_a_uri_the_registry_does_not_resolve_raises_mlflows_error(store: Store):
    with pytest.raises(MlflowException):
        describe_model_uri(store.client, "models:/churn/9")
    with pytest.raises(MlflowException):
        describe_model_uri(store.client, "models:/churn@nobody")
    with pytest.raises(MlflowException):
        describe_model_uri(store.client, "models:/missing/1")


def test_model_location_of_each_form(store: Store):
    assert model_location(store.client, "models:/churn/1") == store.source_a
    assert model_location(store.client, "models:/churn@challenger") == store.source_b
    artifacts = store.client.get_run(store.run_a).info.artifact_uri
    # no logged model of that name: the path among the run's artifacts
    assert model_location(store.client, f"runs:/{store.run_a}/model") == f"{artifacts}/model"
    assert model_location(store.client, f"runs:/{store.run_a}") == artifacts
    assert model_location(store.client, "/some/folder/model") == "/some/folder/model"


def test_moving_the_champion_alias_to_the_challenger(store: Store):
    champion = describe_model_uri(store.client, "models:/churn@champion")
    challenger = describe_model_uri(store.client, "models:/churn/2")
    assert move_alias(store.client, champion, challenger, "champion", store.run_b) == ("churn", "2")
    assert str(store.client.get_model_version_by_alias("churn", "champion").version) == "2"
    assert store.client.get_run(store.run_b).data.tags["comparison.promoted"] == "churn v2 is now @champion"


@pytest.mark.parametrize("challenger_uri", ["models:/other/1", "RUN"])
def test_an_alias_moves_only_within_one_registered_model(store: Store, challenger_uri: str):
    uri = f"runs:/{store.run_b}/model" if challenger_uri == "RUN" else challenger_uri
    champion = describe_model_uri(store.client, "models:/churn@champion")
    with pytest.raises(InputError) as err:
        move_alias(store.client, champion, describe_model_uri(store.client, uri), "champion", store.run_b)
    assert str(err.value) == (
        f"--promote needs the challenger to be a version of the champion's registered model (churn); got {uri}."
    )
    assert str(store.client.get_model_version_by_alias("churn", "champion").version) == "1"  # unchanged


def test_record_registration_sets_the_alias_and_tags_the_run(store: Store):
    record_registration(store.client, store.run_b, "other", "1", "best")
    assert store.client.get_model_version_by_alias("other", "best").run_id == store.run_b
    tags = store.client.get_run(store.run_b).data.tags
    assert (tags["registered_model_name"], tags["registered_model_version"]) == ("other", "1")
    record_registration(store.client, store.run_a, "churn", "1", None)  # no alias: only the tags
    assert {k: str(v) for k, v in store.client.get_registered_model("churn").aliases.items()} == {
        "champion": "1",
        "challenger": "2",
    }
