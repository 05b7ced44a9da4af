"""The gaps between slices against Fairlearn's MetricFrame, computed from the same rows independently."""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, brier_score_loss, d2_log_loss_score, log_loss, roc_auc_score

from tasks.errors import InputError
from tasks.judge.gaps import slicing_gaps
from tasks.metrics.schema import Z95

#: (slice, rows, base logit, how much of the true logit the model sees, noise in its logit)
GROUPS = (
    ("a", 900, -1.5, 1.0, 0.3),
    ("b", 600, 0.0, 0.8, 0.8),
    ("c", 400, 0.8, 0.3, 1.5),  # a weak model: d2_log_loss below 0 (worse than the base rate)
    ("d", 700, -0.5, 1.2, 0.5),
    ("e", 60, -6.0, 1.0, 0.3),  # no positive at all (see _rows): ROC AUC and d2_log_loss undefined, null in the table
    ("f", 40, 0.0, -1.0, 2.0),  # small and upside down: the worst slice unless min_rows drops it
)
FIGURES = ("bce", "brier", "accuracy", "roc_auc", "d2_log_loss", "positive_rate")


def _bce(y, p, sample_weight=None):
    return log_loss(y, p, sample_weight=sample_weight, labels=[0, 1])


def _brier(y, p, sample_weight=None):
    return brier_score_loss(y, p, sample_weight=sample_weight, labels=[0, 1])


def _accuracy(y, p, sample_weight=None):
    return accuracy_score(y, p > 0.5, sample_weight=sample_weight)


def _roc_auc(y, p, sample_weight=None):
    return roc_auc_score(y, p, sample_weight=sample_weight)  # NaN (and a warning) for a single-class slice


def _d2_log_loss(y, p, sample_weight=None):
    if np.unique(y).size < 2:  # the base rate's log loss is 0: d2 is undefined, as the table's null says
        return math.nan
    return d2_log_loss_score(y, p, sample_weight=sample_weight, labels=[0, 1])


def _positive_rate(y, p, sample_weight=None):
    return float(np.average(y, weights=sample_weight))


METRICS = {
    "bce": _bce,
    "brier": _brier,
    "accuracy": _accuracy,
    "roc_auc": _roc_auc,
    "d2_log_loss": _d2_log_loss,
    "positive_rate": _positive_rate,
}


def _rows(weighted: bool, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, predicted probabilities, slice names and (optionally) weights: groups of different base rate and
    model quality."""
    rng = np.random.default_rng(seed)
    ys, ps, names = [], [], []
    for name, n, base, sees, noise in GROUPS:
        logit = base + rng.normal(0.0, 1.0, n)
        label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        ys.append(label * 0 if name == "e" else label)
        ps.append(1.0 / (1.0 + np.exp(-(sees * (logit - base) + base + rng.normal(0.0, noise, n)))))
        names.append(np.full(n, name))
    y, p, group = np.concatenate(ys), np.concatenate(ps), np.concatenate(names)
    return y, p, group, (rng.uniform(0.2, 3.0, y.size) if weighted else None)


def _figures(y: np.ndarray, p: np.ndarray, w: np.ndarray | None) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ROC AUC of a single-class slice warns, then is NaN
        out = {name: float(fn(y, p, sample_weight=w)) for name, fn in METRICS.items()}
    loss = -np.log(np.where(y == 1, p, 1.0 - p))
    out["bce_se"] = float(np.std(loss, ddof=1) / math.sqrt(y.size))
    return out


def _slicing_table(y, p, group, w) -> pl.DataFrame:
    """The slicing table's shape: one row per slice, its sums and its figures (NaN as null, as the table has it)."""
    rows = []
    for name in dict.fromkeys(group):
        at = group == name
        sub_w = None if w is None else w[at]
        rows.append(
            {
                "seg": name,
                "slice": f"seg={name}",
                "n_rows": int(at.sum()),
                "sum_w": float(at.sum() if w is None else sub_w.sum()),
                **_figures(y[at], p[at], sub_w),
            }
        )
    return pl.DataFrame(rows).fill_nan(None).with_columns(pl.col("n_rows").cast(pl.Int64))


def _metric_frame(y, p, group, w) -> MetricFrame:
    params = None if w is None else {name: {"sample_weight": w} for name in METRICS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MetricFrame(metrics=METRICS, y_true=y, y_pred=p, sensitive_features=group, sample_params=params)


def _by_figure(gaps: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {row["figure"]: row for row in gaps.iter_rows(named=True)}


@pytest.mark.parametrize("weighted", [False, True])
def test_differences_and_ratios_equal_fairlearns_metric_frame(weighted):
    y, p, group, w = _rows(weighted)
    table = _slicing_table(y, p, group, w)
    overall = _figures(y, p, w)
    mf = _metric_frame(y, p, group, w)
    # the cases where Fairlearn's definitions bite are really here: a null ROC AUC, a negative d2
    assert table.filter(pl.col("slice") == "seg=e").item(0, "roc_auc") is None
    assert table.get_column("d2_log_loss").min() < 0 < overall["d2_log_loss"]

    gaps = _by_figure(slicing_gaps(table, overall, FIGURES))

    assert list(gaps) == list(FIGURES)
    expected = {
        "difference": mf.difference(method="between_groups"),
        "difference_to_overall": mf.difference(method="to_overall"),
        "ratio": mf.ratio(method="between_groups"),
        "ratio_to_overall": mf.ratio(method="to_overall"),
    }
    for column, reference in expected.items():
        for figure in FIGURES:
            assert gaps[figure][column] == pytest.approx(reference[figure], rel=0, abs=1e-12), (figure, column)


def test_worst_and_best_slices_follow_the_better_direction():
    y, p, group, w = _rows(weighted=True)
    table = _slicing_table(y, p, group, w)
    gaps = _by_figure(slicing_gaps(table, _figures(y, p, w), FIGURES))

    def extreme(figure: str, highest: bool) -> tuple[str, float]:
        row = table.drop_nulls(figure).sort(figure, descending=highest).row(0, named=True)
        return row["slice"], row[figure]

    for figure, lower_is_better in (("bce", True), ("brier", True), ("accuracy", False), ("roc_auc", False)):
        worst, best = extreme(figure, highest=lower_is_better), extreme(figure, highest=not lower_is_better)
        assert (gaps[figure]["worst_slice"], gaps[figure]["worst_value"]) == worst, figure
        assert (gaps[figure]["best_slice"], gaps[figure]["best_value"]) == best, figure
    assert gaps["bce"]["worst_slice"] == "seg=f"  # the upside-down model
    # the positive rate has no better side: a gap, but neither a worst nor a best slice
    assert gaps["positive_rate"]["difference"] > 0
    assert gaps["positive_rate"]["worst_slice"] is None and gaps["positive_rate"]["best_value"] is None


def test_difference_interval_is_the_normal_interval_of_worst_minus_best():
    y, p, group, w = _rows(weighted=False)
    table = _slicing_table(y, p, group, w)
    bce = _by_figure(slicing_gaps(table, _figures(y, p, w), ("bce", "brier")))

    worst = table.sort("bce").row(-1, named=True)
    best = table.sort("bce").row(0, named=True)
    se = math.sqrt(worst["bce_se"] ** 2 + best["bce_se"] ** 2)
    gap = worst["bce"] - best["bce"]
    assert bce["bce"]["difference"] == pytest.approx(gap, rel=1e-15)
    assert bce["bce"]["difference_se"] == pytest.approx(se, rel=1e-15)
    assert bce["bce"]["difference_low"] == pytest.approx(gap - 1.959963984540054 * se, rel=1e-14)
    assert bce["bce"]["difference_high"] == pytest.approx(gap + Z95 * se, rel=1e-14)
    # Brier has no standard error column: no interval
    assert bce["brier"]["difference_se"] is None and bce["brier"]["difference_low"] is None


def test_min_rows_leaves_small_slices_out():
    y, p, group, w = _rows(weighted=False)
    table = _slicing_table(y, p, group, w)
    overall = _figures(y, p, w)
    assert _by_figure(slicing_gaps(table, overall, ["bce"]))["bce"]["worst_slice"] == "seg=f"

    gaps = _by_figure(slicing_gaps(table, overall, ["bce", "accuracy"], min_rows=50))

    # slice f (40 rows) is gone; e (60 rows) stays; the between-slice gaps are Fairlearn's over the slices kept
    assert gaps["bce"]["worst_slice"] != "seg=f"
    kept = group != "f"
    mf = _metric_frame(y[kept], p[kept], group[kept], None)
    for figure in ("bce", "accuracy"):
        assert gaps[figure]["difference"] == pytest.approx(mf.difference()[figure], rel=0, abs=1e-12)
        assert gaps[figure]["ratio"] == pytest.approx(mf.ratio()[figure], rel=0, abs=1e-12)
    # ...while "to overall" still compares with the figure over all rows, as given
    values = table.filter(pl.col("n_rows") >= 50).get_column("bce").to_numpy()
    assert gaps["bce"]["difference_to_overall"] == pytest.approx(np.max(np.abs(values - overall["bce"])), rel=1e-15)
    assert slicing_gaps(table, overall, ["bce"], min_rows=10_000).row(0, named=True)["difference"] is None


def test_figures_missing_from_the_table_or_overall():
    y, p, group, w = _rows(weighted=False)
    table = _slicing_table(y, p, group, w)
    gaps = slicing_gaps(table, {}, ["bce", "no_such_figure"])
    assert gaps.get_column("figure").to_list() == ["bce"]
    row = gaps.row(0, named=True)
    assert row["difference"] > 0 and row["difference_to_overall"] is None and row["ratio_to_overall"] is None
    empty = slicing_gaps(table, {}, [])
    assert empty.height == 0 and "difference_high" in empty.columns


def test_bad_input_names_what_to_fix():
    table = pl.DataFrame({"slice": ["a"], "bce": [0.5]})
    with pytest.raises(InputError, match="n_rows"):
        slicing_gaps(table, {}, ["bce"])
    with pytest.raises(InputError, match="min_rows -1"):
        slicing_gaps(table.with_columns(n_rows=pl.lit(3)), {}, ["bce"], min_rows=-1)
