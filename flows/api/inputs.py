"""What a notebook or MLflow hands the Python API, made into what the pipeline reads: data as Parquet
on disk (frames are written once to a temporary folder: the CLI's own scan then reads them, so the
numbers are the CLI's), and the model as a URI, a column of scores or an object."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from tasks.errors import InputError

#: the file a frame is written to, inside a folder named after the data
FRAME_FILE = "part-0.parquet"


def as_polars(data: Any) -> pl.DataFrame | pl.LazyFrame | None:
    """``data`` as a Polars frame: a Polars or pandas frame, or an ``mlflow.data`` dataset of one; None for a path."""
    if isinstance(data, (str, os.PathLike)):
        return None
    if isinstance(data, (pl.DataFrame, pl.LazyFrame)):
        return data
    frame = getattr(data, "df", None)  # mlflow.data's PandasDataset and PolarsDataset hold their frame here
    if frame is not None and not callable(frame):
        return as_polars(frame)
    if type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns"):
        return pl.from_pandas(data)
    raise InputError(
        f"data: a {type(data).__name__} is not a dataset bce-eval reads; pass a path to Parquet, a Polars DataFrame or "
        "LazyFrame, a pandas DataFrame, or an mlflow.data dataset of one."
    )


@contextmanager
def parquet_path(data: Any, name: str | None = None) -> Iterator[str]:
    """A path to Parquet holding ``data``: the path itself, or a temporary folder ``name`` removed afterwards."""
    frame = as_polars(data)
    if frame is None:
        yield os.fspath(data)
        return
    with tempfile.TemporaryDirectory(prefix="bce-eval-") as tmp:
        folder = Path(tmp) / (name or "frame")
        folder.mkdir()
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(folder / FRAME_FILE)  # streamed: a lazy query is never collected whole
        else:
            frame.write_parquet(folder / FRAME_FILE)
        try:
            yield str(folder)
        except InputError as exc:  # the user gave a frame: name it, not the temporary file it was written to
            what = f"data (the {type(data).__name__})"
            raise InputError(str(exc).replace(str(folder / FRAME_FILE), what).replace(str(folder), what)) from None


@dataclass(frozen=True)
class ModelChoice:
    """What is evaluated: a model URI, a column of stored scores, a model object, or a fitted LogisticRegression."""

    kind: Literal["uri", "column", "object", "fit"]
    value: Any = None


def choose_model(model: Any) -> ModelChoice:
    """``model`` as the API takes it: None (fit), a URI (``models:/``, ``runs:/``, a path that exists), a column's name
    (stored scores), or a fitted estimator, booster or ``PyFuncModel``."""
    if model is None:
        return ModelChoice("fit")
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if ":/" in text or os.path.exists(text):
            return ModelChoice("uri", text)
        return ModelChoice("column", text)
    return ModelChoice("object", model)
