"""Incremental evaluation: cached partitions are reused, and the merge is exact."""

from __future__ import annotations

import mlflow
import numpy as np
import polars as pl
import pytest

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tests.conftest import make_frame, write_hive


def _settings(root, **kw):
    return EvaluateSettings(data=str(root), label="label", **kw)


def test_incremental_run_equals_full_recompute(prefect_server, mlflow_uri, hive_data):
    first = evaluate_flow(_settings(hive_data, features=["a", "b", "c"]))
    uri = f"runs:/{first.run_id}/model"
    assert first.overall["partitions_reused"] == 0 and first.overall["partitions_computed"] == 4
    # the logged model has the fitted coefficients, so its scores (and cache keys) are the same
    again = evaluate_flow(_settings(hive_data, model_uri=uri))
    assert again.overall["partitions_reused"] == 4 and again.overall["bce"] == first.overall["bce"]

    # a new partition arrives, and an old file is rewritten under the same name
    write_hive(hive_data, {"central": make_frame(120, 9)})
    make_frame(300, 99).write_parquet(hive_data / "region=north" / "part-0.parquet")
    inc = evaluate_flow(_settings(hive_data, model_uri=uri))
    assert inc.overall["partitions_reused"] == 3  # south, east, west
    assert inc.overall["partitions_computed"] == 2  # central (new), north (rewritten)
    full = evaluate_flow(_settings(hive_data, model_uri=uri, full=True))
    assert full.overall["partitions_reused"] == 0
    for key in ("bce", "accuracy", "brier", "bce_se", "roc_auc", "roc_auc_bound"):
        assert inc.overall[key] == pytest.approx(full.overall[key], rel=1e-12, abs=1e-15), key
    a, b = inc.table.sort("region"), full.table.sort("region")
    for col in ("n_rows", "bce", "accuracy", "brier", "roc_auc"):
        np.testing.assert_allclose(
            a.get_column(col).to_numpy().astype(float), b.get_column(col).to_numpy().astype(float), rtol=1e-12
        )
    run = mlflow.MlflowClient().get_run(inc.run_id)
    assert run.data.metrics["partitions_reused"] == 3 and run.data.metrics["partitions_computed"] == 2


def test_overall_auc_is_within_its_stated_bound(prefect_server, mlflow_uri, hive_data):
    from sklearn.metrics import roc_auc_score

    ev = evaluate_flow(_settings(hive_data, features=["a", "b", "c"]))
    model = mlflow.sklearn.load_model(f"runs:/{ev.run_id}/model")
    df = pl.read_parquet(hive_data, hive_partitioning=True)
    exact = roc_auc_score(
        df.get_column("label").to_numpy(), model.decision_function(df.select("a", "b", "c").to_numpy())
    )
    assert abs(ev.overall["roc_auc"] - exact) <= ev.overall["roc_auc_bound"] + 1e-12
    assert ev.overall["roc_auc_bound"] < 0.01


def test_saved_results_are_the_table_and_overall_as_json(tmp_path, monkeypatch):
    import json
    import math

    from tasks.metrics.cache import save_results

    monkeypatch.setenv("BCE_EVAL_CACHE", str(tmp_path / "cache"))
    table = pl.DataFrame(
        {
            "region": ['a "quoted" name', "é", None],
            "n_rows": [3, 0, 7],
            "bce": [0.1 + 0.2, float("nan"), None],
            "verdict_ok": [True, None, False],
        }
    )
    overall = {"bce": 0.25, "n_rows": 10, "roc_auc": None}
    saved = json.loads(open(save_results("k", table, overall)).read())
    assert saved["overall"] == overall
    # NaN is written as null (valid JSON); every other value exactly, the float's digits included
    expected = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in table.to_dicts()
    ]
    assert saved["table"] == expected
    # an infinite figure stays infinite (not null)
    with_inf = table.with_columns(pl.Series("bce_high", [math.inf, 1.0, -math.inf]))
    rows = json.loads(open(save_results("k2", with_inf, overall)).read())["table"]
    assert [r["bce_high"] for r in rows] == [math.inf, 1.0, -math.inf]
    # a partition key read as bytes and a float32 figure, as json.dumps writes them (Polars panics on
    # the one and writes the other's own shortest digits)
    odd = table.with_columns(pl.Series("key", [b"a", b"b", None]), pl.Series("f32", [0.1, 0.5, None], dtype=pl.Float32))
    rows = json.loads(open(save_results("k3", odd, overall)).read())["table"]
    assert [r["key"] for r in rows] == ["b'a'", "b'b'", None]
    assert [r["f32"] for r in rows] == [float(np.float32(0.1)), 0.5, None]
    assert not list((tmp_path / "results").glob("*.tmp"))


def test_a_cache_path_that_is_a_file_is_one_line_naming_the_setting(
    prefect_server, mlflow_uri, hive_data, tmp_path, monkeypatch, capsys
):
    from tests.conftest import run_cli_in_process

    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("a file, not a folder")
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    monkeypatch.setenv("BCE_EVAL_CACHE", str(not_a_folder))
    args = ["evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"]
    code, out, err = run_cli_in_process(args, capsys)
    assert code == 2, err
    assert err[-1].startswith(f"bce-eval: error: BCE_EVAL_CACHE={not_a_folder}: ") and "--no-cache" in err[-1]
    assert "Traceback" not in out + "\n".join(err)
    assert not_a_folder.read_text() == "a file, not a folder"
    experiment = mlflow.MlflowClient(mlflow_uri).get_experiment_by_name("bce-evaluation")
    assert experiment is None or not mlflow.MlflowClient(mlflow_uri).search_runs([experiment.experiment_id])
    # the remedy the line gives works: the same run without the cache
    code, out, err = run_cli_in_process([*args, "--no-cache"], capsys)
    assert code == 0, err
    df = pl.read_parquet(hive_data, hive_partitioning=True)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    X, y = df.select("a", "b", "c").to_numpy(), df.get_column("label").to_numpy()
    run = mlflow.MlflowClient(mlflow_uri).get_run(out.split("MLflow run ")[1].split()[0])
    assert run.data.metrics["bce"] == pytest.approx(
        log_loss(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1]), rel=1e-9
    )


def test_a_cache_folder_under_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    from tasks.errors import InputError
    from tasks.metrics.cache import check_cache_dir

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("BCE_EVAL_CACHE", str(blocker / "cache"))
    with pytest.raises(InputError, match=r"BCE_EVAL_CACHE=.*blocker/cache: .* not a folder; point BCE_EVAL_CACHE"):
        check_cache_dir(True)
    monkeypatch.setenv("BCE_EVAL_CACHE", str(tmp_path / "fine" / "cache"))
    check_cache_dir(True)
    assert (tmp_path / "fine" / "cache").is_dir() and (tmp_path / "fine" / "results").is_dir()
