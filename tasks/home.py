"""Where bce-eval keeps its local state (the SQLite MLflow store in ``mlflow/``, the cache in
``.bce-eval/``, Prefect's home in ``.prefect/``) and finds the shipped data (``data/``).

Run from a checkout, that is the checkout's root; installed as a package (a wheel in a virtual
environment, a Prefect worker's image), it is the current folder.
"""

from __future__ import annotations

from pathlib import Path

#: the folder holding the ``tasks`` and ``flows`` packages (a checkout's root, or site-packages)
CODE_ROOT = Path(__file__).resolve().parents[1]


def project_home() -> Path:
    """The checkout's root when the code runs from one (it has the project's ``pyproject.toml``), else the current
    folder."""
    if (CODE_ROOT / "pyproject.toml").is_file() and (CODE_ROOT / "flows").is_dir():
        return CODE_ROOT
    return Path.cwd()
