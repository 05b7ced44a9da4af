"""Binary cross-entropy, exact: from logits without clipping, from probabilities with a stated rule.

The one definition of the per-row loss. Every figure comes from it: the compiled pass
(:mod:`tasks.metrics.kernels` reads the terms of these formulas that numpy computes for a whole
batch), the audit, the comparison and the sampled rows of the plots; a test checks each of them
against these functions bit for bit.

For a label y in {0, 1} and a logit z (the model's decision function), the per-row loss is

    loss(z, y) = -[y log σ(z) + (1 - y) log(1 - σ(z))]
               = max(z, 0) - z·y + log1p(exp(-|z|))

The second form never overflows and never rounds σ(z) to 0 or 1, so a confident wrong prediction
costs its true loss (z = -40 with y = 1 costs 40, not sklearn's clipped 36.04).

Models without a decision function only give probabilities p. Then
``loss = -log(p)`` for y = 1 and ``-log1p(-p)`` for y = 0, with p first clipped to
``[eps, 1 - eps]``, ``eps = np.finfo(np.float64).eps`` (2.22e-16): the same rule as
``sklearn.metrics.log_loss``, so the two agree to rounding. The cap is -log(eps) = 36.04.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

PROBA_EPS: float = float(np.finfo(np.float64).eps)


def _check_pair(y: np.ndarray, s: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y has {y.size} values but {what} has {s.size}; pass one {what} per label.")
    if y.size == 0:
        raise ValueError("no rows: BCE of an empty set is undefined; pass at least one row.")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"labels must be 0 or 1, found {y[bad][0]!r}; map the classes to 0/1 first.")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what} must be finite, found {s[~np.isfinite(s)][0]!r}.")
    return y, s


def row_losses_from_logits(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-row BCE from logits: ``max(z, 0) - z*y + log1p(exp(-|z|))`` (exact, stable)."""
    y, z = _check_pair(y, z, "z")
    return np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))


def row_losses_from_probabilities(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row BCE from probabilities of class 1, clipped to ``[eps, 1 - eps]`` like scikit-learn."""
    y, p = _check_pair(y, p, "p")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"probabilities must lie in [0, 1], found {p[(p < 0) | (p > 1)][0]!r}.")
    p = np.clip(p, PROBA_EPS, 1.0 - PROBA_EPS)
    return np.where(y == 1.0, -np.log(p), -np.log1p(-p))


def compute_bce(y: np.ndarray, z: np.ndarray) -> float:
    """Mean BCE over rows from logits z (see :func:`row_losses_from_logits`)."""
    return float(np.mean(row_losses_from_logits(y, z)))


def compute_bce_from_probabilities(y: np.ndarray, p: np.ndarray) -> float:
    """Mean BCE over rows from probabilities p (see :func:`row_losses_from_probabilities`)."""
    return float(np.mean(row_losses_from_probabilities(y, p)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + exp(-z)) without overflow warnings."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def row_losses(y: np.ndarray, scores: np.ndarray, kind: str) -> np.ndarray:
    """Per-row BCE of ``scores`` of either kind: a logit (exact) or a probability of class 1 (clipped like
    scikit-learn)."""
    return row_losses_from_logits(y, scores) if kind == "logit" else row_losses_from_probabilities(y, scores)


def frame_losses(frame: pl.DataFrame, scorer: Any, label: str, text_features: tuple[str, ...] = ()) -> pl.Series:
    """Each row's BCE under ``scorer`` (a :class:`tasks.models.scoring.Scorer`) on the rows of ``frame``."""
    y = frame.get_column(label).cast(pl.Float64).to_numpy()
    return pl.Series("loss", row_losses(y, scorer.score_frame(frame, text_features), scorer.kind))
