"""The mission's classifier: scikit-learn's ``LogisticRegression``, fitted in memory on the rows
:mod:`tasks.data.training_data` collects (:mod:`tasks.models.fit_streaming` fits it without loading them)."""

from __future__ import annotations

from typing import Any

import numpy as np


def fit_logistic(X: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    """Fit scikit-learn's ``LogisticRegression`` with its defaults (overridden by ``params``)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**params).fit(X, y)


def fit_model(X: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> Any:
    """Fit the default classifier (scikit-learn's ``LogisticRegression``) on X, y."""
    return fit_logistic(X, y, **params)
