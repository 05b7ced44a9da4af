"""An exact streaming fit of scikit-learn's ``LogisticRegression`` for data larger than memory.

It minimises the same penalised objective as scikit-learn's L2 logistic regression,

    f(w, b) = C · Σᵢ [softplus(zᵢ) − yᵢ·zᵢ] + ½‖w‖²,     zᵢ = xᵢ·w + b   (the intercept is not penalised)

with L-BFGS from SciPy. Each evaluation of f and its gradient

    ∂f/∂w = C · Σᵢ (σ(zᵢ) − yᵢ)·xᵢ + w,     ∂f/∂b = C · Σᵢ (σ(zᵢ) − yᵢ)

is accumulated chunk by chunk (one pass over the data per L-BFGS step, as distributed engines fit
it), so memory is bounded by the chunk size, not by the data. The result is a fitted
``LogisticRegression`` that scores, logs and registers like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import polars as pl

from tasks.data.dataset import Dataset, scan_files
from tasks.errors import InputError


def _batches(dataset: Dataset, chunk_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for files in group_files_by_rows(dataset, chunk_rows):
        # a row whose label has not arrived (null) is no training example
        df = scan_files(dataset, files).select([*dataset.features, dataset.label]).drop_nulls(dataset.label).collect()
        X = df.select(pl.col(c).cast(pl.Float64) for c in dataset.features).to_numpy()
        y = df.get_column(dataset.label).cast(pl.Float64).to_numpy()
        yield X, y


def group_files_by_rows(dataset: Dataset, chunk_rows: int) -> list[list[Any]]:
    """Files in groups of about ``chunk_rows`` rows (partitions may be split: the fit does not care)."""
    groups: list[list[Any]] = [[]]
    rows = 0
    for f in dataset.files:
        if groups[-1] and rows + f.num_rows > chunk_rows:
            groups.append([])
            rows = 0
        groups[-1].append(f)
        rows += f.num_rows
    return groups


def loss_and_gradient(
    params: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], C: float
) -> tuple[float, np.ndarray]:
    """The penalised objective and its gradient, summed over ``batches`` of (X, y)."""
    w, b = params[:-1], params[-1]
    total = 0.0
    grad = np.zeros_like(params)
    for X, y in batches:
        z = X @ w + b
        total += float(np.sum(np.logaddexp(0.0, z) - y * z))
        r = 0.5 * (1.0 + np.tanh(0.5 * z)) - y  # σ(z) − y, without overflow
        grad[:-1] += X.T @ r
        grad[-1] += r.sum()
    value = C * total + 0.5 * float(w @ w)
    grad *= C
    grad[:-1] += w
    return value, grad


def fit_logistic_streaming(
    dataset: Dataset,
    C: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-10,
    chunk_rows: int = 1_000_000,
    batches: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Any:
    """Fit L2 logistic regression by L-BFGS over gradients accumulated chunk by chunk.

    ``batches`` (in-memory (X, y) pairs) replaces the dataset scan, for tests. Labels are checked
    as they stream (0/1 only, finite features); both classes must occur.
    """
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression

    def stream() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        return batches if batches is not None else _batches(dataset, chunk_rows)

    n_pos = n = 0
    for X, y in stream():
        if not np.all(np.isfinite(X)):
            raise InputError(
                f"{dataset.root}: a feature has a null or non-finite value; drop or impute such rows first."
            )
        if not np.all((y == 0) | (y == 1)):
            raise InputError(f"{dataset.root}: label column {dataset.label!r} has values other than 0/1.")
        n_pos += int(y.sum())
        n += y.size
    if n_pos in (0, n):
        raise InputError(f"{dataset.root}: the training data holds a single class; fitting needs both 0 and 1.")
    d = len(dataset.features)
    result = minimize(
        loss_and_gradient,
        np.zeros(d + 1),
        args=(_Replay(stream), C),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps, "maxcor": 10},
    )
    model = LogisticRegression(C=C, max_iter=max_iter, tol=tol)
    model.coef_ = result.x[:-1].reshape(1, -1)
    model.intercept_ = result.x[-1:].copy()
    model.classes_ = np.array([0, 1])
    model.n_features_in_ = d
    model.n_iter_ = np.array([result.nit])
    return model


class _Replay:
    """An iterable that re-reads the data on every pass (L-BFGS asks for many)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter(self.stream())
