"""The Prefect server a command talks to: the configured one, or a temporary one started first thing."""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from flows.cli.process import debug_log_path

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
            sys.executable,
            "-P",
            "-c",
            _BOUND_TO_PARENT,
            str(os.getpid()),
            "uvicorn",
            "--app-dir",
            str(Path(spec.origin).parents[1]),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        # the environment Prefect gives its own temporary server
        self._env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        self._run()
        self._url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = self._url

    def _run(self) -> None:
        # a session of its own: Ctrl-C in a terminal interrupts the terminal's foreground process
        # group, and a server in it would die first, under the flow still reporting to it
        with open(debug_log_path(), "ab") as log:
            self._process = subprocess.Popen(
                self._command, env=self._env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )

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
                    f"Prefect's temporary server exited with code {self._process.returncode} (its output is in "
                    f"{debug_log_path()})"
                )
            try:
                with urllib.request.urlopen(f"{self._url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Prefect's temporary server did not answer at {self._url} within the start-up timeout")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
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
