"""The BCE audit, checked against independent computations (scikit-learn, Keras' rule by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss

from flows.evaluate import evaluate_flow
from flows.settings import EvaluateSettings
from tests.conftest import write_hive


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _keras_by_hand(y, p, eps=1e-7):
    # keras.backend.binary_crossentropy: clip p to [eps, 1-eps], then add eps inside the logs
    p = np.clip(p, eps, 1 - eps)
    return float(np.mean(-(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))))


def test_audit_three_ways_saturation_and_largest_losses(prefect_server, mlflow_uri, tmp_path):
    rng = np.random.default_rng(11)
    parts = {}
    for name, scale in (("calm", 1.0), ("wild", 45.0)):  # "wild" has confident, sometimes wrong logits
        z = rng.normal(size=400) * scale
        y = (rng.random(400) < _sigmoid(z / scale)).astype(np.int64)
        parts[name] = pl.DataFrame({"z": z, "y": y})
    root = write_hive(tmp_path / "logits", parts, key="seg")
    ev = evaluate_flow(EvaluateSettings(data=str(root), label="y", score_col="z", score_kind="logit", audit=True))
    path = mlflow.artifacts.download_artifacts(run_id=ev.run_id, artifact_path="bce_audit.json")
    doc = json.loads(Path(path).read_text())
    audit = pl.DataFrame(doc["data"], schema=doc["columns"], orient="row")
    for name, df in parts.items():
        z, y = df.get_column("z").to_numpy(), df.get_column("y").to_numpy()
        row = audit.filter(pl.col("seg") == name).row(0, named=True)
        exact = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
        assert row["bce_exact"] == pytest.approx(exact, rel=1e-12)
        assert row["bce_sklearn_clip"] == pytest.approx(log_loss(y, _sigmoid(z), labels=[0, 1]), rel=1e-9)
        assert row["bce_keras_clip"] == pytest.approx(_keras_by_hand(y, _sigmoid(z)), rel=1e-6)
        p = _sigmoid(z)
        assert row["n_p_zero"] == int(np.sum(p == 0.0)) and row["n_p_one"] == int(np.sum(p == 1.0))
        assert row["bce_pos"] == pytest.approx(
            np.mean((np.maximum(z, 0) - z + np.log1p(np.exp(-np.abs(z))))[y == 1]), rel=1e-12
        )
    wild = audit.filter(pl.col("seg") == "wild").row(0, named=True)
    assert wild["n_p_one"] > 0 and wild["bce_exact"] > wild["bce_sklearn_clip"]  # clipping hides the worst losses
    top_path = mlflow.artifacts.download_artifacts(run_id=ev.run_id, artifact_path="largest_losses.json")
    top = json.loads(Path(top_path).read_text())
    losses = [r[top["columns"].index("loss")] for r in top["data"]]
    all_losses = np.concatenate(
        [
            np.maximum(d["z"].to_numpy(), 0)
            - d["z"].to_numpy() * d["y"].to_numpy()
            + np.log1p(np.exp(-np.abs(d["z"].to_numpy())))
            for d in parts.values()
        ]
    )
    np.testing.assert_allclose(losses, np.sort(all_losses)[::-1][: len(losses)], rtol=1e-12)
    assert "seg" in top["columns"] and "z" in top["columns"]
    run = mlflow.MlflowClient().get_run(ev.run_id)
    assert run.data.metrics["bce_keras_clip"] == pytest.approx(
        _keras_by_hand(
            np.concatenate([d["y"].to_numpy() for d in parts.values()]),
            _sigmoid(np.concatenate([d["z"].to_numpy() for d in parts.values()])),
        ),
        rel=1e-6,
    )
    # the calibration part is what binned, in-sample recalibration removes: never more than the BCE
    assert all(0 <= r <= e for r, e in zip(audit.get_column("bce_recalibrated"), audit.get_column("bce_exact")))
    # the terminal's headline says the same, in one line
    ys = np.concatenate([d["y"].to_numpy() for d in parts.values()])
    ps = _sigmoid(np.concatenate([d["z"].to_numpy() for d in parts.values()]))
    assert ev.audit_headline.startswith(
        f"audit: BCE exact {ev.overall['bce']:.4f}, as sklearn's log_loss {log_loss(ys, ps, labels=[0, 1]):.4f}"
    )
    assert f"{int(np.sum(ps == 0.0) + np.sum(ps == 1.0)):,} row(s) with p exactly 0 or 1" in ev.audit_headline
