"""What a run holds, as MLflow's entities: its dataset inputs and its params' values."""

from __future__ import annotations

import warnings
from typing import Any

from tasks.tracking.content import DatasetRef


def dataset_inputs(refs: list[DatasetRef]) -> list[Any]:
    """A run's dataset inputs as MLflow's entities: source, name, digest, schema and role of each."""
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


def param_value(v: Any) -> str:
    """A param's value as MLflow stores it: text, cut to fit MLflow's limit (6000 characters)."""
    s = v if isinstance(v, str) else repr(v) if not isinstance(v, (int, float)) else str(v)
    return s if len(s) <= 6000 else s[:5990] + "…"
