"""Gates that know their uncertainty: interval-based verdicts, too-small partitions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tasks.errors import GateFailed
from tasks.gates import GateSettings, check_gates
from tests.conftest import write_hive


def _scored(n: int, losses: np.ndarray) -> pl.DataFrame:
    # label 1 everywhere, stored probability p = exp(-loss): each row's BCE is exactly its loss
    return pl.DataFrame({"y": np.ones(n, dtype=np.int64), "p": np.exp(-losses), "x": np.zeros(n)})


def test_small_partition_over_by_chance_passes_large_truly_worse_fails(prefect_server, mlflow_uri, tmp_path):
    rng = np.random.default_rng(5)
    threshold = 0.7
    small = np.concatenate([np.full(27, 0.3), np.full(3, 5.1)])  # mean 0.78 > 0.7, from 3 bad rows of 30
    large = rng.normal(0.8, 0.05, size=5000).clip(0.01)  # truly above 0.7
    good = rng.normal(0.5, 0.05, size=2000).clip(0.01)
    tiny = rng.exponential(3.0, size=5)
    root = write_hive(tmp_path / "scored", {"small": _scored(30, small), "large": _scored(5000, large), "good": _scored(2000, good), "tiny": _scored(5, tiny)}, key="seg")
    gates = GateSettings(max_partition_bce=threshold, min_rows=10)
    with pytest.raises(GateFailed) as info:
        evaluate_flow(EvaluateSettings(data=str(root), label="y", score_col="p", score_kind="probability", gates=gates))
    ev = info.value.evaluation
    verdict = dict(zip(ev.table.get_column("partition").to_list(), ev.table.get_column("verdict").to_list()))
    assert verdict == {"seg=small": "passed", "seg=large": "failed", "seg=good": "passed", "seg=tiny": "too small"}
    row = ev.table.filter(pl.col("seg") == "small").row(0, named=True)
    assert row["bce"] > threshold > row["bce_low"]  # over the threshold, but not surely
    # the interval is the normal approximation on the per-row losses, computed independently here
    se = np.std(small) / math.sqrt(len(small))
    assert row["bce_low"] == pytest.approx(np.mean(small) - 1.959963984540054 * se, rel=1e-9)
    assert "seg=large" in str(info.value) and "seg=small" not in str(info.value)
    # judged on the point value instead, the small partition fails too
    point = check_gates(ev.table, ev.overall, GateSettings(max_partition_bce=threshold, min_rows=10, judge_on="point"))
    assert set(point.partitions) == {"seg=small", "seg=large"}


def test_min_class_rows_marks_one_sided_partitions_too_small():
    table = pl.DataFrame({"partition": ["a", "b"], "n_rows": [500, 500], "n_pos": [2, 250], "bce": [0.9, 0.9], "bce_se": [0.01, 0.01]})
    result = check_gates(table, {"bce": 0.9}, GateSettings(max_partition_bce=0.5, min_class_rows=10))
    assert result.verdicts == {"a": "too small", "b": "failed"}


def test_regression_gate_against_a_baseline_model_uses_paired_differences(prefect_server, mlflow_uri, hive_data):
    import mlflow

    from flows.compare import compare_flow
    from flows.settings import CompareSettings

    good = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"]))
    weak = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], model_params={"C": 0.001}))
    base = dict(data=str(hive_data), label="label", champion=f"runs:/{good.run_id}/model", challenger=f"runs:/{weak.run_id}/model")
    with pytest.raises(GateFailed, match=r"challenger's BCE is higher by more than 0.0 .*overall") as info:
        compare_flow(CompareSettings(**base, max_regression=0.0))
    result = info.value.evaluation
    run = mlflow.MlflowClient().get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["quality_gate"] == "failed"
    # the paired interval of the overall difference, recomputed from the two runs' per-row losses
    df = pl.read_parquet(hive_data, hive_partitioning=True)
    X, y = df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy()
    losses = []
    for ev in (good, weak):
        z = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model").decision_function(X)
        losses.append(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    d = losses[1] - losses[0]
    assert result["overall"]["bce_diff"] == pytest.approx(d.mean(), rel=1e-9)
    assert result["overall"]["bce_diff_low"] == pytest.approx(d.mean() - 1.959963984540054 * d.std(ddof=1) / math.sqrt(len(d)), rel=1e-9)
    # a generous allowance passes
    ok = compare_flow(CompareSettings(**base, max_regression=1.0))
    assert ok["overall"]["bce_diff"] > 0
