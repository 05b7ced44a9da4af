"""Reaching the tracking server: does it accept this process's credentials (one request, before any
work), and the command that opens its UI."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.errors import InputError
from tasks.extras import require_extra
from tasks.home import project_home
from tasks.redact import redact_uri


def default_store_uri() -> str:
    """The SQLite store used when ``MLFLOW_TRACKING_URI`` is unset: ``mlflow/mlflow.db`` in the project's home."""
    return f"sqlite:///{project_home() / 'mlflow' / 'mlflow.db'}"


def check_tracking_access(tracking_uri: str) -> None:
    """An HTTP tracking server accepts this process's credentials: one cheap request before any work.

    MLflow's client sends ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (basic auth) or
    ``MLFLOW_TRACKING_TOKEN`` (bearer); the same go with this request. A refusal (401/403) is bad
    input, reported at once instead of after the pass and three retries; an unreachable server is
    left to the logging step, which retries and keeps the results locally.
    """
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    if tracking_uri.startswith("postgresql"):  # MLflow's SQLAlchemy store reaches PostgreSQL through psycopg
        require_extra("postgres", "a PostgreSQL tracking store (MLFLOW_TRACKING_URI)")
    if not tracking_uri.startswith(("http://", "https://")):
        return
    # credentials in the URI (http://user:password@host) go in the header, as MLflow's client sends them
    parts = urllib.parse.urlsplit(tracking_uri)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password, token = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD", "TOKEN"))
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise access_denied(tracking_uri, exc.code) from None
    except OSError:
        pass


def access_denied(tracking_uri: str, code: int) -> InputError:
    import urllib.parse

    in_uri = urllib.parse.urlsplit(tracking_uri).username
    user = urllib.parse.unquote(in_uri) if in_uri else os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user '{user}'" if user else "a request without credentials"
    if code == 401:
        remedy = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server"
        return InputError(
            f"the MLflow server at {redact_uri(tracking_uri)} refused {who} (401: wrong or missing credentials); "
            f"{remedy}"
        )
    return InputError(
        f"the MLflow server at {redact_uri(tracking_uri)} refused {who} (403: no permission); ask its admin for EDIT "
        "on the experiment"
    )


def _console_script() -> str:
    """``bce-eval`` as this shell can run it: the bare name when it is on PATH, else the venv's script."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "bce-eval"
    on_path = shutil.which("bce-eval")
    if not script.exists() or (on_path and Path(on_path).resolve() == script.resolve()):
        return "bce-eval"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)


def ui_command(tracking_uri: str) -> str:
    """What opens MLflow's UI on this store: the command (as written, it runs in this shell), or a
    tracking server's own URL, in the model-training view."""
    if tracking_uri == default_store_uri():
        return f"{_console_script()} ui"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{redact_uri(tracking_uri).rstrip('/')}/#/experiments?workflowType=machine_learning"
    return f"{_console_script()} ui --backend-store-uri {redact_uri(tracking_uri)}"


def ui_hint(tracking_uri: str) -> str:
    """The summary's line on how to open a run's UI: a URL in a browser, a command in this shell."""
    command = ui_command(tracking_uri)
    return (
        f"open it in a browser: {command}"
        if command.startswith(("http://", "https://"))
        else f"open it with: {command}"
    )
