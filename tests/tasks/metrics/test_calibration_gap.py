"""Expected against realized BCE: mean H(p), the loss a model expects of itself, and the gap with its interval,
against numpy, per partition, per slice and overall, weighted and unweighted; the gap's interval covers 0 for a
calibrated model about 95% of the time and catches an over-confident one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from flows.api import evaluate
from tasks.metrics.calibration import CAL_BINS
from tasks.metrics.schema import Z95
from tasks.review.summary import calibration_line


def calibration_sums(p: np.ndarray, y: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """The calibration sums of rows (tasks.metrics.calibration), by numpy: H(p), the excess², each bin's sums."""
    entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    out = {"sum_entropy": float(entropy.sum()), "sum_excess_sq": float(((loss - entropy) ** 2).sum())}
    b = np.minimum((p * CAL_BINS).astype(int), CAL_BINS - 1)
    for k in range(CAL_BINS):
        out |= {
            f"cal_w_{k}": float((b == k).sum()),
            f"cal_p_{k}": float(p[b == k].sum()),
            f"cal_y_{k}": float(y[b == k].sum()),
        }
    return out


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def _rows(n_parts: int, rows: int, seed: int, scale: float = 1.0) -> pd.DataFrame:
    """Labels drawn from the model's own probabilities; ``scale`` multiplies the logits it reports."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n_parts * rows)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z))).astype(int)
    return pd.DataFrame(
        {
            "z": z * scale,
            "y": y,
            "part": np.repeat([f"p{i:03d}" for i in range(n_parts)], rows),
            "w": rng.exponential(1.0, z.size),
            "g": rng.choice(["a", "b", "c"], z.size),
        }
    )


def _reference(g: pd.DataFrame, kind: str, weighted: bool) -> dict[str, float]:
    s = g["z"].to_numpy()
    p = 1 / (1 + np.exp(-s)) if kind == "logit" else s
    y, w = g["y"].to_numpy(), (g["w"].to_numpy() if weighted else np.ones(len(g)))
    loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    x = loss - _entropy(p)
    mean = np.average(x, weights=w)
    v1, v2 = w.sum(), (w**2).sum()
    var = np.sum(w * (x - mean) ** 2) / (v1 - v2 / v1)  # reliability weights: the sample variance when w = 1
    return {"expected_bce": np.average(_entropy(p), weights=w), "gap": mean, "se": np.sqrt(var * v2) / v1}


@pytest.mark.parametrize(("kind", "weighted"), [("logit", False), ("logit", True), ("probability", True)])
def test_expected_bce_and_the_gap_equal_numpy_per_partition_per_slice_and_overall(kind, weighted):
    rows = _rows(3, 4000, seed=1)
    if kind == "probability":
        rows["z"] = np.clip(1 / (1 + np.exp(-rows["z"])), 1e-6, 1 - 1e-6)
    r = evaluate(
        rows,
        label="y",
        model="z",
        score_kind=kind,
        partition_by=["part"],
        slices=["g"],
        weights="w" if weighted else None,
    )
    groups = [("overall", rows, r.overall)]
    groups += [(k, g, r.table.filter(pl.col("part") == k).row(0, named=True)) for k, g in rows.groupby("part")]
    groups += [(k, g, r.slices["g"].filter(pl.col("g") == k).row(0, named=True)) for k, g in rows.groupby("g")]
    for name, g, got in groups:
        want = _reference(g, kind, weighted)
        assert got["expected_bce"] == pytest.approx(want["expected_bce"], rel=1e-12), name
        assert got["calibration_gap"] == pytest.approx(want["gap"], rel=1e-9, abs=1e-14), name
        half = got["calibration_gap_high"] - got["calibration_gap"]
        assert half == pytest.approx(Z95 * want["se"], rel=1e-9), name


def test_a_calibrated_model_covers_0_about_95_percent_of_the_time_and_logits_times_2_are_caught():
    """Each of 200 partitions is an independent sample of 2,000 rows drawn from the model's own probabilities."""
    calibrated = evaluate(_rows(200, 2000, seed=7), label="y", model="z", score_kind="logit", partition_by=["part"])
    t = calibrated.table
    covered = t.filter((pl.col("calibration_gap_low") <= 0) & (pl.col("calibration_gap_high") >= 0)).height / t.height
    assert 0.90 <= covered <= 0.99, covered
    over = evaluate(
        _rows(200, 2000, seed=7, scale=2.0),
        label="y",
        model="z",
        score_kind="logit",
        partition_by=["part"],
        gates=["calibration_gap <= 0 per partition"],
    )
    assert (over.table.get_column("calibration_gap_low") > 0).all()  # over-confident: caught in every partition
    assert set(over.table.get_column("verdict")) == {"failed"} and not over.passed
    assert "over-confident" in calibration_line(over.overall)
    under = evaluate(_rows(1, 20000, seed=3, scale=0.5), label="y", model="z", score_kind="logit")
    assert under.overall["calibration_gap_high"] < 0 and "under-confident" in calibration_line(under.overall)


def _ece(p: np.ndarray, y: np.ndarray, w: np.ndarray, bins: int = 10) -> float:
    """The expected calibration error as it is usually written: Σ_b (W_b / W)·|mean p − mean y| over the bins."""
    b = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        m = b == k
        if w[m].sum() > 0:
            total += w[m].sum() / w.sum() * abs(np.average(p[m], weights=w[m]) - np.average(y[m], weights=w[m]))
    return total


@pytest.mark.parametrize("weighted", [False, True])
def test_ece_over_ten_fixed_bins_equals_numpy_per_partition_per_slice_and_overall(weighted):
    rows = _rows(3, 5000, seed=11, scale=1.7)  # miscalibrated: the gaps are far from 0
    r = evaluate(
        rows,
        label="y",
        model="z",
        score_kind="logit",
        partition_by=["part"],
        slices=["g"],
        weights="w" if weighted else None,
    )
    p = 1 / (1 + np.exp(-rows["z"].to_numpy()))
    w = rows["w"].to_numpy() if weighted else np.ones(len(rows))
    y = rows["y"].to_numpy()
    assert r.overall["ece"] == pytest.approx(_ece(p, y, w), rel=1e-12)
    for key, column, table in (("part", "part", r.table), ("g", "g", r.slices["g"])):
        for value, g in rows.groupby(key):
            i = g.index.to_numpy()
            got = table.filter(pl.col(column) == value)["ece"][0]
            assert got == pytest.approx(_ece(p[i], y[i], w[i]), rel=1e-12), (key, value)
    assert r.overall["ece"] > 0.05
    calibrated = evaluate(_rows(1, 50000, seed=2), label="y", model="z", score_kind="logit")
    assert calibrated.overall["ece"] < 0.02 < r.overall["ece"]
