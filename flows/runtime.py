"""Process set-up for the CLI: quiet local defaults, the Prefect server, clean error output.

Nothing here runs at import time; :func:`prepare_environment` is called first thing by the CLI.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from types import TracebackType

from tasks.errors import GateFailed, InputError, TrackingError

REPO_ROOT = Path(__file__).resolve().parents[1]
_QUIET_MESSAGES = ("Starting temporary server", "Stopping temporary server", "See https://www.prefect.io/docs")


def prepare_environment() -> None:
    """Local, quiet defaults (each one only where the user has not set it)."""
    defaults = {
        "PREFECT_HOME": str(REPO_ROOT / ".prefect"),
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
    return Path(os.environ.get("PREFECT_HOME", REPO_ROOT / ".prefect")) / "bce-eval-debug.log"


class _ConsoleFilter(logging.Filter):
    """Keep tracebacks off the console (they stay in the debug log) and the temporary server quiet."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith(_QUIET_MESSAGES):
            return False
        if not record.exc_info:
            return True
        exc = record.exc_info[1]
        if isinstance(exc, (InputError, GateFailed, TrackingError)):
            return False  # the CLI prints it as its last line
        # other failures: the message without the traceback (records are shared, so copy)
        copy = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        self.handler.handle(copy)
        return False


class _RedactFilter(logging.Filter):
    """Mask credentials in any URI a log line mentions, for every handler (console, file, Prefect API)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.tracking import redact_text

        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if redact_text(text) != text:
                record.exc_info, record.exc_text = None, None  # a traceback would repeat the secret
        return True


def install_log_filters(verbose: bool) -> None:
    """Keep the console readable; keep every traceback in the debug log file."""
    from prefect import flow  # noqa: F401 - importing prefect.main configures its log handlers first

    root = logging.getLogger()
    file_handler = logging.FileHandler(debug_log_path(), encoding="utf-8")
    file_handler.setLevel(logging.DEBUG)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("", "prefect"):
        logging.getLogger(name).addHandler(file_handler)
    redact = _RedactFilter()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(redact)
    if verbose:
        return
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.tracking.fluent"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for logger in (root, logging.getLogger("prefect"), logging.getLogger("prefect.flow_runs"), logging.getLogger("prefect.task_runs")):
        for handler in logger.handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.addFilter(_ConsoleFilter(handler))


class PrefectServer:
    """Use ``PREFECT_API_URL`` when set; otherwise start Prefect's temporary server.

    The server starts in a thread while the caller imports the heavy libraries, and is stopped
    explicitly (logs drained first) so nothing is printed after the CLI's last line.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = False

    def _start(self) -> None:
        try:
            from prefect.settings import PREFECT_API_URL

            if PREFECT_API_URL.value():
                return
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start()
            self._started = True
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by wait()
            self._error = exc

    def __enter__(self) -> "PrefectServer":
        self._thread = threading.Thread(target=self._start, name="prefect-server", daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the server answers (re-raising a start-up failure as a clear error)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"Prefect's temporary server did not start: {self._error}") from self._error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._thread.join()
        if "prefect" in sys.modules:
            _drain_prefect_workers()
        if self._started:
            from prefect.server.api.server import SubprocessASGIServer

            server = SubprocessASGIServer()
            if server.server_process is not None:
                # nothing is left to save (logs drained, states written): don't wait out its shutdown
                server.server_process.kill()
                server.server_process.wait()
                server.server_process = None
            server.stop()


def preload(modules: list[str]) -> None:
    """Import the heavy libraries a command needs (while the temporary server starts, it is free)."""
    import importlib

    for name in modules:
        importlib.import_module(name)


def _drain_prefect_workers() -> None:
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:
            pass
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())
