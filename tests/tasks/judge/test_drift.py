"""The nightly series: the band of each partition's own history (checked against the formula by
hand on a synthetic series with one partition drifting), ``--max-drift`` as a gate end to end, the
drift said where a reviewer looks, and one series per model lineage (another model on the same data
is not drift; a new version under the same alias continues the series)."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tasks.judge.drift import (
    HISTORY_RUNS,
    OVERALL,
    SERIES_TAG,
    Series,
    current_points,
    drift_band,
    history_frame,
)
from tasks.review.summary import format_summary
from tasks.tracking.history import search_runs


def read_history(tracking_uri: str, experiment: str, key: str) -> pl.DataFrame:
    """A series' history as the flow reads it."""
    return history_frame(search_runs(tracking_uri, experiment, SERIES_TAG, key, HISTORY_RUNS))


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
    current = {
        OVERALL: (OVERALL, 0.521, 0.002),
        "region_a": ("region=a", 0.401, 0.003),
        "region_b": ("region=b", 0.552, 0.003),
        "region_c": ("region=c", 0.78, 0.003),
    }  # c drifts
    band = drift_band(history, current, k=3.0)
    assert band.filter(pl.col("drifted")).get_column("partition").to_list() == ["region=c"]
    for key, (_, _, se) in current.items():
        past = history.filter(pl.col("key") == key)["bce"].to_numpy()
        median = float(np.median(past))
        sigma = math.sqrt((1.4826 * float(np.median(np.abs(past - median)))) ** 2 + se**2)  # by hand
        row = band.filter(pl.col("key") == key).row(0, named=True)
        assert row["median"] == pytest.approx(median, rel=1e-12) and row["n_history"] == len(past)
        assert row["low"] == pytest.approx(median - 3 * sigma, rel=1e-12) and row["high"] == pytest.approx(
            median + 3 * sigma, rel=1e-12
        )
    # b's one bad night (0.95) leaves its band narrow: a value near the usual level is inside
    b = band.filter(pl.col("key") == "region_b").row(0, named=True)
    assert b["high"] - b["low"] < 0.06
    # too little history: no band, never flagged
    short = drift_band(history.filter(pl.col("start_time") < 2), current)
    assert short["low"].null_count() == short.height and not short["drifted"].any()
    # without --max-drift the drift is still said, with its band, as no gate; with it, as the gate
    c = band.filter(pl.col("key") == "region_c").row(0, named=True)
    quiet = Series("k", history, band, 3.0, gated=False).notice()
    assert (
        f"region=c ({c['bce']:.4f} outside [{c['low']:.4f}, {c['high']:.4f}])" in quiet
        and "median ± 3 robust σ" in quiet
    )
    assert "13 earlier run(s)" in quiet and "not a gate" in quiet and "region=b" not in quiet
    assert "a gate (--max-drift 3)" in Series("k", history, band, 3.0, gated=True).notice()
    assert Series("k", history, short).notice() == ""


def test_a_partition_that_drifts_in_a_repeated_evaluation_fails_max_drift(prefect_server, mlflow_uri, hive_data):
    fitted = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], cache=False))
    settings = EvaluateSettings(
        data=str(hive_data), label="label", model_uri=f"runs:/{fitted.run_id}/model", gates={"max_drift": 3.0}
    )
    for _ in range(3):  # three quiet nights (the fitting run is the first of the series)
        night = evaluate_flow(settings, return_state=True).result(raise_on_failure=False)
        assert night.gate_passed, night.gate.message
    # the next night, 45% of the south region's labels are flipped
    south = Path(hive_data) / "region=south" / "part-0.parquet"
    df = pl.read_parquet(south)
    flip = np.random.default_rng(3).random(df.height) < 0.45
    df.with_columns(
        pl.Series("label", np.where(flip, 1 - df["label"].to_numpy(), df["label"].to_numpy()))
    ).write_parquet(south)
    state = evaluate_flow(settings, return_state=True)
    drifted = state.result(raise_on_failure=False)
    assert state.is_failed() and not drifted.gate_passed
    assert "region=south" in drifted.gate.message and "left the band of their own history" in drifted.gate.message
    assert drifted.gate.partitions == ["region=south"] or set(drifted.gate.partitions) <= {"region=south", OVERALL}
    client = mlflow.MlflowClient()
    run = client.get_run(drifted.run_id)
    # the series of this data and label, and of this logged model (not the run that fitted it)
    assert run.data.tags[SERIES_TAG] == f"data:{hive_data}#label|model:runs:/{fitted.run_id}/model (sklearn)"
    assert "region=south" in run.data.tags["drift.partitions"]
    arts = {a.path for a in client.list_artifacts(drifted.run_id)} | {
        a.path for a in client.list_artifacts(drifted.run_id, "plots")
    }
    assert {"bce_series.json", "plots/bce_series.png", "report.html"} <= arts
    report = Path(mlflow.artifacts.download_artifacts(run_id=drifted.run_id, artifact_path="report.html")).read_text()
    assert "Nightly series" in report and 'id="plots/bce_series.png"' in report
    # the drift is said, with the partition and its band, in the terminal, the description and the report's top
    south = drifted.table.filter(pl.col("partition") == "region=south").row(0, named=True)
    band = (
        pl.DataFrame(_artifact_table(drifted.run_id, "bce_series.json"))
        .filter(pl.col("partition") == "region=south")
        .row(0, named=True)
    )
    assert band["drifted"] and band["bce"] == pytest.approx(south["bce"], rel=1e-12)
    said = f"region=south ({south['bce']:.4f} outside [{band['low']:.4f}, {band['high']:.4f}])"
    summary = format_summary(drifted, "hive", 5, "bce-eval ui")
    assert "  drift: against 3 earlier run(s) of this model on this data, " in summary and said in summary
    assert "a gate (--max-drift 3)" in summary
    assert said in run.data.tags["mlflow.note.content"] and "**Drift:**" in run.data.tags["mlflow.note.content"]
    top = report.split("<h2>")[0]  # the title, the gate's badge and the summary, before the table
    assert said in top and "Drift:" in top


def _artifact_table(run_id: str, name: str) -> dict[str, list]:
    import json

    doc = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name)).read_text())
    return {c: [row[i] for row in doc["data"]] for i, c in enumerate(doc["columns"])}


def _experiment() -> str:
    return EvaluateSettings.model_fields["experiment"].default


def _register_champion(frame, C: float) -> str:
    """A LogisticRegression(C) fitted on ``frame``, logged as a new version of ``churn`` and made its @champion."""
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = frame[["a", "b", "c"]], frame["label"]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression(C=C).fit(X, y), name="model", signature=infer_signature(X), registered_model_name="churn"
        )
    mlflow.MlflowClient().set_registered_model_alias("churn", "champion", info.registered_model_version)
    return str(info.registered_model_version)


def test_a_series_follows_one_model_another_model_on_the_same_data_is_not_drift(prefect_server, mlflow_uri, hive_data):
    client = mlflow.MlflowClient()
    base = dict(data=str(hive_data), label="label", cache=False)
    nights = [evaluate_flow(EvaluateSettings(**base, features=["a", "b", "c"])) for _ in range(3)]  # a nightly refit
    keys = {client.get_run(ev.run_id).data.tags[SERIES_TAG] for ev in nights}
    assert len(keys) == 1
    lr_key = keys.pop()
    # another configuration on the same data: a logistic regression on its weakest feature alone, far worse
    other = evaluate_flow(EvaluateSettings(**base, features=["c"]))
    run = client.get_run(other.run_id)
    assert run.data.tags[SERIES_TAG] != lr_key and run.data.tags[SERIES_TAG].startswith(f"data:{hive_data}#label|fit:")
    assert "drift.partitions" not in run.data.tags and other.drift == ""
    assert "bce_series.json" not in {a.path for a in client.list_artifacts(other.run_id)}  # no history of its own yet
    # in the three-feature series it would have left the band, overall and in most regions: the false drift
    # that one series per data and label showed
    mixed = drift_band(
        read_history(mlflow_uri, _experiment(), lr_key), current_points(other.table, other.overall, ("region",))
    )
    assert mixed.filter(pl.col("key") == OVERALL)["drifted"].item() and mixed["drifted"].sum() >= 4

    # the champion's nightly series: models:/churn@champion, its alias moved from v1 to v2
    frame = pl.read_parquet(hive_data, hive_partitioning=True).to_pandas()
    champion = EvaluateSettings(**base, model_uri="models:/churn@champion")
    assert _register_champion(frame, 1.0) == "1"
    first = evaluate_flow(champion)
    assert _register_champion(frame, 0.002) == "2"  # another fit, the same lineage
    second = evaluate_flow(champion)
    one, two = (client.get_run(ev.run_id) for ev in (first, second))
    assert (
        one.data.tags[SERIES_TAG]
        == two.data.tags[SERIES_TAG]
        == f"data:{hive_data}#label|registered:churn@champion (sklearn)"
    )
    assert two.data.tags["model_version"] == "2" and second.overall["bce"] != pytest.approx(
        first.overall["bce"], rel=1e-3
    )
    assert set(_artifact_table(second.run_id, "bce_series.json")["n_history"]) == {1}  # v1's run is v2's history
    past = read_history(mlflow_uri, _experiment(), two.data.tags[SERIES_TAG])
    assert set(past["run_id"]) == {first.run_id, second.run_id}
    assert past.filter((pl.col("run_id") == first.run_id) & (pl.col("key") == OVERALL))["bce"].item() == pytest.approx(
        first.overall["bce"], rel=1e-12
    )
    # the run list and the terminal name the model: its registered name and version
    assert two.info.run_name.startswith("hive · churn v2 · ") and one.info.run_name.startswith("hive · churn v1 · ")
    assert (
        "  model: churn v2 (sklearn LogisticRegression) from models:/churn@champion"
        in format_summary(second, "hive", 5, "ui").splitlines()
    )
