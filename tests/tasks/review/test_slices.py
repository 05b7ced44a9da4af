"""How slicings read: MLflow keys valid and distinct, tables with their columns, the terminal's worst slices."""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from flows.api import evaluate
from tasks.judge.gates import GateSettings
from tasks.judge.slice_gates import judge_slices
from tasks.review.slices import artifact_key, format_slices, slice_metrics, slice_report_tables, slice_tables
from tests.tasks.judge.test_slice_gates import _slicing_table

_MLFLOW_KEY = re.compile(r"^[/\w.\- :]*$")  # MLflow's rule for metric names


def _judged():
    table = _slicing_table(np.random.default_rng(7), 5, 400, worse=1)
    # hostile values: two that read the same once sanitised, and a null
    table = table.with_columns(pl.Series("s", ["a/b", "a.b", None, "A B", "é"]))
    table = table.with_columns(("s=" + pl.col("s").fill_null("null")).alias("slice"))
    return judge_slices({"s_x_t": table}, {"bce": 0.5}, GateSettings(rules=["bce <= 0.45 per slice"]))


def test_metric_keys_are_valid_and_distinct_and_follow_the_table():
    judged = _judged()
    metrics = slice_metrics(judged, limit=100)
    bce_keys = [k for k in metrics if k.startswith("slice.s_x_t.") and k.endswith(".bce")]
    assert len(bce_keys) == 5 and all(_MLFLOW_KEY.match(k) for k in metrics)
    assert sorted(metrics[k] for k in bce_keys) == sorted(judged.tables["s_x_t"].get_column("bce").to_list())
    assert (
        metrics["gap.s_x_t.bce.difference"] == judged.gaps["s_x_t"].filter(pl.col("figure") == "bce")["difference"][0]
    )
    assert not [k for k in slice_metrics(judged, limit=3) if k.startswith("slice.")]  # more slices than the limit


def test_tables_report_and_terminal_name_every_slicing():
    judged = _judged()
    tables = slice_tables(judged)
    assert set(tables) == {"slices/bce_by_s_x_t.json", "slices/gaps_s_x_t.json"}
    logged = tables["slices/bce_by_s_x_t.json"]
    assert {"slice", "s", "n_rows", "bce", "bce_low", "bce_high", "normalized_entropy", "verdict", "p_value"} <= set(
        logged
    )
    assert any(h.startswith("Slicing s_x_t: 5 slice(s)") for h in slice_report_tables(judged))
    lines = format_slices(judged, top=2)
    worst = judged.tables["s_x_t"].sort("bce", descending=True)["slice"][0]
    assert lines[0].startswith("  slicing s_x_t: 5 slice(s)") and worst in lines[1]
    assert any("Benjamini–Hochberg" in line for line in lines)
    assert artifact_key("Region_x_Age_18_30_") == "bce-by-region-x-age-18-30"


def test_a_binned_slice_reads_as_its_column_and_bounds_in_its_metric_key():
    from tasks.data.naming import metric_key_suffix
    from tasks.data.slicing import parse_slicing
    from tasks.review.slices import readable_slice

    (term,) = parse_slicing("age:18,30.5,65").terms
    name = term.cell.name
    keys = [metric_key_suffix(readable_slice({"region": "eu", name: label})) for label in term.cell.bin_labels()[:-1]]
    assert keys[0] == "region_eu.age_lt_18" and keys[-1] == "region_eu.age_ge_65"
    assert keys[1].startswith("region_eu.age_18_to_30.5")  # a "." in a value of two keys: hashed, still readable
    assert len(set(keys)) == len(keys) and all(_MLFLOW_KEY.match(f"slice.x.{k}.bce") for k in keys)
    # the same column raw and binned in one cross: the binned one keeps its bracketed name, no two keys merge
    both = readable_slice({"age": 40, name: "[30.5, 65)"})
    assert set(both) == {"age", name}


def test_each_slices_calibration_and_decision_figures_are_metrics_equal_to_its_table():
    rng = np.random.default_rng(12)
    z = rng.normal(0, 1.5, 6000)
    rows = pl.DataFrame(
        {"z": z * 2, "y": (rng.random(6000) < 1 / (1 + np.exp(-z))).astype(int), "g": rng.choice(["a", "b"], 6000)}
    )
    r = evaluate(rows, label="y", model="z", score_kind="logit", slices=["g"])
    metrics = slice_metrics(r.judgement, limit=100)
    for row in r.slices["g"].iter_rows(named=True):
        where = row["slice"].replace("=", "_")  # g=a → g_a
        for figure in ("calibration_gap", "ece", "ece_equal_mass", "precision", "recall"):
            assert metrics[f"slice.g.{where}.{figure}"] == row[figure], (where, figure)
