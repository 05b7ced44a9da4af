"""The seed article's walk-through, drawn for any dataset (matplotlib figures, returned unsaved).

Row-level figures use a seeded uniform random sample of exactly ``max_rows`` rows across all
partitions (all rows when the dataset has no more; :mod:`tasks.review.sample`) and say so; the
forest plot uses the exact per-partition table.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import polars as pl

from tasks.judge.drift import OVERALL
from tasks.metrics.calibration import ece_words
from tasks.metrics.loss import sigmoid
from tasks.review.sample import describe_sample

_NEG, _POS = "#d62728", "#2ca02c"  # the seed's red and green


def new_figure(**kw: Any):
    """A figure and its axes, as ``plt.subplots`` makes them, outside pyplot: a notebook's own backend and
    figures are left as they were (no ``matplotlib.use``), and nothing needs closing."""
    from matplotlib.figure import Figure

    fig = Figure(**{k: kw.pop(k) for k in ("figsize", "layout") if k in kw})
    return fig, fig.subplots(**kw)


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
            low.set(
                xlabel="loss −log(p)",
                ylabel="row (same order)",
                title=f"class {cls}: mean loss {lv.mean() if len(lv) else float('nan'):.4f}",
            )
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
        ax.set(
            xlabel="probability of the true class",
            xlim=(0, 1.02),
            title=f"class {cls}: mean loss {loss[y == cls].mean() if (y == cls).any() else float('nan'):.4f}",
        )
        ax.legend()
    axes[0].set_ylabel("loss")
    fig.suptitle(f"Per-row log loss ({shown or f'{len(y):,} rows'})", fontsize=10)
    fig.tight_layout()
    return fig


#: a partition's colour in the forest plot, by the gate's verdict (tasks.judge.gates.with_verdicts)
VERDICT_COLORS = {"failed": "#c62828", "passed": "#2e7d32", "too small": "0.6", "not judged": "#1f77b4"}
_VERDICT_LABELS = {
    "failed": "failed",
    "passed": "passed",
    "too small": "too small (not judged)",
    "not judged": "partition (no gate)",
}


def plot_partition_bce(
    table: pl.DataFrame,
    label_col: str,
    overall: float | None,
    max_rows: int = 60,
    bound: float | None = None,
    what: str = "partition",
):
    """A forest plot: each partition's BCE with its 95% interval and row count, coloured by its verdict;
    the overall BCE and the gate's bound (``--max-partition-bce``, when set) as lines, named in a legend
    below the axes (never over a partition)."""
    # the realized figures only: a partition whose labels have not arrived has an estimate, not a BCE to plot
    t = table.filter(pl.col("bce").is_not_null()).sort("bce", descending=True).head(max_rows).reverse()
    labels = [v if len(v) <= 32 else v[:29] + "…" for v in t.get_column(label_col).cast(pl.String).to_list()]
    bce = t.get_column("bce").to_numpy()
    low = t.get_column("bce_low").to_numpy() if "bce_low" in t.columns else bce
    high = t.get_column("bce_high").to_numpy() if "bce_high" in t.columns else bce
    verdicts = np.array(
        t.get_column("verdict").fill_null("not judged").to_list()
        if "verdict" in t.columns
        else ["not judged"] * t.height
    )
    fig, ax = new_figure(figsize=(8, max(3.5, 0.32 * len(labels) + 2.2)), layout="constrained")
    pos = np.arange(len(labels))
    for verdict, color in VERDICT_COLORS.items():
        at = verdicts == verdict
        if at.any():
            ax.errorbar(
                bce[at],
                pos[at],
                xerr=[bce[at] - low[at], high[at] - bce[at]],
                fmt="o",
                color=color,
                ecolor=color,
                capsize=3,
                label=f"{_VERDICT_LABELS[verdict]}: {int(at.sum())}",
            )
    if overall is not None:
        ax.axvline(overall, color="k", linestyle="--", label=f"overall {overall:.4f}")
    if bound is not None:
        ax.axvline(
            bound,
            color=VERDICT_COLORS["failed"],
            linestyle="-",
            linewidth=1.2,
            label=f"gate bound {bound:g} (--max-partition-bce)",
        )
    rows = [f"{label}  (n={n:,})" for label, n in zip(labels, t.get_column("n_rows").to_list())]
    ax.set_yticks(pos, rows, fontsize=8)
    title = f"BCE by {what}, 95% intervals" + (
        f" (worst {max_rows} of {table.height})" if table.height > max_rows else ""
    )
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
    ax.axvspan(
        overall["bce_diff_low"],
        overall["bce_diff_high"],
        color="#6a3d9a",
        alpha=0.12,
        label=f"overall {overall['bce_diff']:+.5f} [{overall['bce_diff_low']:+.5f}, {overall['bce_diff_high']:+.5f}]",
    )
    ax.set_yticks(
        pos, [f"{label}  (n={n:,})" for label, n in zip(labels, t.get_column("n_rows").to_list())], fontsize=8
    )
    ax.set(
        xlabel="challenger − champion BCE (negative: challenger better)", title="Paired BCE differences, 95% intervals"
    )
    fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    return fig


def plot_reliability(
    sample: pl.DataFrame, n_bins: int = 10, shown: str = "", calibration: str = "", points: dict | None = None
):
    """Reliability diagram: mean predicted probability against observed positive rate per bin (``calibration``:
    the run's ECE and expected-against-realized BCE over every row, in words, drawn on it; ``points``: the
    equal-mass bins' means over every row, :func:`tasks.metrics.calibration.reliability_points`)."""
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
    ax.plot(mean_p[ok] / counts[ok], rate[ok] / counts[ok], "o-", color="#1f77b4", label="model (shown rows)")
    if points and points.get("mean_p"):
        ax.plot(points["mean_p"], points["rate"], "s--", color="#d62728", ms=4, label="equal-mass bins, every row")
    ax.set(ylabel="observed positive rate")
    ax.set_title(
        f"Reliability diagram\n{textwrap.fill(shown or f'{len(y):,} rows', 80)}", fontsize=9
    )  # wrapped: the figure is narrow
    ax.legend(loc="upper left")
    if calibration:
        ax.text(0.98, 0.02, calibration, transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
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
    overall: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """All evaluation figures by artifact name (``linear`` = (w, b) of a one-feature logit model; ``bound``
    the gate's ``--max-partition-bce``, drawn on the forest plot; ``overall`` the overall row, whose calibration
    figures the reliability diagram shows)."""
    shown = describe_sample(sample.height, total_rows)
    calibration = _calibration_words(overall or {}, total_rows)
    figs: dict[str, Any] = {
        "plots/true_class_probability.png": plot_true_class_probability(sample, shown),
        "plots/log_loss_curve.png": plot_log_loss_curve(sample, shown),
        "plots/reliability.png": plot_reliability(
            sample, shown=shown, calibration=calibration, points=(overall or {}).get("reliability")
        ),
    }
    if by_partition:
        figs["plots/bce_by_partition.png"] = plot_partition_bce(table, "partition", overall_bce, bound=bound)
    if (overall or {}).get("cost_curve"):
        figs["plots/cost_curve.png"] = plot_cost_curve(overall or {})
    if linear is not None and len(features) == 1:
        x = sample.get_column(features[0]).cast(pl.Float64).to_numpy()
        figs["plots/fitted_sigmoid.png"] = plot_sigmoid(
            x, sample.get_column("y").to_numpy(), linear[0], linear[1], features[0]
        )
    return figs


def plot_cost_curve(overall: dict[str, Any]):
    """The expected cost per row against the threshold (every row: from the merged histogram), the declared
    threshold and the lowest cost marked."""
    t, cost = (np.asarray(v) for v in overall["cost_curve"])
    c = overall["costs"]
    fig, ax = new_figure(figsize=(7, 4))
    ax.plot(t, cost, color="#1f77b4", label=f"cost a row (fp={c['fp']:g}, fn={c['fn']:g})")
    ax.axvline(overall["threshold"], color="0.4", ls=":", label=f"threshold {overall['threshold']:g}")
    ax.plot([overall["best_threshold"]], [overall["best_cost"]], "o", color="#d62728", label="lowest cost")
    ax.set(xlabel="threshold t (p ≥ t is predicted positive)", ylabel="expected cost a row", title="Cost curve")
    ax.legend()
    fig.tight_layout()
    return fig


def _calibration_words(overall: dict[str, Any], total_rows: int) -> str:
    if overall.get("ece") is None:
        return ""
    gap = overall.get("calibration_gap")
    return f"{ece_words(overall)}\n(all {total_rows:,} rows)" + (
        f"\nrealized − expected BCE {gap:+.4f}" if gap is not None else ""
    )


def plot_series(history: pl.DataFrame, band: pl.DataFrame, max_lines: int = 12, figure: str = "bce"):
    """The overall and per-partition ``figure`` over the series' runs, this run last, the bands shaded."""
    keys = [OVERALL, *[k for k in band.sort(figure, descending=True).get_column("key").to_list() if k != OVERALL]][
        :max_lines
    ]
    fig, ax = new_figure(figsize=(9, 4.5))
    n_runs = history.get_column("run_id").n_unique()
    for key in keys:
        past = history.filter(pl.col("key") == key).get_column(figure).to_list()
        now = band.filter(pl.col("key") == key).row(0, named=True)
        xs = list(range(len(past) + 1))
        style = {"color": "k", "linewidth": 2.2} if key == OVERALL else {"linewidth": 1, "alpha": 0.8}
        line = ax.plot(
            xs,
            [*past, now[figure]],
            marker="o",
            markersize=3,
            label=key + (" (left its band)" if now["drifted"] else ""),
            **style,
        )[0]
        if now["low"] is not None:
            ax.fill_between(
                [len(past) - 0.5, len(past) + 0.5], now["low"], now["high"], color=line.get_color(), alpha=0.12
            )
        if now["drifted"]:
            ax.scatter([len(past)], [now[figure]], s=90, facecolors="none", edgecolors="red", zorder=4)
    ax.set(
        xlabel=f"run of the series (oldest first; the last is this run; {n_runs} earlier)",
        ylabel="BCE" if figure == "bce" else figure,
        title=f"{'BCE' if figure == 'bce' else figure} over the series; "
        "shaded: this run's band from each line's own history",
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
