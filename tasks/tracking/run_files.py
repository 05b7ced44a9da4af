"""One run's files, written locally before they are uploaded: its tables (``log_table``'s JSON), texts
and figures, and its model's folder as ``log_model`` writes it.

The model's folder is written by MLflow's own ``mlflow.sklearn.save_model`` (:func:`save_sklearn_model`);
:class:`tasks.tracking.adapter.MlflowTracker` uploads what is written.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tasks.tracking.content import RunContent


@contextlib.contextmanager
def files_written(content: "RunContent") -> Iterator[tuple[Future, Future | None]]:
    """The run's files (:func:`_write_files`), then its model's (:func:`_save_model`), written into a
    temporary folder on a thread of their own while the first requests go: the model's take seconds
    of CPU (skops' first import, MLflow's check of the installed packages)."""
    with tempfile.TemporaryDirectory(prefix="bce-eval-log-") as tmp, ThreadPoolExecutor(1) as pool:
        run_files = pool.submit(_write_files, content, Path(tmp, "run"))
        yield run_files, pool.submit(_save_model, content, Path(tmp, "model")) if content.model is not None else None


def _write_files(content: "RunContent", folder: Path) -> Path:
    """The run's files at their artifact paths under ``folder``: tables (``log_table``'s JSON), texts, figures."""
    # log_table's JSON ("split"), at full precision (its pandas JSON keeps 10 digits; 10,000 rows cost 0.25 s)
    tables = {
        name: json.dumps({"columns": list(t), "data": [list(r) for r in zip(*t.values())]})
        for name, t in content.tables.items()
    }
    folder.mkdir()
    for name, text in {**tables, **content.text_artifacts}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    for name, png in content.figures.items():  # the report's bytes
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png)
    return folder


def _save_model(content: "RunContent", folder: Path) -> tuple[Path, Any]:
    return folder, save_sklearn_model(content.model, content.model_input_example, content.model_output_example, folder)


def save_sklearn_model(model: Any, X_example: Any, y_example: Any, path: Any) -> Any:
    """Write a scikit-learn model's files (what ``log_model`` uploads) to the local folder ``path``;
    returns its ``MLmodel`` entry (the tracker adds the ids of the logged model they go to)."""
    from importlib.metadata import version

    import mlflow.sklearn
    from mlflow.models import Model, infer_signature

    signature = infer_signature(X_example, y_example) if X_example is not None else None
    kwargs: dict[str, Any] = {}
    if type(model).__name__ == "MLPClassifier" and getattr(model, "solver", "") == "sgd":
        kwargs["skops_trusted_types"] = ["sklearn.neural_network._stochastic_optimizers.SGDOptimizer"]
    entry = Model()
    mlflow.sklearn.save_model(
        model,
        str(path),
        mlflow_model=entry,
        signature=signature,
        # given requirements: MLflow would otherwise spend ~7 s inferring them in a subprocess
        pip_requirements=[f"scikit-learn=={version('scikit-learn')}"],
        **kwargs,
    )
    return entry
