"""The seed's second experiment: a short run end to end, and the network evaluated per partition."""

from __future__ import annotations

import mlflow
import mlflow.sklearn
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import accuracy_score, log_loss

from flows.circles import circles_flow
from flows.evaluate import evaluate_flow
from flows.settings import CirclesSettings, EvaluateSettings
from tasks.seed.circles import make_circles_data, train_mlp


def test_make_circles_matches_the_seed_split():
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=1000, noise=0.1, random_state=1)
    train, test = make_circles_data()
    assert train.height == 500 and test.height == 500
    np.testing.assert_array_equal(test.select("x1", "x2").to_numpy(), X[500:])
    np.testing.assert_array_equal(train.get_column("y").to_numpy(), y[:500])


def test_training_history_is_pure_bce_of_the_network():
    train, test = make_circles_data()
    seen = []
    result = train_mlp(train, test, epochs=3, on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2, 3]
    p = result.model.predict_proba(test.select("x1", "x2").to_numpy())[:, 1]
    assert result.history["val_loss"][-1] == pytest.approx(log_loss(test.get_column("y").to_numpy(), p), rel=1e-12)
    assert result.history["val_accuracy"][-1] == pytest.approx(accuracy_score(test.get_column("y").to_numpy(), p > 0.5))
    # the optimiser's loss_ is penalised/averaged differently; ours is recomputed on the whole set
    assert len(result.history["train_loss"]) == 3
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train_mlp(train, test, epochs=0)


def test_the_circles_run_holds_the_final_figures_both_splits_and_the_model(tmp_path):
    import hashlib

    from tasks.seed.circles import plot_learning_curves, write_circles_data
    from tasks.seed.circles_run import circles_content

    train, test = make_circles_data()
    result = train_mlp(train, test, epochs=3, random_state=4)
    train_path, test_path = write_circles_data(train, test, tmp_path)
    content = circles_content(
        "bce-circles", "r", result, plot_learning_curves(result.history), train_path, test_path, train, test, 4
    )
    X, y = train.select("x1", "x2").to_numpy(), train.get_column("y").to_numpy()
    train_accuracy = accuracy_score(y, result.model.predict_proba(X)[:, 1] > 0.5)
    assert content.metrics["final_train_accuracy"] == pytest.approx(train_accuracy)
    assert f"**Train: {train_accuracy:.3f}, Test: " in content.description
    assert content.params["epochs"] == 3 and content.params["random_state"] == 4
    assert content.params["mlp.hidden_layer_sizes"] == (50,)
    # each split as a dataset input: its file, its role, a digest of its rows (equal rows, equal digest)
    assert [(r.source, r.name, r.context) for r in content.datasets] == [
        (train_path, "train", "training"),
        (test_path, "test", "evaluation"),
    ]
    digests = [hashlib.blake2b(df.write_ipc(None).getvalue(), digest_size=16).hexdigest() for df in (train, test)]
    assert [r.digest for r in content.datasets] == digests and digests[0] != digests[1]
    np.testing.assert_array_equal(content.model_output_example, result.model.predict_proba(X[:20]))
    assert content.figures["plots/learning_curves.png"].startswith(b"\x89PNG")


def test_circles_flow_logs_curves_figure_and_model(prefect_server, mlflow_uri, tmp_path):
    out = circles_flow(CirclesSettings(epochs=5, data_dir=str(tmp_path / "circles")))
    client = mlflow.MlflowClient()
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        history = client.get_metric_history(out.run_id, key)
        assert sorted(m.step for m in history) == [1, 2, 3, 4, 5], key
    artifacts = {a.path for a in client.list_artifacts(out.run_id, "plots")}
    assert "plots/learning_curves.png" in artifacts
    model = mlflow.sklearn.load_model(f"runs:/{out.run_id}/model")
    test = pl.read_parquet(tmp_path / "circles" / "test.parquet")
    p = model.predict_proba(test.select("x1", "x2").to_numpy())[:, 1]
    last = [m for m in client.get_metric_history(out.run_id, "val_loss") if m.step == 5][0].value
    assert last == pytest.approx(log_loss(test.get_column("y").to_numpy(), p), rel=1e-6)
    assert out.line.startswith("Train: ") and ", Test: " in out.line
    inputs = {i.dataset.name for i in run.inputs.dataset_inputs}
    assert inputs == {"train", "test"}

    # the evaluation flow scores the network too, per partition, from its probabilities
    root = tmp_path / "by_side"
    for side, part in test.with_columns(
        side=pl.when(pl.col("x1") > 0).then(pl.lit("right")).otherwise(pl.lit("left"))
    ).group_by("side"):
        (root / f"side={side[0]}").mkdir(parents=True)
        part.drop("side").write_parquet(root / f"side={side[0]}" / "part-0.parquet")
    ev = evaluate_flow(EvaluateSettings(data=str(root), label="y", model_uri=f"runs:/{out.run_id}/model"))
    for side in ("left", "right"):
        part = test.filter((pl.col("x1") > 0) == (side == "right"))
        expected = log_loss(
            part.get_column("y").to_numpy(), model.predict_proba(part.select("x1", "x2").to_numpy())[:, 1]
        )
        got = ev.table.filter(pl.col("side") == side).get_column("bce").item()
        assert got == pytest.approx(expected, rel=1e-9)
    assert ev.overall["bce"] == pytest.approx(last, rel=1e-9)
