"""The seed's second experiment: a small MLP on two circles, trained epoch by epoch with BCE.

scikit-learn's ``MLPClassifier`` stands in for the seed's Keras model: one hidden layer of 50 ReLU
units, SGD with learning rate 0.01 and momentum 0.9 (not Nesterov), mini-batches of 32, no weight
penalty (Keras adds none), one ``partial_fit`` pass per epoch. Losses are the project's own BCE:
the network has no decision function, so BCE comes from its probabilities clipped at machine
epsilon (:func:`tasks.metrics.loss.compute_bce_from_probabilities`), which is what ``log_loss`` computes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.metrics.loss import compute_bce_from_probabilities

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainingResult:
    """The trained network, its per-epoch history, and how long training took."""

    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.history.items()}


def make_circles_data(
    n_samples: int = 1000, noise: float = 0.1, random_state: int = 1, n_train: int = 500
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The seed's data: ``make_circles(1000, noise=0.1, random_state=1)``, first 500 rows train."""
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=n_samples, noise=noise, random_state=random_state)
    df = pl.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y.astype(np.int64)})
    return df.head(n_train), df.slice(n_train)


def write_circles_data(train: pl.DataFrame, test: pl.DataFrame, folder: str | Path) -> tuple[str, str]:
    """Write the split as ``folder/train.parquet`` and ``folder/test.parquet``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train.write_parquet(folder / "train.parquet")
    test.write_parquet(folder / "test.parquet")
    return str(folder / "train.parquet"), str(folder / "test.parquet")


def make_mlp(random_state: int = 1) -> Any:
    """The seed's network, configured for one ``partial_fit`` pass per epoch."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=(50,),
        activation="relu",
        solver="sgd",
        learning_rate_init=0.01,
        momentum=0.9,
        nesterovs_momentum=False,
        batch_size=32,
        alpha=0.0,
        shuffle=True,
        random_state=random_state,
    )


def _scores(model: Any, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p = model.predict_proba(X)[:, 1]
    return compute_bce_from_probabilities(y, p), float(np.mean((p > 0.5) == (y == 1)))


def train_mlp(
    train: pl.DataFrame,
    test: pl.DataFrame,
    epochs: int = 200,
    random_state: int = 1,
    on_epoch: EpochCallback | None = None,
) -> TrainingResult:
    """Train the seed's MLP for ``epochs`` passes; after each, BCE and accuracy on both sets.

    ``on_epoch(epoch, metrics)`` is called after every epoch (epoch counts from 1) with
    ``train_loss``, ``val_loss``, ``train_accuracy`` and ``val_accuracy``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    Xtr, ytr = train.select("x1", "x2").to_numpy(), train.get_column("y").to_numpy()
    Xte, yte = test.select("x1", "x2").to_numpy(), test.get_column("y").to_numpy()
    model = make_mlp(random_state)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "train_accuracy": [], "val_accuracy": []}
    started = time.perf_counter()
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    for epoch in range(1, epochs + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.partial_fit(Xtr, ytr, classes=np.array([0, 1]))
        tl, ta = _scores(model, Xtr, ytr)
        vl, va = _scores(model, Xte, yte)
        row = {"train_loss": tl, "val_loss": vl, "train_accuracy": ta, "val_accuracy": va}
        for k, v in row.items():
            history[k].append(v)
        if on_epoch is not None:
            on_epoch(epoch, row)
    return TrainingResult(model, history, time.perf_counter() - started)


def plot_learning_curves(history: dict[str, list[float]]):
    """The seed's Figure 12: cross-entropy loss and accuracy against epoch, train and test."""
    from matplotlib.figure import Figure  # outside pyplot: no backend switched, nothing to close

    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig = Figure(figsize=(7, 7))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(epochs, history["train_loss"], label="train")
    ax1.plot(epochs, history["val_loss"], label="test")
    ax1.set(title="Cross-Entropy Loss", ylabel="BCE")
    ax1.legend()
    ax2.plot(epochs, history["train_accuracy"], label="train")
    ax2.plot(epochs, history["val_accuracy"], label="test")
    ax2.set(title="Classification Accuracy", xlabel="epoch", ylabel="accuracy")
    ax2.legend()
    fig.tight_layout()
    return fig


def seed_line(result: TrainingResult) -> str:
    """The seed's printout: ``Train: 0.840, Test: 0.853``."""
    return f"Train: {result.final['train_accuracy']:.3f}, Test: {result.final['val_accuracy']:.3f}"
