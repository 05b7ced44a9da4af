"""The rows a fit needs, in memory, with the label and feature checks that name the file at fault."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from tasks.data.dataset import Dataset, scan_files
from tasks.errors import InputError


def collect_training_data(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix X (float64) and labels y (0/1) of the whole dataset's labelled rows, checked (a row whose
    label has not arrived, a null, is no training example)."""
    df = scan_files(dataset).select([*dataset.features, dataset.label]).drop_nulls(dataset.label).collect()
    if not df.height:
        raise InputError(
            f"{dataset.root}: no row has a label yet ({dataset.label!r} is null throughout), so there is nothing to "
            "fit on; evaluate a logged model (--model-uri) or stored scores (--score-col) instead."
        )
    y_series = df.get_column(dataset.label)
    try:
        check_label_values(y_series, dataset.root)
    except InputError:
        _raise_in_file(dataset, lambda part: check_label_values(part.get_column(dataset.label), ""))
        raise
    X = df.select(pl.col(c).cast(pl.Float64) for c in dataset.features).to_numpy()
    bad = ~np.isfinite(X)
    if bad.any():
        col = dataset.features[int(np.argwhere(bad)[0][1])]
        n_bad = int(bad[:, dataset.features.index(col)].sum())
        where = locate_file(
            dataset, (pl.col(col).is_null() | ~pl.col(col).cast(pl.Float64).is_finite()).fill_null(True)
        )
        raise InputError(
            f"{where}: feature column {col!r} has {n_bad} null or non-finite value(s) (NaN/inf); "
            "drop or impute such rows first."
        )
    y = y_series.cast(pl.Float64).to_numpy().astype(np.int64)
    if np.unique(y).size < 2:
        raise InputError(
            f"{dataset.root}: the training data holds a single class (all labels are {int(y[0])}); "
            "fitting needs both 0 and 1 (or pass --model-uri to evaluate an existing model)."
        )
    return X, y


def locate_file(dataset: Dataset, predicate: pl.Expr) -> str:
    """The first file with a row where ``predicate`` holds (for error messages; slow path only)."""
    for f in dataset.files:
        if scan_files(dataset, [f]).select(predicate.any()).collect().item():
            return f.path
    return dataset.root


def _raise_in_file(dataset: Dataset, check: "Callable[[pl.DataFrame], None]") -> None:
    # re-run a check file by file so the error names the file at fault
    for f in dataset.files:
        try:
            check(scan_files(dataset, [f]).collect())
        except InputError as exc:
            raise InputError(f"{f.path}{exc}") from None


def check_label_values(labels: pl.Series, where: str) -> None:
    """Raise :class:`InputError` unless every label is 0/1 (or a boolean) and not null."""
    name = labels.name
    nulls = labels.null_count()
    if nulls:
        raise InputError(f"{where}: label column {name!r} has {nulls} null value(s); labels must be 0 or 1.")
    if labels.dtype == pl.Boolean:
        return
    if labels.dtype.is_float():
        nonfinite = labels.filter(~labels.is_finite())
        if len(nonfinite):
            raise InputError(f"{where}: label column {name!r} has value {nonfinite[0]!r}; labels must be 0 or 1.")
    bad = labels.filter(~labels.cast(pl.Float64).is_in([0.0, 1.0]))
    if len(bad):
        raise InputError(
            f"{where}: label column {name!r} has value {bad[0]!r}; labels must be 0 or 1 "
            "(map the classes to 0/1 first)."
        )
