"""tasks/tracking/run_files.py: a run's files as written before upload. Tables are ``log_table``'s JSON
("split", what MLflow's own reader takes) at full precision, texts and figures as given, and the model's
folder one that ``mlflow.sklearn.load_model`` loads and that predicts as the model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from tasks.tracking.content import RunContent
from tasks.tracking.run_files import files_written

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # bytes written as given, whatever they are


def _content(**kw) -> RunContent:
    return RunContent(experiment="e", run_name="r", **kw)


def test_tables_texts_and_figures_at_their_artifact_paths(tmp_path: Path):
    table = {
        "region": ["north", "south", "é"],
        "bce": [1 / 3, math.pi, 2.0e-17],
        "n_rows": [300, 200, 1],
        "roc_auc": [0.75, None, 0.5],
    }
    content = _content(
        tables={"bce_by_partition.json": table, "audit/worst.json": {"row": [7], "loss": [12.5]}},
        text_artifacts={"summary.md": "# BCE\nnorth: 0.333…\n", "notes/why.txt": "ok"},
        figures={"figures/bce.png": PNG},
    )
    with files_written(content) as (run_files, model_files):
        assert model_files is None  # no model: nothing else to write
        folder = run_files.result()
        written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert written == {
            "bce_by_partition.json",
            "audit/worst.json",
            "summary.md",
            "notes/why.txt",
            "figures/bce.png",
        }
        assert (folder / "summary.md").read_text(encoding="utf-8") == "# BCE\nnorth: 0.333…\n"
        assert (folder / "notes" / "why.txt").read_text() == "ok"
        assert (folder / "figures" / "bce.png").read_bytes() == PNG
        raw = json.loads((folder / "bce_by_partition.json").read_text(encoding="utf-8"))
        # MLflow's log_table writes the same form, but at pandas' 10 digits; MLflow reads it back with read_json
        reference = json.loads(pd.DataFrame(table).to_json(orient="split", index=False))
        back = pd.read_json(str(folder / "bce_by_partition.json"), orient="split")  # MlflowClient.load_table's call
    assert raw["columns"] == reference["columns"] == list(table)
    assert raw["data"] == [list(row) for row in zip(*table.values())]  # full precision: 1/3 and pi exactly
    assert reference["data"][0][1] != 1 / 3 and reference["data"][0][1] == round(1 / 3, 10)  # what it would lose
    pd.testing.assert_frame_equal(back, pd.DataFrame(table), check_dtype=False)
    assert not folder.exists()  # the temporary folder goes with the block


def test_the_model_folder_loads_with_mlflow_and_predicts_as_the_model(tmp_path: Path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (X.to_numpy() @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=200) > 0).astype(np.int64)
    model = LogisticRegression().fit(X, y)
    content = _content(
        model=model, model_input_example=X.head(20), model_output_example=model.predict_proba(X.head(20))
    )
    with files_written(content) as (run_files, model_files):
        folder, entry = model_files.result()
        assert run_files.result().is_dir()
        loaded = mlflow.sklearn.load_model(str(folder))
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
        np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
        assert entry.signature.inputs.input_names() == ["a", "b", "c"]
        assert "sklearn" in entry.flavors and (folder / "MLmodel").is_file()
        requirements = (folder / "requirements.txt").read_text().split()
        assert any(r.startswith("scikit-learn==") for r in requirements)
