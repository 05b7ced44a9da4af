"""The terminal while a command runs: Prefect's console lines kept to progress, tracebacks kept in
the debug log (:func:`flows.cli.process.debug_log_path`), credentials masked in every log line."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from flows.cli.process import debug_log_path
from tasks.errors import GateFailed, InputError, StorageUnavailable, TrackingError


class _ConsoleFilter(logging.Filter):
    """Keep tracebacks off the console (they stay in the debug log)."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        exc = record.exc_info[1]
        if isinstance(exc, (InputError, GateFailed, TrackingError, StorageUnavailable)):
            return False  # the CLI prints it as its last line
        # other failures: the message without the traceback (records are shared, so copy)
        copy = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        self.handler.handle(copy)
        return False


def _engine_lines_dropped(prefect_dir: str) -> Callable[[logging.LogRecord], bool]:
    """Drops Prefect's own lines about each flow and task run (begun, retried, crashed, finished in a
    state; not its link): without ``--verbose`` the console shows the flow's progress lines and the
    CLI's last line (which says what failed)."""
    return lambda record: (
        not (
            record.name in ("prefect.flow_runs", "prefect.task_runs")
            and record.pathname.startswith(prefect_dir)
            and not _is_link(record)
        )
    )


def _is_link(record: logging.LogRecord) -> bool:
    return record.getMessage().startswith("View at http")


class _RedactFilter(logging.Filter):
    """Mask credentials in any URI a log line mentions, for every handler (console, file, Prefect API)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.redact import redact_text

        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if redact_text(text) != text:
                record.exc_info, record.exc_text = None, None  # a traceback would repeat the secret
        return True


def install_log_filters(verbose: bool, temporary_server: bool = False) -> None:
    """Keep the console readable (without ``--verbose``: the flow's progress lines, none of Prefect's lines about
    each flow and task run, no traceback); keep every line and traceback in the debug log file.

    With a temporary Prefect server, Prefect's "View at http://127.0.0.1:…" links stay off the
    console: that server is gone when the command exits.
    """
    import prefect.main  # importing prefect.main configures Prefect's log handlers first

    file_handler = logging.FileHandler(debug_log_path(), encoding="utf-8")
    file_handler.setLevel(logging.DEBUG)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("", "prefect"):
        logging.getLogger(name).addHandler(file_handler)
    redact = _RedactFilter()
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(redact)
    consoles = dict.fromkeys(  # a handler may serve several loggers: each gets its filters once
        h
        for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs")
        for h in logging.getLogger(name).handlers
        if type(h).__name__ == "PrefectConsoleHandler"
    )
    for handler in consoles if temporary_server else ():
        handler.addFilter(lambda record: not _is_link(record))
    if verbose:
        return
    for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.tracking.fluent"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    engine_lines = _engine_lines_dropped(str(Path(prefect.__file__).parent) + os.sep)
    for handler in consoles:
        handler.addFilter(engine_lines)
        handler.addFilter(_ConsoleFilter(handler))
