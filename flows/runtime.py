"""Process set-up for the CLI: quiet local defaults, the Prefect server, clean error output.

Nothing here runs at import time; :func:`prepare_environment` is called first thing by the CLI.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator

from tasks.errors import GateFailed, InputError, StorageUnavailable, TrackingError

REPO_ROOT = Path(__file__).resolve().parents[1]


def prepare_environment() -> None:
    """Local, quiet defaults (each one only where the user has not set it)."""
    defaults = {
        "PREFECT_HOME": str(REPO_ROOT / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "GIT_PYTHON_REFRESH": "quiet", "MPLBACKEND": "Agg",
        # MLflow's own HTTP retries, bounded (its default backs off for minutes); the logging
        # task retries on top of these, then the CLI says where the results were saved
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def debug_log_path() -> Path:
    """Where full tracebacks go (the terminal shows one line)."""
    return Path(os.environ.get("PREFECT_HOME", REPO_ROOT / ".prefect")) / "bce-eval-debug.log"


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
    """Drops Prefect's own lines about each flow and task run (begun, retried, crashed, finished in a state; not its link):
    without ``--verbose`` the console shows the flow's progress lines and the CLI's last line (which says what failed)."""
    return lambda record: not (
        record.name in ("prefect.flow_runs", "prefect.task_runs") and record.pathname.startswith(prefect_dir) and not _is_link(record)
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
        h for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs") for h in logging.getLogger(name).handlers
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
    """After the imports of a process paused by :func:`pause_collection_for_imports`: freeze what they made, collect again."""
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
    if send is None or getattr(send, "_bce_eval_prompt", False) or "join_on_exit" not in inspect.signature(send).parameters:
        return

    @contextlib.contextmanager
    def send_without_join(*args: Any, join_on_exit: bool = True) -> Iterator[None]:
        with send(*args, join_on_exit=False):
            yield

    send_without_join._bce_eval_prompt = True  # type: ignore[attr-defined]
    engine._send_heartbeats = send_without_join


#: Runs a module (``python -P -c THIS <parent pid> <module> <args>``) as ``python -m`` would, in a
#: process the kernel kills when its parent dies: a CLI killed outright (a scheduler's SIGKILL, the
#: OOM killer) cannot stop its temporary server itself, and it would run on, idle, for good. SIGKILL,
#: as the CLI's own exit does (nothing is left to save; a graceful stop could wait on connections
#: for ever). Linux only (elsewhere the call fails and nothing changes); the "parent" is the thread
#: that started the server, so it is started from the main thread.
_BOUND_TO_PARENT = """
import ctypes, os, runpy, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):  # the parent died before the line above: nobody wants this server
    sys.exit(0)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


class PrefectServer:
    """Use the configured Prefect API; with none, start a temporary Prefect server first thing.

    Prefect's own temporary server is spawned only after ``prefect`` and its server module are
    imported (about 2 s on 2 cores, under the GIL with everything else the CLI imports). This runs
    the same ``uvicorn`` command before any of that, points ``PREFECT_API_URL`` at it (so Prefect,
    imported later, uses it as it would any server), and lets the caller import the heavy
    libraries while it starts. It is killed at exit, logs drained first, so nothing is printed
    after the CLI's last line, and it stops by itself when the CLI is killed outright.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._command: list[str] = []
        self._env: dict[str, str] = {}
        self._url = ""

    def __enter__(self) -> "PrefectServer":
        if not _configured_api_url():
            self._spawn()
        return self

    def _spawn(self) -> None:
        with socket.socket() as sock:  # a free port, chosen by the kernel
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        spec = importlib.util.find_spec("prefect")  # finds the package without importing it
        assert spec is not None and spec.origin is not None
        self._command = [
            sys.executable, "-P", "-c", _BOUND_TO_PARENT, str(os.getpid()), "uvicorn", "--app-dir", str(Path(spec.origin).parents[1]),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on",
        ]
        # the environment Prefect gives its own temporary server
        self._env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self._run()
        self._url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = self._url

    def _run(self) -> None:
        # a session of its own: Ctrl-C in a terminal interrupts the terminal's foreground process
        # group, and a server in it would die first, under the flow still reporting to it
        with open(debug_log_path(), "ab") as log:
            self._process = subprocess.Popen(self._command, env=self._env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def starting(self) -> bool:
        """Whether a temporary server was started (and the caller has time to spare until it answers)."""
        return self._process is not None

    def wait(self) -> None:
        """Block until the temporary server answers (a clear error if it does not)."""
        if self._process is None:
            return
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
        while time.monotonic() < deadline:
            if self._process.poll() == 3:
                # its start-up failed: on a fresh database, servers started at once race on the
                # migrations (Prefect's own temporary server retries too); the port is still free
                time.sleep(random.uniform(0.2, 1.0))
                self._run()
                continue
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Prefect's temporary server exited with code {self._process.returncode} (its output is in {debug_log_path()})"
                )
            try:
                with urllib.request.urlopen(f"{self._url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Prefect's temporary server did not answer at {self._url} within the start-up timeout")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if "prefect" in sys.modules and (self._process is None or self._process.poll() is None):
            _drain_prefect_workers()
        if self._process is not None:
            # nothing is left to save (logs drained, states written): don't wait out its shutdown
            self._process.kill()
            self._process.wait()
            self._process = None


def _configured_api_url() -> str:
    """``PREFECT_API_URL`` from the environment or the active Prefect profile ('' when neither sets it)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    import tomllib

    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or Path(os.environ["PREFECT_HOME"]) / "profiles.toml")
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "")
    return str(profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL", ""))


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


def run_ui(uri: str, artifacts: str | None, host: str, port: int) -> int:
    """MLflow's UI on ``uri`` until Ctrl-C or SIGTERM, then every process it started is stopped.

    One worker (the UI needs no more, and it starts faster); its warnings and logs go to the debug
    log, not the terminal; the URL is printed when the server answers.
    """
    import signal
    import urllib.request

    from tasks.redact import redact_uri

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    from importlib.metadata import entry_points

    if any(e.name == "bce-eval" for e in entry_points(group="mlflow.app")):  # installed by `make` (pyproject.toml)
        cmd += ["--app-name", "bce-eval"]  # MLflow's app, its UI opening in the model-training view (flows/ui_app.py)
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    print(f"bce-eval ui: starting MLflow's UI for {redact_uri(uri)} (its log: {debug_log_path()})", flush=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_PYTHON_REFRESH": "quiet"}
    debug_log_path().parent.mkdir(parents=True, exist_ok=True)
    with open(debug_log_path(), "ab") as log:
        # a session of its own: stopping it stops the server's workers too
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def _raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        if proc.poll() is None:
            # the model-training view (MLflow 3.17 opens its GenAI view unless the link says otherwise)
            print(f"MLflow UI ready at http://{host}:{port}/#/experiments?workflowType=machine_learning (Ctrl-C to stop)", flush=True)
        return proc.wait() if proc.poll() is None else proc.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_session(proc)


def _stop_session(proc: subprocess.Popen) -> None:
    """SIGTERM to the whole session, then SIGKILL to whatever of it is left (workers that linger)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.wait()
