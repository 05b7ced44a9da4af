"""The evaluation flow end to end: real Prefect flow runs, a real (temporary) MLflow store."""

from __future__ import annotations

import json
import re
from datetime import UTC
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tasks.errors import InputError
from tests.conftest import REPO

SEED_P = [0.19, 0.33, 0.47, 0.7, 0.74, 0.81, 0.86, 0.94, 0.97, 0.99]


def _artifact_json(run_id: str, name: str) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name)
    return json.loads(Path(path).read_text())


def _table(run_id: str, name: str = "bce_by_partition.json") -> pl.DataFrame:
    doc = _artifact_json(run_id, name)
    return pl.DataFrame(doc["data"], schema=doc["columns"], orient="row")


def test_seed_points_reproduce_the_article(prefect_server, mlflow_uri, seed_points):
    ev = evaluate_flow(EvaluateSettings(data=str(seed_points), label="y", features=["x"]))
    run = mlflow.MlflowClient().get_run(ev.run_id)
    assert run.info.status == "FINISHED"
    assert round(run.data.metrics["bce"], 4) == 0.3329
    preds = _table(ev.run_id, "predictions.json")
    assert [round(p, 2) for p in preds.get_column("p").to_list()] == SEED_P
    # independent: scikit-learn on the seed's arrays
    x = np.array([-2.2, -1.4, -0.8, 0.2, 0.4, 0.8, 1.2, 2.2, 2.9, 4.6]).reshape(-1, 1)
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1, 1, 1])
    model = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model")
    assert run.data.metrics["bce"] == pytest.approx(log_loss(y, model.predict_proba(x)[:, 1]), rel=1e-9)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(ev.run_id, "plots")}
    assert {"plots/fitted_sigmoid.png", "plots/log_loss_curve.png", "plots/reliability.png"} <= artifacts


def test_hive_dataset_matches_sklearn_per_partition(prefect_server, mlflow_uri, hive_data):
    ev = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], run_name="hive"))
    client = mlflow.MlflowClient()
    run = client.get_run(ev.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "hive"
    assert run.data.params["n_partitions"] == "4"
    assert run.data.tags["data_fingerprint"] == run.data.params["data_fingerprint"]
    model = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model")
    info = mlflow.models.get_model_info(f"runs:/{ev.run_id}/model")
    assert info.signature is not None and info.signature.inputs.input_names() == ["a", "b", "c"]

    df = pl.read_parquet(hive_data, hive_partitioning=True)
    table = _table(ev.run_id)
    assert {"region", "n_rows", "bce", "accuracy", "roc_auc", "brier"} <= set(table.columns)
    # the UI lists it among the run's tables, as mlflow.log_table would mark it, read back by MLflow's own loader
    assert {"path": "bce_by_partition.json", "type": "table"} in json.loads(run.data.tags["mlflow.loggedArtifacts"])
    loaded = client.load_table(run.info.experiment_id, "bce_by_partition.json", run_ids=[ev.run_id])
    assert sorted(loaded["region"]) == sorted(table.get_column("region").to_list())
    all_y, all_p = [], []
    for region, part in df.group_by("region"):
        X = part.select("a", "b", "c").to_numpy()
        y = part.get_column("label").to_numpy()
        p = model.predict_proba(X)[:, 1]
        all_y.append(y)
        all_p.append(p)
        expected = log_loss(y, p, labels=[0, 1])
        row = table.filter(pl.col("region") == region[0]).row(0, named=True)
        assert row["n_rows"] == len(y)
        assert row["bce"] == pytest.approx(expected, rel=1e-6)
        key = [k for k in run.data.metrics if k.startswith("bce_by_partition/") and region[0] in k]
        assert len(key) == 1 and run.data.metrics[key[0]] == pytest.approx(expected, rel=1e-6)
    overall = log_loss(np.concatenate(all_y), np.concatenate(all_p))
    assert run.data.metrics["bce"] == pytest.approx(overall, rel=1e-6)
    # the overall figure is the row mean, which differs from the mean of partition means here
    assert abs(overall - table.get_column("bce").mean()) > 1e-4
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "hive"


def test_existing_model_is_evaluated_without_fitting(prefect_server, mlflow_uri, hive_data):
    first = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"]))
    uri = f"runs:/{first.run_id}/model"
    # features come from the model's signature when not given
    second = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", model_uri=uri))
    client = mlflow.MlflowClient()
    run = client.get_run(second.run_id)
    assert run.data.params["model_uri"] == uri
    assert run.data.tags["model_source_run_id"] == first.run_id
    assert run.data.metrics["bce"] == pytest.approx(first.overall["bce"], rel=1e-12)
    assert "model" not in {a.path for a in client.list_artifacts(second.run_id)}


def test_bad_input_leaves_no_finished_run(prefect_server, mlflow_uri, hive_data):
    bad = hive_data / "region=north" / "part-0.parquet"
    df = pl.read_parquet(bad).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(7).otherwise(pl.col("label")).alias("label")
    )
    df.write_parquet(bad)
    with pytest.raises(InputError, match=r"region=north/part-0.parquet: label column 'label' has value 7"):
        evaluate_flow(
            EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"], experiment="bad-input")
        )
    exp = mlflow.MlflowClient().get_experiment_by_name("bad-input")
    runs = mlflow.MlflowClient().search_runs([exp.experiment_id]) if exp else []
    assert not [r for r in runs if r.info.status == "FINISHED"]


@pytest.mark.parametrize("kind", ["probability", "logit"])
def test_stored_predictions_are_evaluated_without_a_model(prefect_server, mlflow_uri, hive_data, kind):
    from sklearn.linear_model import LogisticRegression

    df = pl.read_parquet(hive_data, hive_partitioning=True)
    model = LogisticRegression().fit(df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy())
    for path in hive_data.rglob("*.parquet"):
        part = pl.read_parquet(path)
        X = part.select("a", "b", "c").to_numpy()
        score = model.predict_proba(X)[:, 1] if kind == "probability" else model.decision_function(X)
        part.with_columns(pl.Series("score", score)).write_parquet(path)
    ev = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", score_col="score", score_kind=kind))
    p_all = model.predict_proba(df.select("a", "b", "c").to_numpy())[:, 1]
    assert ev.overall["bce"] == pytest.approx(log_loss(df.get_column("label").to_numpy(), p_all), rel=1e-9)
    run = mlflow.MlflowClient().get_run(ev.run_id)
    assert run.data.params["model"] == f"stored {kind} column 'score'"
    assert "model" not in {a.path for a in mlflow.MlflowClient().list_artifacts(ev.run_id)}


def test_prefect_yaml_deployments_are_valid():
    import importlib

    import yaml

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert spec["deployments"]
    for dep in spec["deployments"]:
        module, func = dep["entrypoint"].split(":")
        flow_obj = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), func)
        assert flow_obj.name == "bce-evaluate"
        settings = EvaluateSettings(**dep["parameters"]["settings"])
        assert settings.gates.active
        assert [s["cron"] for s in dep["schedules"]]


def test_gate_fails_after_logging_the_whole_run(prefect_server, mlflow_uri, hive_data):
    from tasks.judge.gates import GateSettings

    settings = EvaluateSettings(
        data=str(hive_data), label="label", features=["a", "b", "c"], gates=GateSettings(max_partition_bce=0.01)
    )
    state = evaluate_flow(settings, return_state=True)
    # the flow run ends Failed with the reason; its data is the whole evaluation, logged
    assert state.is_failed()
    assert re.search(r"4 partition\(s\) whose 95% interval lies above 0.01: .*region=", state.message)
    evaluation = state.result(raise_on_failure=False)
    run = mlflow.MlflowClient().get_run(evaluation.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["quality_gate"] == "failed"
    assert set(run.data.tags["quality_gate.partitions"].split(",")) == {
        f"region={r}" for r in ("north", "south", "east", "west")
    }


def test_date_window_selects_the_newest_partitions(prefect_server, mlflow_uri, tmp_path):
    from datetime import datetime

    from tests.conftest import make_frame, write_hive

    root = write_hive(tmp_path / "daily", {f"2026-11-{d:02d}": make_frame(50, d) for d in range(18, 25)}, key="day")
    from tasks.data.dataset import discover_dataset

    ds = discover_dataset(
        root,
        "label",
        ["a", "b", "c"],
        date_key="day",
        window_days=3,
        reference=datetime(2026, 11, 24, 2, tzinfo=UTC),
    )
    assert sorted({f.hive["day"] for f in ds.files}) == ["2026-11-22", "2026-11-23", "2026-11-24"]
    ds = discover_dataset(root, "label", ["a", "b", "c"], where={"day": ["2026-11-18"]})
    assert [f.hive["day"] for f in ds.files] == ["2026-11-18"]
    with pytest.raises(InputError, match="no partition matches"):
        discover_dataset(
            root,
            "label",
            ["a", "b", "c"],
            date_key="day",
            window_days=2,
            reference=datetime(2027, 1, 1, tzinfo=UTC),
        )


def test_runs_are_named_by_flavour_and_class_and_the_terminal_names_the_model(prefect_server, mlflow_uri, hive_data):
    """XGBoost's and LightGBM's boosters share a class name (``Booster``): a run's default name and the
    summary say the flavour too (a registered model's name and version: tests/test_series.py)."""
    import mlflow.lightgbm
    import mlflow.xgboost
    from lightgbm import LGBMClassifier
    from mlflow.models import infer_signature
    from xgboost import XGBClassifier

    from tasks.review.summary import format_summary

    frame = pl.read_parquet(hive_data, hive_partitioning=True).to_pandas()
    X, y = frame[["a", "b", "c"]], frame["label"]
    with mlflow.start_run() as logged:
        mlflow.xgboost.log_model(
            XGBClassifier(n_estimators=10, max_depth=2).fit(X, y), name="xgb", signature=infer_signature(X)
        )
        mlflow.lightgbm.log_model(
            LGBMClassifier(n_estimators=10, verbose=-1).fit(X, y), name="lgbm", signature=infer_signature(X)
        )
    client = mlflow.MlflowClient()
    names, summaries = {}, {}
    for flavour, path in (("xgboost", "xgb"), ("lightgbm", "lgbm")):
        uri = f"runs:/{logged.info.run_id}/{path}"
        ev = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", model_uri=uri))
        names[flavour] = client.get_run(ev.run_id).info.run_name
        summaries[flavour] = format_summary(ev, "hive", 5, "ui").splitlines()[1]
        assert re.fullmatch(rf"hive · {flavour} \w+ · \d{{4}}-\d\d-\d\d \d\d:\d\d", names[flavour]), names[flavour]
        assert summaries[flavour] == f"  model: {names[flavour].split(' · ')[1]} from {uri}"
    assert names["xgboost"].split(" · ")[1] != names["lightgbm"].split(" · ")[1]
    # a model fitted here, and stored scores, are named as such in the terminal
    fitted = evaluate_flow(EvaluateSettings(data=str(hive_data), label="label", features=["a", "b", "c"]))
    assert format_summary(fitted, "hive", 5, "ui").splitlines()[1] == "  model: LogisticRegression fitted on this data"
    assert " · LogisticRegression · " in client.get_run(fitted.run_id).info.run_name
