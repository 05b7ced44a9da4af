"""The seed article's walk-through, drawn for any dataset (matplotlib figures, returned unsaved).

Row-level figures use a seeded uniform random sample of exactly ``max_rows`` rows across all
partitions (all rows when the dataset has no more) and say so; the forest plot uses the exact
per-partition table.
"""

from __future__ import annotations

import textwrap
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
    """A seeded uniform random sample of exactly ``max_rows`` rows with their label ``y``, probability
    ``p`` and ``loss`` (every row when the dataset has no more).

    Every row has the same chance, ``max_rows / N``, to be in it, and only the files of up to
    ``max_files`` blocks are read (a large dataset is not read whole): see :func:`sample_plan`.
    """
    files = list(dataset.files)
    cols = [*scorer.features, *([scorer.column] if scorer.column else [])]
    wanted = [*dict.fromkeys([*cols, dataset.label, *dataset.partition_by])]
    if sum(f.num_rows for f in files) <= max_rows:
        df = scan_files(dataset, files).select(wanted).collect()
    else:
        rows = sample_plan([f.num_rows for f in files], max_rows, max_files, seed)
        chosen = [i for i, r in enumerate(rows) if len(r)]
        # one scan of the chosen files: the row index runs on across them, in this order
        offsets = np.cumsum([0] + [files[i].num_rows for i in chosen[:-1]])
        index = pl.Series("_row", np.concatenate([rows[i] + off for i, off in zip(chosen, offsets)]), dtype=pl.get_index_type())
        lf = scan_files(dataset, [files[i] for i in chosen]).with_row_index("_row")
        df = lf.filter(pl.col("_row").is_in(index.implode())).select(wanted).collect()
    y = df.get_column(dataset.label).cast(pl.Float64).to_numpy()
    s = scorer.score_frame(df, dataset.text_features)
    if scorer.kind == "logit":
        p, loss = sigmoid(s), row_losses_from_logits(y, s)
    else:
        p, loss = s, row_losses_from_probabilities(y, s)
    return df.with_columns(pl.Series("y", y), pl.Series("score", s), pl.Series("p", p), pl.Series("loss", loss))


def sample_plan(counts: list[int], k: int, draws: int = 10, seed: int = 0) -> list[np.ndarray]:
    """Which rows of each file (row numbers within it) a sample of exactly ``k`` of the ``N`` rows takes.

    Each row has the same chance, ``k / N``, however the rows fall into files; at most ``draws``
    groups of files are read. With ``d = min(draws, k)`` points and ``m = ⌈k / d⌉`` rows a point:

    1. the files, in order, are grouped into blocks of at least ``m · N / (N − d·m)`` rows (small
       files share a block); ``d`` points are laid every ``N / d`` rows from a seeded random start
       (systematic sampling in proportion to size): a block of ``s`` rows holds ``s·d / N`` points
       on average and at most ``s·d / N + 1``, so that
    2. a block holding ``j`` points can give ``j · m`` of its rows, drawn uniformly without
       replacement: each row is drawn with chance ``(s·d / N) · m / s = d·m / N``;
    3. ``k`` of those ``d · m`` rows, drawn uniformly, are kept: a chance of ``k / N`` for every row.
    """
    n = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n)])
    total = int(starts[-1])
    rng = np.random.default_rng(seed)
    d = min(draws, k)
    m = -(-k // d)
    if d * m >= total:  # a sample of nearly every row: drawn from all of them at once
        picked = rng.choice(total, size=k, replace=False)
    else:
        ends = _block_ends(starts, -(-m * total // (total - d * m)))
        step = total / d
        at = np.searchsorted(ends, rng.uniform(0, step) + step * np.arange(d), side="right")
        hits = np.bincount(np.minimum(at, len(ends) - 1), minlength=len(ends))  # (a last point rounded up to N: the last block)
        block_starts = np.concatenate([[0], ends[:-1]])
        drawn = [block_starts[b] + rng.choice(int(ends[b] - block_starts[b]), size=int(hits[b]) * m, replace=False)
                 for b in np.flatnonzero(hits)]
        picked = rng.choice(np.concatenate(drawn), size=k, replace=False)
    picked = np.sort(picked)
    parts = np.split(picked, np.searchsorted(picked, starts[1:-1]))
    return [part - start for part, start in zip(parts, starts[:-1])]


def _block_ends(starts: np.ndarray, at_least: int) -> np.ndarray:
    """Where each block of consecutive files ends (a row position), each block at least ``at_least`` rows (the last short one joins the one before)."""
    ends: list[int] = []
    begin = 0
    for end in starts[1:]:
        if end - begin >= at_least:
            ends.append(int(end))
            begin = int(end)
    if not ends or ends[-1] != starts[-1]:
        if ends:
            ends.pop()
        ends.append(int(starts[-1]))
    return np.asarray(ends, dtype=np.int64)


def describe_sample(sample_rows: int, total_rows: int) -> str:
    """Which rows the row-level figures show, in words (a sample is exactly ``sample_rows``, its limit)."""
    if sample_rows >= total_rows:
        return f"all {total_rows:,} rows"
    return f"a uniform random sample of {sample_rows:,} of {total_rows:,} rows across all partitions (seed 0; at most {sample_rows:,} are drawn)"


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


#: a partition's colour in the forest plot, by the gate's verdict (tasks.gates.with_verdicts)
VERDICT_COLORS = {"failed": "#c62828", "passed": "#2e7d32", "too small": "0.6", "not judged": "#1f77b4"}
_VERDICT_LABELS = {"failed": "failed", "passed": "passed", "too small": "too small (not judged)", "not judged": "partition (no gate)"}


def plot_partition_bce(table: pl.DataFrame, label_col: str, overall: float, max_rows: int = 60, bound: float | None = None):
    """A forest plot: each partition's BCE with its 95% interval and row count, coloured by its verdict;
    the overall BCE and the gate's bound (``--max-partition-bce``, when set) as lines, named in a legend
    below the axes (never over a partition)."""
    t = table.sort("bce", descending=True).head(max_rows).reverse()
    labels = [v if len(v) <= 32 else v[:29] + "…" for v in t.get_column(label_col).cast(pl.String).to_list()]
    bce = t.get_column("bce").to_numpy()
    low = t.get_column("bce_low").to_numpy() if "bce_low" in t.columns else bce
    high = t.get_column("bce_high").to_numpy() if "bce_high" in t.columns else bce
    verdicts = np.array(t.get_column("verdict").fill_null("not judged").to_list() if "verdict" in t.columns else ["not judged"] * t.height)
    fig, ax = new_figure(figsize=(8, max(3.5, 0.32 * len(labels) + 2.2)), layout="constrained")
    pos = np.arange(len(labels))
    for verdict, color in VERDICT_COLORS.items():
        at = verdicts == verdict
        if at.any():
            ax.errorbar(bce[at], pos[at], xerr=[bce[at] - low[at], high[at] - bce[at]], fmt="o", color=color, ecolor=color,
                        capsize=3, label=f"{_VERDICT_LABELS[verdict]}: {int(at.sum())}")
    ax.axvline(overall, color="k", linestyle="--", label=f"overall {overall:.4f}")
    if bound is not None:
        ax.axvline(bound, color=VERDICT_COLORS["failed"], linestyle="-", linewidth=1.2, label=f"gate bound {bound:g} (--max-partition-bce)")
    rows = [f"{label}  (n={n:,})" for label, n in zip(labels, t.get_column("n_rows").to_list())]
    ax.set_yticks(pos, rows, fontsize=8)
    title = "BCE by partition, 95% intervals" + (f" (worst {max_rows} of {table.height})" if table.height > max_rows else "")
    ax.set(xlabel="BCE (log loss)", title=title)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def plot_paired_differences(table: pl.DataFrame, label_col: str, overall: dict[str, Any], max_rows: int = 60):
    """Challenger − champion BCE per partition with paired 95% intervals, the overall difference as a band
    (its legend below the axes, never over a whisker)."""
    t = table.sort("bce_diff").head(max_rows).reverse()
    labels = [v if len(v) <= 32 else v[:29] + "…" for v in t.get_column(label_col).cast(pl.String).to_list()]
    d = t.get_column("bce_diff").to_numpy()
    low, high = t.get_column("bce_diff_low").to_numpy(), t.get_column("bce_diff_high").to_numpy()
    fig, ax = new_figure(figsize=(8, max(3.5, 0.32 * len(labels) + 2.2)), layout="constrained")
    pos = np.arange(len(labels))
    ax.errorbar(d, pos, xerr=[d - low, high - d], fmt="o", color="#6a3d9a", ecolor="0.4", capsize=3)
    ax.axvline(0, color="0.5", linewidth=1)
    ax.axvspan(overall["bce_diff_low"], overall["bce_diff_high"], color="#6a3d9a", alpha=0.12,
               label=f"overall {overall['bce_diff']:+.5f} [{overall['bce_diff_low']:+.5f}, {overall['bce_diff_high']:+.5f}]")
    ax.set_yticks(pos, [f"{label}  (n={n:,})" for label, n in zip(labels, t.get_column("n_rows").to_list())], fontsize=8)
    ax.set(xlabel="challenger − champion BCE (negative: challenger better)", title="Paired BCE differences, 95% intervals")
    fig.legend(loc="outside lower center", fontsize=8, frameon=False)
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
    ax.set_title(f"Reliability diagram\n{textwrap.fill(shown or f'{len(y):,} rows', 80)}", fontsize=9)  # wrapped: the figure is narrow
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
    bound: float | None = None,
) -> dict[str, Any]:
    """All evaluation figures by artifact name (``linear`` = (w, b) of a one-feature logit model; ``bound``
    the gate's ``--max-partition-bce``, drawn on the forest plot)."""
    shown = describe_sample(sample.height, total_rows)
    figs: dict[str, Any] = {
        "plots/true_class_probability.png": plot_true_class_probability(sample, shown),
        "plots/log_loss_curve.png": plot_log_loss_curve(sample, shown),
        "plots/reliability.png": plot_reliability(sample, shown=shown),
    }
    if by_partition:
        figs["plots/bce_by_partition.png"] = plot_partition_bce(table, "partition", overall_bce, bound=bound)
    if linear is not None and len(features) == 1:
        x = sample.get_column(features[0]).cast(pl.Float64).to_numpy()
        figs["plots/fitted_sigmoid.png"] = plot_sigmoid(x, sample.get_column("y").to_numpy(), linear[0], linear[1], features[0])
    return figs


sample_scores_task = as_task(sample_scores, name="sample-rows")
make_figures_task = as_task(make_figures, name="make-plots")
