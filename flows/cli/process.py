"""What the ``bce-eval`` process sets up for itself: quiet local defaults, its garbage collector
around the libraries' imports, the heavy imports while the server starts, a flow run that ends
without waiting for Prefect's heartbeat thread.

Nothing here runs at import time; :func:`prepare_environment` is called first thing by the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.home import project_home


def prepare_environment() -> None:
    """Local, quiet defaults (each one only where the user has not set it)."""
    defaults = {
        "PREFECT_HOME": str(project_home() / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "GIT_PYTHON_REFRESH": "quiet",
        "MPLBACKEND": "Agg",
        # MLflow's own HTTP retries, bounded (its default backs off for minutes); the logging
        # task retries on top of these, then the CLI says where the results were saved
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def debug_log_path() -> Path:
    """Where full tracebacks go (the terminal shows one line)."""
    return Path(os.environ.get("PREFECT_HOME", project_home() / ".prefect")) / "bce-eval-debug.log"


def preload(modules: list[str]) -> None:
    """Import the heavy libraries a command needs (while the temporary server starts, it is free)."""
    import importlib

    for name in modules:
        importlib.import_module(name)


def pause_collection_for_imports() -> None:
    """For the ``bce-eval`` process only: no garbage collection while the libraries import, and
    none of their objects looked at again when the process exits.

    Prefect, MLflow, Polars and scikit-learn make about half a million objects as they import.
    Python's cyclic collector walks them all at each full collection: eight of them during a cold
    ``evaluate`` (1.0 s measured) and three more while the interpreter shuts down (1.3 s after the
    last line was printed). Imports make almost no garbage (a few thousand unreachable objects):
    collection waits until they are done (:func:`resume_collection`), and their objects then move
    to the collector's permanent generation (``gc.freeze``), where it does not walk. At exit,
    everything is frozen the same way: files, connections and background workers are closed by
    their owners and by the exit handlers (Prefect's, MLflow's, logging's), which all run before
    this one, registered first; the collector just does not walk a heap the operating system is
    about to drop.
    """
    import atexit
    import gc

    gc.disable()
    atexit.register(gc.freeze)


def resume_collection() -> None:
    """After the imports of a process paused by :func:`pause_collection_for_imports`: freeze what they made, collect
    again."""
    import gc

    gc.freeze()
    gc.enable()


def end_heartbeats_promptly() -> None:
    """For the ``bce-eval`` process only: let a flow run end without waiting for its heartbeat
    thread to wake up.

    Prefect's flow heartbeat thread sleeps in steps of one second between its checks for the end of
    the run, and a synchronous flow run joins it as it ends: up to a second (0.6 s measured) added
    to every CLI run after its work is done. Prefect's asynchronous engine does not join it
    (``join_on_exit=False``); this makes the synchronous one do the same. The thread still sends its
    heartbeats while the flow runs and is a daemon; it checks for a final state before each one, so
    only a heartbeat already being sent as the run ends can arrive after it. Where a Prefect version
    lacks that parameter, nothing changes.
    """
    import contextlib
    import inspect

    import prefect.flow_engine as engine

    send = getattr(engine, "_send_heartbeats", None)
    if (
        send is None
        or getattr(send, "_bce_eval_prompt", False)
        or "join_on_exit" not in inspect.signature(send).parameters
    ):
        return

    @contextlib.contextmanager
    def send_without_join(*args: Any, join_on_exit: bool = True) -> Iterator[None]:
        with send(*args, join_on_exit=False):
            yield

    send_without_join._bce_eval_prompt = True  # type: ignore[attr-defined]
    engine._send_heartbeats = send_without_join
