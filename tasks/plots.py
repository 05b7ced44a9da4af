"""The seed article's walk-through, drawn for any dataset (matplotlib figures, returned unsaved).

Row-level figures use a seeded uniform random sample of rows across all partitions (all rows
when the dataset is small) and say so; the forest plot uses the exact per-partition table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.bce import row_losses_from_logits, row_losses_from_probabilities, sigmoid
from tasks.dataset import Dataset, scan_files
from tasks._prefect import as_task
from tasks.scoring import Scorer

_NEG, _POS = "#d62728", "#2ca02c"  # the seed's red and green


def sample_scores(dataset: Dataset, scorer: Scorer, max_rows: int = 5000, max_files: int = 10, seed: int = 0) -> pl.DataFrame:
    """A seeded uniform random sample of up to ``max_rows`` rows with their label ``y``, probability
    ``p`` and ``loss`` (every row when the dataset has no more).

    Two stages, so a large dataset is not read whole: ``max_files`` draws of files with probability
    proportional to their rows (systematic, from a seeded random start), then the same number of
    rows drawn uniformly within each draw. Every row of every partition has the same chance to be
    in the sample (short of a file too small for its draws, which gives all its rows).
    """
    files = list(dataset.files)
    counts = np.array([f.num_rows for f in files], dtype=np.float64)
    cols = [*scorer.features, *([scorer.column] if scorer.column else [])]
    wanted = [*dict.fromkeys([*cols, dataset.label, *dataset.partition_by])]
    if counts.sum() <= max_rows:
        df = scan_files(dataset, files).select(wanted).collect()
    else:
        rng = np.random.default_rng(seed)
        # systematic PPS: points every N/k rows from a random start; a file gets one draw per point in it
        step = counts.sum() / max_files
        points = rng.uniform(0, step) + step * np.arange(max_files)
        draws = np.bincount(np.searchsorted(np.cumsum(counts), points, side="right"), minlength=len(files))
        per_draw = max(1, max_rows // max_files)
        parts = []
        for i in np.flatnonzero(draws):
            n = int(counts[i])
            rows = np.sort(rng.choice(n, size=min(n, per_draw * int(draws[i])), replace=False))
            index = pl.Series("_row", rows, dtype=pl.UInt32)
            parts.append(scan_files(dataset, [files[i]]).with_row_index("_row").filter(pl.col("_row").is_in(index)).select(wanted))
        df = pl.concat(parts).collect()
    y = df.get_column(dataset.label).cast(pl.Float64).to_numpy()
    s = scorer.score_frame(df, dataset.text_features)
    if scorer.kind == "logit":
        p, loss = sigmoid(s), row_losses_from_logits(y, s)
    else:
        p, loss = s, row_losses_from_probabilities(y, s)
    return df.with_columns(pl.Series("y", y), pl.Series("score", s), pl.Series("p", p), pl.Series("loss", loss))


def describe_sample(sample_rows: int, total_rows: int) -> str:
    """Which rows the row-level figures show, in words."""
    if sample_rows >= total_rows:
        return f"all {total_rows:,} rows"
    return f"a uniform random sample of {sample_rows:,} of {total_rows:,} rows across all partitions (seed 0)"


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG, encoded once: the report embeds the same bytes the run logs as its artifact."""
    cached = getattr(fig, "_bce_eval_png", None)
    if cached is None:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        cached = fig._bce_eval_png = buf.getvalue()
    return cached


def write_pngs(figures: dict[str, Any], folder: Path) -> None:
    """Each figure's PNG (:func:`png_bytes`) at its artifact path under ``folder``."""
    for name, fig in figures.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(fig))


def new_figure(**kw: Any):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kw)


def plot_sigmoid(x: np.ndarray, y: np.ndarray, coef: float, intercept: float, feature: str):
    """The seed's Figure 6: the fitted sigmoid over the points, coloured by class."""
    fig, ax = new_figure(figsize=(7, 4))
    lo, hi = float(np.min(x)), float(np.max(x))
    pad = 0.1 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, 400)
    ax.plot(grid, sigmoid(coef * grid + intercept), color="0.3", label="σ(w·x + b)")
    ax.scatter(x[y == 0], y[y == 0], color=_NEG, label="class 0", zorder=3)
    ax.scatter(x[y == 1], y[y == 1], color=_POS, label="class 1", zorder=3)
    p = sigmoid(coef * x + intercept)
    # each point's line is the probability of its true class: 0 → p for class 1, p → 1 for class 0
    ax.vlines(x, np.where(y == 1, 0, p), np.where(y == 1, p, 1), colors=np.where(y == 1, _POS, _NEG), alpha=0.4)
    ax.set(xlabel=feature, ylabel="P(y = 1)", title="Fitted logistic regression")
    ax.legend(loc="center right")
    fig.tight_layout()
    return fig


def _p_true(sample: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = sample.get_column("y").to_numpy()
    p = sample.get_column("p").to_numpy()
    return y, np.where(y == 1, p, 1 - p), sample.get_column("loss").to_numpy()


def plot_true_class_probability(sample: pl.DataFrame, shown: str = "", max_bars: int = 300):
    """Figures 8–10: each row's probability of its true class, one panel per class.

    Up to ``max_bars`` rows, as the article draws them: one bar per row (sorted), and below, the
    same rows' losses −log(p) as bars. Beyond that, the density of that probability per class.
    """
    y, p_true, loss = _p_true(sample)
    small = len(y) <= max_bars
    fig, axes = new_figure(nrows=2 if small else 1, ncols=2, figsize=(10, 7 if small else 4), squeeze=False)
    for col, cls, color in ((0, 1, _POS), (1, 0, _NEG)):
        order = np.argsort(p_true[y == cls])
        v, lv = p_true[y == cls][order], loss[y == cls][order]
        ax = axes[0][col]
        if small:
            ax.barh(np.arange(len(v)), v, color=color, height=0.8)
            ax.set(xlim=(0, 1), xlabel="probability of the true class", ylabel="row (sorted)")
            low = axes[1][col]
            low.barh(np.arange(len(lv)), lv, color=color, height=0.8, alpha=0.7)
            low.set(xlabel="loss −log(p)", ylabel="row (same order)", title=f"class {cls}: mean loss {lv.mean() if len(lv) else float('nan'):.4f}")
            for a in (ax, low):
                a.yaxis.get_major_locator().set_params(integer=True)  # rows are counted, not measured
        else:
            ax.hist(v, bins=np.linspace(0, 1, 41), density=True, color=color)
            ax.set(xlim=(0, 1), xlabel="probability of the true class", ylabel="density")
        ax.set_title(f"class {cls}: {len(v):,} rows")
    fig.suptitle(f"Probability of the true class ({shown or f'{len(y):,} rows'})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_log_loss_curve(sample: pl.DataFrame, shown: str = ""):
    """The seed's Figure 10: −log(p) against p, each row's loss on the curve, one panel per class."""
    y, p_true, loss = _p_true(sample)
    fig, axes = new_figure(ncols=2, figsize=(10, 4), sharey=True)
    grid = np.linspace(1e-3, 1, 500)
    for ax, cls, color in ((axes[0], 1, _POS), (axes[1], 0, _NEG)):
        ax.plot(grid, -np.log(grid), color="0.3", label="−log(p)")
        ax.scatter(p_true[y == cls], loss[y == cls], s=10, color=color, alpha=0.5, label=f"class {cls} rows", zorder=3)
        ax.set(xlabel="probability of the true class", xlim=(0, 1.02), title=f"class {cls}: mean loss "
               f"{loss[y == cls].mean() if (y == cls).any() else float('nan'):.4f}")
        ax.legend()
    axes[0].set_ylabel("loss")
    fig.suptitle(f"Per-row log loss ({shown or f'{len(y):,} rows'})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_partition_bce(table: pl.DataFrame, label_col: str, overall: float, max_rows: int = 60):
    """A forest plot: each partition's BCE with its 95% interval and row count, the overall as a line."""
    t = table.sort("bce", descending=True).head(max_rows).reverse()
    labels = [v if len(v) <= 32 else v[:29] + "…" for v in t.get_column(label_col).cast(pl.String).to_list()]
    bce = t.get_column("bce").to_numpy()
    low = t.get_column("bce_low").to_numpy() if "bce_low" in t.columns else bce
    high = t.get_column("bce_high").to_numpy() if "bce_high" in t.columns else bce
    fig, ax = new_figure(figsize=(8, max(3.0, 0.32 * len(labels) + 1.5)))
    pos = np.arange(len(labels))
    ax.errorbar(bce, pos, xerr=[bce - low, high - bce], fmt="o", color="#1f77b4", ecolor="0.4", capsize=3)
    ax.axvline(overall, color="k", linestyle="--", label=f"overall {overall:.4f}")
    rows = [f"{label}  (n={n:,})" for label, n in zip(labels, t.get_column("n_rows").to_list())]
    ax.set_yticks(pos, rows, fontsize=8)
    title = "BCE by partition, 95% intervals" + (f" (worst {max_rows} of {table.height})" if table.height > max_rows else "")
    ax.set(xlabel="BCE (log loss)", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_paired_differences(table: pl.DataFrame, label_col: str, overall: dict[str, Any], max_rows: int = 60):
    """Challenger − champion BCE per partition with paired 95% intervals, the overall difference as a band."""
    t = table.sort("bce_diff").head(max_rows).reverse()
    labels = [v if len(v) <= 32 else v[:29] + "…" for v in t.get_column(label_col).cast(pl.String).to_list()]
    d = t.get_column("bce_diff").to_numpy()
    low, high = t.get_column("bce_diff_low").to_numpy(), t.get_column("bce_diff_high").to_numpy()
    fig, ax = new_figure(figsize=(8, max(3.0, 0.32 * len(labels) + 1.5)))
    pos = np.arange(len(labels))
    ax.errorbar(d, pos, xerr=[d - low, high - d], fmt="o", color="#6a3d9a", ecolor="0.4", capsize=3)
    ax.axvline(0, color="0.5", linewidth=1)
    ax.axvspan(overall["bce_diff_low"], overall["bce_diff_high"], color="#6a3d9a", alpha=0.12,
               label=f"overall {overall['bce_diff']:+.5f} [{overall['bce_diff_low']:+.5f}, {overall['bce_diff_high']:+.5f}]")
    ax.set_yticks(pos, [f"{label}  (n={n:,})" for label, n in zip(labels, t.get_column("n_rows").to_list())], fontsize=8)
    ax.set(xlabel="challenger − champion BCE (negative: challenger better)", title="Paired BCE differences, 95% intervals")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability(sample: pl.DataFrame, n_bins: int = 10, shown: str = ""):
    """Reliability diagram: mean predicted probability against observed positive rate per bin."""
    y = sample.get_column("y").to_numpy()
    p = sample.get_column("p").to_numpy()
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    mean_p = np.bincount(idx, weights=p, minlength=n_bins)
    rate = np.bincount(idx, weights=y, minlength=n_bins)
    ok = counts > 0
    fig, (ax, ax2) = new_figure(nrows=2, figsize=(6, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    ax.plot(mean_p[ok] / counts[ok], rate[ok] / counts[ok], "o-", color="#1f77b4", label="model")
    ax.set(ylabel="observed positive rate")
    ax.set_title(f"Reliability diagram\n{shown or f'{len(y):,} rows'}", fontsize=9)
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
    total_rows: int = 0,
) -> dict[str, Any]:
    """All evaluation figures by artifact name (``linear`` = (w, b) of a one-feature logit model)."""
    shown = describe_sample(sample.height, total_rows)
    figs: dict[str, Any] = {
        "plots/true_class_probability.png": plot_true_class_probability(sample, shown),
        "plots/log_loss_curve.png": plot_log_loss_curve(sample, shown),
        "plots/reliability.png": plot_reliability(sample, shown=shown),
    }
    if by_partition:
        figs["plots/bce_by_partition.png"] = plot_partition_bce(table, "partition", overall_bce)
    if linear is not None and len(features) == 1:
        x = sample.get_column(features[0]).cast(pl.Float64).to_numpy()
        figs["plots/fitted_sigmoid.png"] = plot_sigmoid(x, sample.get_column("y").to_numpy(), linear[0], linear[1], features[0])
    return figs


sample_scores_task = as_task(sample_scores, name="sample-rows")
make_figures_task = as_task(make_figures, name="make-plots")
