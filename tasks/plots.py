"""The seed article's walk-through, drawn for any dataset (matplotlib figures, returned unsaved).

Row-level figures use a sample of rows spread over the dataset's files (all rows when the
dataset is small); the per-partition bar chart uses the exact per-partition table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from tasks.bce import row_losses_from_logits, row_losses_from_probabilities, sigmoid
from tasks.dataset import Dataset, scan_files
from tasks._prefect import as_task
from tasks.scoring import Scorer

_NEG, _POS = "#d62728", "#2ca02c"  # the seed's red and green


def sample_scores(dataset: Dataset, scorer: Scorer, max_rows: int = 5000, max_files: int = 10) -> pl.DataFrame:
    """Up to ``max_rows`` checked rows with their label ``y``, probability ``p`` and ``loss``.

    Rows are taken from the start of ``max_files`` files spread evenly over the dataset, so every
    part of a large dataset is represented without reading it all (a file's first rows cost the
    decoding of its first pages, which grow with its row groups: few files keep that small).
    """
    files = list(dataset.files)
    step = max(1, len(files) // max_files)
    chosen = files[::step][:max_files]
    per_file = max(1, max_rows // len(chosen))
    cols = [*scorer.features, *([scorer.column] if scorer.column else [])]
    lf = pl.concat([scan_files(dataset, [f]).head(per_file) for f in chosen])
    df = lf.select([*dict.fromkeys([*cols, dataset.label, *dataset.partition_by])]).collect()
    y = df.get_column(dataset.label).cast(pl.Float64).to_numpy()
    s = scorer.score_frame(df, dataset.text_features)
    if scorer.kind == "logit":
        p, loss = sigmoid(s), row_losses_from_logits(y, s)
    else:
        p, loss = s, row_losses_from_probabilities(y, s)
    return df.with_columns(pl.Series("y", y), pl.Series("score", s), pl.Series("p", p), pl.Series("loss", loss))


def _figure(**kw: Any):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kw)


def plot_sigmoid(x: np.ndarray, y: np.ndarray, coef: float, intercept: float, feature: str):
    """The seed's Figure 6: the fitted sigmoid over the points, coloured by class."""
    fig, ax = _figure(figsize=(7, 4))
    lo, hi = float(np.min(x)), float(np.max(x))
    pad = 0.1 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, 400)
    ax.plot(grid, sigmoid(coef * grid + intercept), color="0.3", label="σ(w·x + b)")
    ax.scatter(x[y == 0], y[y == 0], color=_NEG, label="class 0", zorder=3)
    ax.scatter(x[y == 1], y[y == 1], color=_POS, label="class 1", zorder=3)
    p = sigmoid(coef * x + intercept)
    ax.vlines(x, 0, p, colors=np.where(y == 1, _POS, _NEG), alpha=0.4)
    ax.set(xlabel=feature, ylabel="P(y = 1)", title="Fitted logistic regression")
    ax.legend(loc="center right")
    fig.tight_layout()
    return fig


def plot_true_class_probability(sample: pl.DataFrame):
    """Figures 8–10: the probability given to each row's true class, a histogram by class."""
    y = sample.get_column("y").to_numpy()
    p = sample.get_column("p").to_numpy()
    p_true = np.where(y == 1, p, 1 - p)
    fig, ax = _figure(figsize=(7, 4))
    bins = np.linspace(0, 1, 26)
    ax.hist(p_true[y == 1], bins=bins, color=_POS, alpha=0.6, label="class 1: p(y=1)")
    ax.hist(p_true[y == 0], bins=bins, color=_NEG, alpha=0.6, label="class 0: 1 − p(y=1)")
    ax.set(
        xlabel="probability of the true class",
        ylabel="rows",
        title=f"Probability of the true class ({len(y)} rows sampled)",
    )
    ax.legend()
    fig.tight_layout()
    return fig


def plot_log_loss_curve(sample: pl.DataFrame):
    """The seed's Figure 10: −log(p) against p, with each sampled row's loss on the curve."""
    y = sample.get_column("y").to_numpy()
    p = sample.get_column("p").to_numpy()
    p_true = np.clip(np.where(y == 1, p, 1 - p), 1e-300, 1.0)
    loss = sample.get_column("loss").to_numpy()
    fig, ax = _figure(figsize=(7, 4))
    grid = np.linspace(1e-3, 1, 500)
    ax.plot(grid, -np.log(grid), color="0.3", label="−log(p)")
    ax.scatter(p_true[y == 1], loss[y == 1], s=12, color=_POS, label="class 1 rows", zorder=3)
    ax.scatter(p_true[y == 0], loss[y == 0], s=12, color=_NEG, label="class 0 rows", zorder=3)
    ax.set(xlabel="probability of the true class", ylabel="loss", title="Per-row log loss", xlim=(0, 1.02))
    ax.legend()
    fig.tight_layout()
    return fig


def plot_partition_bce(table: pl.DataFrame, label_col: str, overall: float, max_bars: int = 60):
    """Per-partition BCE as bars (the worst ``max_bars`` when there are more), overall as a line."""
    t = table.sort("bce", descending=True).head(max_bars)
    labels = [v if len(v) <= 32 else v[:29] + "…" for v in t.get_column(label_col).cast(pl.String).to_list()]
    fig, ax = _figure(figsize=(max(6, 0.35 * len(labels) + 2), 4.5))
    ax.bar(range(len(labels)), t.get_column("bce").to_numpy(), color="#1f77b4")
    ax.axhline(overall, color="k", linestyle="--", label=f"overall {overall:.4f}")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    title = "BCE by partition" + (f" (worst {max_bars} of {table.height})" if table.height > max_bars else "")
    ax.set(ylabel="BCE (log loss)", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_reliability(sample: pl.DataFrame, n_bins: int = 10):
    """Reliability diagram: mean predicted probability against observed positive rate per bin."""
    y = sample.get_column("y").to_numpy()
    p = sample.get_column("p").to_numpy()
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    mean_p = np.bincount(idx, weights=p, minlength=n_bins)
    rate = np.bincount(idx, weights=y, minlength=n_bins)
    ok = counts > 0
    fig, (ax, ax2) = _figure(nrows=2, figsize=(6, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    ax.plot(mean_p[ok] / counts[ok], rate[ok] / counts[ok], "o-", color="#1f77b4", label="model")
    ax.set(ylabel="observed positive rate", title=f"Reliability diagram ({len(y)} rows sampled)")
    ax.legend()
    ax2.bar(edges[:-1], counts, width=1 / n_bins, align="edge", color="0.6")
    ax2.set(xlabel="predicted probability", ylabel="rows")
    fig.tight_layout()
    return fig


def make_figures(
    sample: pl.DataFrame,
    table: pl.DataFrame,
    overall_bce: float,
    features: tuple[str, ...],
    linear: tuple[float, float] | None,
    by_partition: bool,
) -> dict[str, Any]:
    """All evaluation figures by artifact name (``linear`` = (w, b) of a one-feature logit model)."""
    figs: dict[str, Any] = {
        "plots/true_class_probability.png": plot_true_class_probability(sample),
        "plots/log_loss_curve.png": plot_log_loss_curve(sample),
        "plots/reliability.png": plot_reliability(sample),
    }
    if by_partition:
        figs["plots/bce_by_partition.png"] = plot_partition_bce(table, "partition", overall_bce)
    if linear is not None and len(features) == 1:
        x = sample.get_column(features[0]).cast(pl.Float64).to_numpy()
        figs["plots/fitted_sigmoid.png"] = plot_sigmoid(x, sample.get_column("y").to_numpy(), linear[0], linear[1], features[0])
    return figs


sample_scores_task = as_task(sample_scores, name="sample-rows")
make_figures_task = as_task(make_figures, name="make-plots")
