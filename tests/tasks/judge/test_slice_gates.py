"""Per-slice gates: Benjamini–Hochberg within each slicing, against scipy's own procedure on the same p-values."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import false_discovery_control, norm

from tasks.judge.gates import GateResult, GateSettings, parse_gate
from tasks.judge.slice_gates import judge_slices, with_slice_failures
from tasks.metrics import schema
from tasks.metrics.late_labels import LATE_SUMS
from tests.tasks.metrics.test_calibration_gap import calibration_sums


def _slicing_table(rng: np.random.Generator, n_slices: int, rows: int, worse: int) -> pl.DataFrame:
    """One row per slice, its sums from real rows (the last ``worse`` slices from a worse model)."""
    out = []
    for i in range(n_slices):
        p_true = rng.uniform(0.1, 0.9, rows)
        y = (rng.uniform(size=rows) < p_true).astype(float)
        p = np.clip(p_true + (0.25 if i >= n_slices - worse else 0.0) * (0.5 - y), 0.01, 0.99)
        loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        out.append(
            {
                "slice": f"s={i}",
                "s": str(i),
                "n_rows": rows,
                "n_pos": int(y.sum()),
                "n_neg": int(rows - y.sum()),
                "sum_w": float(rows),
                "sum_w_sq": float(rows),
                "sum_w_pos": float(y.sum()),
                "sum_loss": float(loss.sum()),
                "sum_loss_sq": float((loss**2).sum()),
                "sum_loss_pos": float(loss[y == 1].sum()),
                "sum_correct": float(((p > 0.5) == (y == 1)).sum()),
                "sum_brier": float(((p - y) ** 2).sum()),
                "sum_p": float(p.sum()),
                "n_saturated": 0,
                **calibration_sums(p, y, loss),
                **{s.name: 0 for s in LATE_SUMS},  # every label known
            }
        )
    table = schema.derive_figures(pl.DataFrame(out))
    return table.with_columns(pl.lit(0.8).alias("roc_auc"), pl.lit(0.001).alias("roc_auc_bound"))


def test_failed_slices_are_exactly_those_bh_rejects_on_one_sided_p_values():
    rng = np.random.default_rng(3)
    table = _slicing_table(rng, 40, 2000, worse=3)
    bound = float(table.get_column("bce").median())
    gates = GateSettings(rules=[f"bce <= {bound} per slice"], fdr_level=0.1)
    judged = judge_slices({"s": table}, {"bce": bound}, gates)
    z = (table.get_column("bce").to_numpy() - bound) / table.get_column("bce_se").to_numpy()
    p = norm.sf(z)  # independent: scipy's normal tail and its BH adjustment
    expected = false_discovery_control(p, method="bh") <= 0.1
    got = judged.tables["s"].get_column("verdict").to_numpy() == "failed"
    assert expected.any() and (got == expected).all()
    assert np.allclose(judged.tables["s"].get_column("p_value").to_numpy(), p, rtol=1e-12)
    assert "Benjamini–Hochberg at false discovery rate 0.1" in judged.method and "40 of s" in judged.method
    assert len(judged.failures) == 1 and judged.failures[0].startswith(f"{int(expected.sum())} slice(s) of s fail")


def test_small_slices_keep_their_verdict_and_are_not_counted():
    rng = np.random.default_rng(4)
    table = _slicing_table(rng, 6, 500, worse=1)
    table = table.with_columns(pl.when(pl.col("s") == "0").then(10).otherwise(pl.col("n_rows")).alias("n_rows"))
    gates = GateSettings(rules=["bce <= 0.3 per slice"], min_rows=100)
    judged = judge_slices({"s": table}, {}, gates)
    verdicts = dict(judged.tables["s"].select("s", "verdict").iter_rows())
    assert verdicts["0"] == "too small"
    assert judged.tables["s"].filter(pl.col("s") == "0").get_column("p_value").is_nan().all()
    assert "5 of s" in judged.method


def test_without_a_slice_gate_every_slice_is_not_judged_and_the_gaps_are_there():
    table = _slicing_table(np.random.default_rng(5), 4, 300, worse=1)
    judged = judge_slices({"s": table}, {"bce": 0.5, "accuracy": 0.7}, GateSettings())
    assert set(judged.tables["s"].get_column("verdict")) == {"not judged"} and not judged.method
    gap = judged.gaps["s"].filter(pl.col("figure") == "bce").row(0, named=True)
    bce = table.get_column("bce")
    assert gap["difference"] == pytest.approx(bce.max() - bce.min(), rel=1e-12)
    assert gap["worst_slice"] == table.sort("bce").get_column("slice")[-1]


def test_slice_failures_fail_the_run_and_name_the_slices():
    table = _slicing_table(np.random.default_rng(6), 5, 3000, worse=1)
    judged = judge_slices({"s": table}, {}, GateSettings(rules=["bce <= 0.45 per slice"]))
    merged = with_slice_failures(GateResult(True), judged)
    assert merged is not None and not merged.passed
    assert merged.partitions == [f"s:{n}" for n in judged.tables["s"].filter(pl.col("verdict") == "failed")["slice"]]


def test_per_slice_is_a_scope_of_gate():
    gate = parse_gate("roc_auc >= 0.7 per slice")
    assert gate.scope == "slice" and gate.describe() == "roc_auc >= 0.7 per slice"
    with pytest.raises(ValueError, match="fdr_level"):
        GateSettings(fdr_level=1.5)
