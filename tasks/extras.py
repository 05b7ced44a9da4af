"""bce-eval's optional parts: which extra of the package installs each, and one clear line when one is missing.

``pip install bce-eval`` carries what every evaluation needs; object storage, a Dask cluster, a
PostgreSQL tracking store and the team stack are extras (``pip install 'bce-eval[s3]'``), declared
in ``pyproject.toml`` with the same names. A missing part is bad input for the command that needs
it (exit 2), never an internal error.
"""

from __future__ import annotations

import importlib.util

from tasks.errors import InputError

#: each optional part: the modules it imports, by the extra of pyproject.toml that installs them
EXTRAS: dict[str, tuple[str, ...]] = {
    "s3": ("s3fs",),
    "dask": ("dask", "distributed", "prefect_dask"),
    "postgres": ("psycopg",),
    "stack": ("moto", "flask_wtf", "psycopg", "s3fs", "distributed", "prefect_dask"),
}


def require_extra(extra: str, needed_by: str) -> None:
    """Raise :class:`InputError` naming ``extra`` when a module it installs is missing (``needed_by``: what asked)."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(
            f"{needed_by} needs bce-eval's optional part '{extra}' ({', '.join(missing)} is not installed): "
            f"pip install 'bce-eval[{extra}]'."
        )
