"""The nightly series: the band of each partition's own history (checked against the formula by
hand on a synthetic series with one partition drifting), and ``--max-drift`` as a gate end to end."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tasks.series import OVERALL, SERIES_TAG, drift_band


def _synthetic_history(rng: np.random.Generator, runs: int = 12) -> pl.DataFrame:
    rows = []
    for r in range(runs):
        for key, level in (("region_a", 0.40), ("region_b", 0.55), ("region_c", 0.70), (OVERALL, 0.52)):
            rows.append({"run_id": f"r{r}", "start_time": r, "key": key, "bce": level + rng.normal(0, 0.004)})
    # one bad night in b's past: the robust band is not widened by it
    rows.append({"run_id": "r12", "start_time": 12, "key": "region_b", "bce": 0.95})
    return pl.DataFrame(rows)


def test_the_band_is_the_median_and_robust_spread_of_each_partitions_own_history():
    rng = np.random.default_rng(5)
    history = _synthetic_history(rng)
    current = {OVERALL: (OVERALL, 0.521, 0.002), "region_a": ("region=a", 0.401, 0.003),
               "region_b": ("region=b", 0.552, 0.003), "region_c": ("region=c", 0.78, 0.003)}  # c drifts
    band = drift_band(history, current, k=3.0)
    assert band.filter(pl.col("drifted")).get_column("partition").to_list() == ["region=c"]
    for key, (_, bce, se) in current.items():
        past = history.filter(pl.col("key") == key)["bce"].to_numpy()
        median = float(np.median(past))
        sigma = math.sqrt((1.4826 * float(np.median(np.abs(past - median)))) ** 2 + se**2)  # by hand
        row = band.filter(pl.col("key") == key).row(0, named=True)
        assert row["median"] == pytest.approx(median, rel=1e-12) and row["n_history"] == len(past)
        assert row["low"] == pytest.approx(median - 3 * sigma, rel=1e-12) and row["high"] == pytest.approx(median + 3 * sigma, rel=1e-12)
    # b's one bad night (0.95) leaves its band narrow: a value near the usual level is inside
    b = band.filter(pl.col("key") == "region_b").row(0, named=True)
    assert b["high"] - b["low"] < 0.06
    # too little history: no band, never flagged
    short = drift_band(history.filter(pl.col("start_time") < 2), current)
    assert short["low"].null_count() == short.height and not short["drifted"].any()


def test_a_partition_that_drifts_in_a_repeated_evaluation_fails_max_drift(prefect_server, mlflow_uri, hive_data):
    fitted = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], cache=False))
    settings = EvaluateSettings(data=str(hive_data), label="label", model_uri=f"runs:/{fitted.run_id}/model", gates={"max_drift": 3.0})
    for _ in range(3):  # three quiet nights (the fitting run is the first of the series)
        night = evaluate_flow(settings, return_state=True).result(raise_on_failure=False)
        assert night.gate_passed, night.gate.message
    # the next night, 45% of the south region's labels are flipped
    south = Path(hive_data) / "region=south" / "part-0.parquet"
    df = pl.read_parquet(south)
    flip = np.random.default_rng(3).random(df.height) < 0.45
    df.with_columns(pl.Series("label", np.where(flip, 1 - df["label"].to_numpy(), df["label"].to_numpy()))).write_parquet(south)
    state = evaluate_flow(settings, return_state=True)
    drifted = state.result(raise_on_failure=False)
    assert state.is_failed() and not drifted.gate_passed
    assert "region=south" in drifted.gate.message and "left the band of their own history" in drifted.gate.message
    assert drifted.gate.partitions == ["region=south"] or set(drifted.gate.partitions) <= {"region=south", OVERALL}
    client = mlflow.MlflowClient()
    run = client.get_run(drifted.run_id)
    assert run.data.tags[SERIES_TAG] == f"data:{hive_data}#label"
    assert "region=south" in run.data.tags["drift.partitions"]
    arts = {a.path for a in client.list_artifacts(drifted.run_id)} | {a.path for a in client.list_artifacts(drifted.run_id, "plots")}
    assert {"bce_series.json", "plots/bce_series.png", "report.html"} <= arts
    report = Path(mlflow.artifacts.download_artifacts(run_id=drifted.run_id, artifact_path="report.html")).read_text()
    assert "Nightly series" in report and 'id="plots/bce_series.png"' in report
