"""tasks/tracking/entities.py: a run's params and dataset inputs as MLflow's entities, read back
through MLflow's own parsers."""

from __future__ import annotations

import json

import pandas as pd

from tasks.tracking.content import DatasetRef
from tasks.tracking.entities import dataset_inputs, param_value


def test_a_param_is_text_within_mlflows_limit():
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert param_value("a,b") == "a,b" and param_value(3) == "3" and param_value(0.25) == "0.25"
    assert param_value({"C": 1.0}) == "{'C': 1.0}" and param_value(None) == "None"
    long = param_value("x" * 10_000)
    assert len(long) <= MAX_PARAM_VAL_LENGTH and long == "x" * 5990 + "…"
    assert param_value("y" * MAX_PARAM_VAL_LENGTH) == "y" * MAX_PARAM_VAL_LENGTH  # at the limit: whole


def test_a_dataset_input_names_its_source_digest_schema_and_role(tmp_path):
    from mlflow.types import Schema

    rows = pd.DataFrame({"f1": [0.5, 1.5], "region": ["north", "south"], "label": [0, 1]})
    refs = [
        DatasetRef(str(tmp_path / "events"), "events", "d" * 40, rows, "evaluation"),
        DatasetRef(str(tmp_path / "train.parquet"), "train", "e" * 32, None, "training"),
    ]
    first, second = dataset_inputs(refs)
    assert first.dataset.name == "events" and first.dataset.digest == "d" * 36  # MLflow keeps 36 characters
    assert json.loads(first.dataset.source)["uri"] == str(tmp_path / "events")
    schema = Schema.from_json(json.dumps(json.loads(first.dataset.schema)["mlflow_colspec"]))
    assert schema.input_names() == ["f1", "region", "label"]
    assert [t.name for t in schema.input_types()] == ["double", "string", "long"]  # as the rows' columns hold
    assert [(t.key, t.value) for t in first.tags] == [("mlflow.data.context", "evaluation")]
    assert second.dataset.name == "train" and second.dataset.schema is None
    assert [(t.key, t.value) for t in second.tags] == [("mlflow.data.context", "training")]
