"""Slicings and weights through the CLI: every slicing's table in MLflow equals scikit-learn on the same rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, d2_log_loss_score, log_loss, roc_auc_score

from tests.conftest import run_cli_in_process as run_cli


@pytest.fixture
def cli(prefect_server, mlflow_uri, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    return lambda args: run_cli(args, capsys)


def _write(root: Path, seed: int = 5, days: int = 3, rows: int = 4000, negative_weight: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(days):
        p = rng.uniform(0.02, 0.98, rows)
        df = pd.DataFrame(
            {
                "p": p,
                "y": (rng.uniform(size=rows) < np.clip(p + rng.normal(0, 0.1, rows), 0, 1)).astype(int),
                "region": rng.choice(["eu", "us", "apac"], rows),
                "age": rng.uniform(15, 80, rows),
                "w": rng.exponential(1.0, rows),
            }
        )
        if negative_weight and d == 1:
            df.loc[7, "w"] = -0.5
        (root / f"day=2026-01-0{d + 1}").mkdir(parents=True, exist_ok=True)
        pl.from_pandas(df).write_parquet(root / f"day=2026-01-0{d + 1}" / "part.parquet")
        frames.append(df.assign(day=f"2026-01-0{d + 1}"))
    return pd.concat(frames, ignore_index=True)


def _reference(g: pd.DataFrame) -> dict[str, float]:
    y, p, w = g["y"].to_numpy(), g["p"].to_numpy(), g["w"].to_numpy()
    base = np.average(y, weights=w)
    bce = log_loss(y, p, sample_weight=w, labels=[0, 1])
    return {
        "n_rows": len(g),
        "bce": bce,
        "brier": brier_score_loss(y, p, sample_weight=w),
        "accuracy": accuracy_score(y, p > 0.5, sample_weight=w),
        "d2_log_loss": d2_log_loss_score(y, p, sample_weight=w),
        "normalized_entropy": bce / -(base * math.log(base) + (1 - base) * math.log(1 - base)),
        "roc_auc": roc_auc_score(y, p, sample_weight=w),
    }


def _artifact(client, run_id: str, path: str, tmp: Path) -> pd.DataFrame:
    """A table MLflow's ``log_table`` wrote (``{"columns": [...], "data": [...]}``)."""
    logged = json.loads(Path(client.download_artifacts(run_id, path, str(tmp))).read_text())
    return pd.DataFrame(logged["data"], columns=logged["columns"])


def test_weighted_slicings_equal_scikit_learn_per_slice_and_overall(cli, mlflow_uri, tmp_path):
    import mlflow

    rows = _write(tmp_path / "data")
    slices = ["region", "region*age:30,60", "region=eu"]
    code, out, err = cli(
        ["evaluate", str(tmp_path / "data"), "--label", "y", "--score-col", "p", "--weight-col", "w"]
        + sum((["--slice", s] for s in slices), [])
    )
    assert code == 0, err
    run_id = out.split("MLflow run ")[1].split()[0]
    client = mlflow.MlflowClient(mlflow_uri)
    overall, want = client.get_run(run_id).data.metrics, _reference(rows)
    for f in ("bce", "brier", "accuracy", "d2_log_loss", "normalized_entropy"):
        assert overall[f] == pytest.approx(want[f], rel=1e-12), f
    assert abs(overall["roc_auc"] - want["roc_auc"]) <= overall["roc_auc_bound"] + 1e-12

    rows["age_bin"] = pd.cut(rows["age"], [-np.inf, 30, 60, np.inf], right=False, labels=["< 30", "[30, 60)", ">= 60"])
    groups = {
        "region": rows.groupby("region"),
        "region_x_age_30_60_": rows.groupby(["region", "age_bin"], observed=True),
        "region_eu": rows[rows["region"] == "eu"].groupby("region"),
    }
    for key, grouped in groups.items():
        table = _artifact(client, run_id, f"slices/bce_by_{key}.json", tmp_path / key)
        assert len(table) == grouped.ngroups, key
        for name, g in grouped:
            name = name if isinstance(name, tuple) else (name,)
            match = table["region"] == name[0]
            if len(name) > 1:
                match &= table["age[30,60]"] == name[1]
            (row,) = table[match].to_dict("records")
            ref = _reference(g)
            assert row["n_rows"] == ref["n_rows"]
            for f in ("bce", "brier", "accuracy", "d2_log_loss", "normalized_entropy"):
                assert row[f] == pytest.approx(ref[f], rel=1e-12), (key, name, f)
            assert abs(row["roc_auc"] - ref["roc_auc"]) <= row["roc_auc_bound"] + 1e-12
        gaps = _artifact(client, run_id, f"slices/gaps_{key}.json", tmp_path / f"g{key}")
        bce = gaps[gaps["figure"] == "bce"].iloc[0]
        per_slice = [_reference(g)["bce"] for _, g in grouped]
        assert bce["difference"] == pytest.approx(max(per_slice) - min(per_slice), rel=1e-9, abs=1e-15)
    report = Path(client.download_artifacts(run_id, "report.html", str(tmp_path / "r"))).read_text()
    assert "Slicing region_x_age_30_60_: 9 slice(s)" in report and "plots/slices/bce_by_region.png" in report
    assert "slicing region: 3 slice(s)" in out


def test_a_negative_weight_is_one_line_naming_the_file(cli, tmp_path):
    _write(tmp_path / "data", negative_weight=True)
    code, out, err = cli(["evaluate", str(tmp_path / "data"), "--label", "y", "--score-col", "p", "--weight-col", "w"])
    assert code == 2
    assert "day=2026-01-02" in err[-1] and "weight column 'w' has 1 negative" in err[-1], err
    assert "Traceback" not in out + "".join(err)


def test_a_slice_over_a_column_that_is_not_there_is_one_line(cli, tmp_path):
    _write(tmp_path / "data", days=1, rows=200)
    code, _, err = cli(["evaluate", str(tmp_path / "data"), "--label", "y", "--score-col", "p", "--slice", "country"])
    assert code == 2 and "no column 'country' to slice by" in err[-1], err
    code, _, err = cli(["evaluate", str(tmp_path / "data"), "--label", "y", "--score-col", "p", "--slice", "age:30,20"])
    assert code == 2 and "bin edges must be finite and increasing" in err[-1], err


def test_a_run_adding_a_slicing_over_cached_columns_reuses_them_and_equals_a_full_pass(cli, mlflow_uri, tmp_path):
    import mlflow

    _write(tmp_path / "data", days=2, rows=1500)
    base = ["evaluate", str(tmp_path / "data"), "--label", "y", "--score-col", "p", "--weight-col", "w"]
    runs = {}
    for name, extra in (
        ("cross", ["--slice", "region*age:30,60"]),
        ("reused", ["--slice", "region", "--slice", "age:30,60"]),  # both roll up from the cached cross
        ("full", ["--slice", "region", "--slice", "age:30,60", "--full"]),
        ("other bins", ["--slice", "age:20,40"]),  # not in the cache: computed
    ):
        code, out, err = cli(base + extra)
        assert code == 0, err
        runs[name] = (out.split("MLflow run ")[1].split()[0], out)
    assert "0 computed, 2 reused" in runs["reused"][1]
    assert "2 computed, 0 reused" in runs["other bins"][1]
    client = mlflow.MlflowClient(mlflow_uri)
    for key in ("region", "age_30_60_"):
        reused = _artifact(client, runs["reused"][0], f"slices/bce_by_{key}.json", tmp_path / f"a{key}")
        full = _artifact(client, runs["full"][0], f"slices/bce_by_{key}.json", tmp_path / f"b{key}")
        assert list(reused["slice"]) == list(full["slice"])
        for f in ("n_rows", "bce", "brier", "accuracy", "normalized_entropy"):
            assert np.allclose(reused[f], full[f], rtol=1e-12, atol=0), (key, f)


def _night(root: Path, seed: int, mix: tuple[float, float, float], rows: int = 20_000) -> None:
    """One night of a calibrated model: three segments whose rates it predicts exactly, in proportions ``mix``."""
    rng = np.random.default_rng(seed)
    rates = np.array([0.03, 0.5, 0.1])
    p = rates[rng.choice(3, size=rows, p=mix)]
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"p": p, "y": (rng.uniform(size=rows) < p).astype(int)}).write_parquet(root / "night.parquet")


def test_a_base_rate_shift_moves_raw_bce_out_of_its_band_but_not_normalized_entropy(cli, mlflow_uri, tmp_path):
    import mlflow

    data = tmp_path / "nightly"
    base = ["evaluate", str(data), "--label", "y", "--score-col", "p"]
    for night in range(4):  # the history: the same model, the same population
        _night(data, night, (0.4, 0.2, 0.4))
        code, _, err = cli(base)
        assert code == 0, err
    # the population shifts (more of the 0.5 segment: base rate 0.152 → 0.199); the model is unchanged
    _night(data, 99, (0.3, 0.3, 0.4))
    code, out, err = cli([*base, "--gate", "normalized_entropy drift <= 3"])
    assert code == 0, err
    ne_run = mlflow.MlflowClient(mlflow_uri).get_run(out.split("MLflow run ")[1].split()[0])
    code, out, err = cli([*base, "--max-drift", "3"])
    assert code == 3 and "left the band of their own history" in err[-1], err
    bce_run = mlflow.MlflowClient(mlflow_uri).get_run(out.split("MLflow run ")[1].split()[0])
    # by hand: BCE rose by about 0.056 while NE moved by about 0.001 (H of the segment rates over H of the base rate)
    h = lambda r: -(r * math.log(r) + (1 - r) * math.log(1 - r))  # noqa: E731
    before = sum(m * h(r) for m, r in zip((0.4, 0.2, 0.4), (0.03, 0.5, 0.1)))
    after = sum(m * h(r) for m, r in zip((0.3, 0.3, 0.4), (0.03, 0.5, 0.1)))
    assert after - before == pytest.approx(0.0558, abs=1e-3)
    assert bce_run.data.metrics["bce"] == pytest.approx(after, abs=0.02)
    assert ne_run.data.metrics["normalized_entropy"] == pytest.approx(after / h(0.199), abs=0.03)
    assert ne_run.data.tags.get("quality_gate") == "passed"


def test_compare_reports_the_weighted_paired_difference_per_slice(cli, mlflow_uri, tmp_path):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(11)
    n = 3000
    frame = pd.DataFrame({"x": rng.normal(size=n), "region": rng.choice(["eu", "us"], n), "w": rng.exponential(1, n)})
    frame["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * frame["x"]))).astype(int)
    (tmp_path / "d").mkdir()
    pl.from_pandas(frame).write_parquet(tmp_path / "d" / "f.parquet")
    uris = []
    for c in (1.0, 0.001):  # the challenger barely learns: worse
        model = LogisticRegression(C=c).fit(frame[["x"]], frame["y"])
        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(model, name="model", input_example=frame[["x"]].head(3))
        uris.append((f"runs:/{run.info.run_id}/model", model))
    code, out, err = cli(
        ["compare", str(tmp_path / "d"), "--label", "y", "--champion", uris[0][0], "--challenger", uris[1][0]]
        + ["--slice", "region", "--weight-col", "w"]
    )
    assert code == 0, err
    assert "slicing region: 2 slice(s)" in out
    run_id = out.split("MLflow run ")[1].split()[0]
    table = _artifact(mlflow.MlflowClient(mlflow_uri), run_id, "slices/bce_diff_by_region.json", tmp_path / "t")
    for region, g in frame.groupby("region"):
        a = log_loss(g["y"], uris[0][1].predict_proba(g[["x"]])[:, 1], sample_weight=g["w"], labels=[0, 1])
        b = log_loss(g["y"], uris[1][1].predict_proba(g[["x"]])[:, 1], sample_weight=g["w"], labels=[0, 1])
        (row,) = table[table["region"] == region].to_dict("records")
        assert row["bce_diff"] == pytest.approx(b - a, rel=1e-9) and row["verdict"] == "champion better"


def test_the_audit_takes_the_slicings_and_the_weights(cli, mlflow_uri, tmp_path):
    import mlflow

    rows = _write(tmp_path / "data", days=2, rows=2000)
    code, out, err = cli(
        ["evaluate", str(tmp_path / "data"), "--label", "y", "--score-col", "p", "--weight-col", "w"]
        + ["--slice", "region", "--audit"]
    )
    assert code == 0, err
    audit = _artifact(
        mlflow.MlflowClient(mlflow_uri), out.split("MLflow run ")[1].split()[0], "slices/audit_by_region.json", tmp_path
    )
    for region, g in rows.groupby("region"):
        (row,) = audit[audit["region"] == region].to_dict("records")
        p = np.clip(g["p"].to_numpy(), 1e-7, 1 - 1e-7)
        y, w = g["y"].to_numpy(), g["w"].to_numpy()
        keras = -(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7))
        assert row["bce_exact"] == pytest.approx(log_loss(y, g["p"], sample_weight=w), rel=1e-12)
        assert row["bce_keras_clip"] == pytest.approx(np.average(keras, weights=w), rel=1e-12)
        assert row["n_rows"] == len(g)
