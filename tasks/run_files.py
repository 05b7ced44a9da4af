"""One run's files, written locally before they are uploaded: its tables (``log_table``'s JSON), texts
and figures, and its model's folder as ``log_model`` writes it.

No MLflow import here (the model's folder comes from :func:`tasks.model.save_sklearn_model`);
:class:`tasks.tracking.MlflowTracker` uploads what is written.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from tasks.run_content import RunContent


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
    from tasks.plots import write_pngs

    # log_table's JSON ("split"), at full precision (its pandas JSON keeps 10 digits; 10,000 rows cost 0.25 s)
    tables = {name: json.dumps({"columns": list(t), "data": [list(r) for r in zip(*t.values())]}) for name, t in content.tables.items()}
    folder.mkdir()
    for name, text in {**tables, **content.text_artifacts}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    if content.figures:
        import matplotlib.pyplot as plt

        write_pngs(content.figures, folder)  # the report's bytes
        for fig in content.figures.values():
            plt.close(fig)
    return folder


def _save_model(content: "RunContent", folder: Path) -> tuple[Path, Any]:
    from tasks.model import save_sklearn_model

    return folder, save_sklearn_model(content.model, content.model_input_example, content.model_output_example, folder)
