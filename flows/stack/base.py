"""The team stack's parts every server needs: ports, the recorded processes (pid and start time),
the state file and the generated secrets. See :mod:`flows.stack.control`."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.errors import InputError
from tasks.home import project_home

REPO = project_home()
PG_BIN = Path(os.environ.get("BCE_EVAL_PG_BIN", "/usr/lib/postgresql/15/bin"))
HOST = "127.0.0.1"
BUCKET = "bce-eval"
WORK_POOL = "bce-eval"
PG_USER = "bce"
DATABASES = ("mlflow", "mlflow_auth", "prefect")
MLFLOW_USER = "bce-eval"
# stop order: clients of a server before the server
SERVICES = ("worker", "dask-worker-1", "dask-worker-2", "dask-scheduler", "prefect", "mlflow", "s3", "postgres")


@dataclass(frozen=True)
class StackPorts:
    """The loopback ports of the stack's servers (the usual ones; PostgreSQL off its default)."""

    postgres: int = 55432
    s3: int = 9000
    mlflow: int = 5000
    prefect: int = 4200
    dask: int = 8786


@dataclass
class Stack:
    """A running stack: where it lives, its ports and the processes it started."""

    home: Path
    ports: StackPorts
    processes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def prefect_api(self) -> str:
        return f"http://{HOST}:{self.ports.prefect}/api"

    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def dask_address(self) -> str:
        return f"tcp://{HOST}:{self.ports.dask}"

    def client_env(self) -> dict[str, str]:
        """What a user exports to use the stack (secrets included: see :func:`write_env_file`)."""
        secret = stack_secrets(self.home)
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
            "MLFLOW_TRACKING_PASSWORD": secret["mlflow"],
            "PREFECT_API_URL": self.prefect_api,
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": "bce-eval",
            "AWS_SECRET_ACCESS_KEY": secret["s3"],
            "AWS_REGION": "us-east-1",
        }


# --- processes ---------------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if it is gone): with the pid, its identity."""
    try:
        # a child of this process that has exited stays a zombie until reaped: reap it (the tests
        # start the stack in their own process; the CLI's children are reaped by init)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def is_running(record: dict[str, int]) -> bool:
    """The process recorded by ``_spawn`` (pid and start time) still runs (a zombie does not)."""
    return process_start_time(record["pid"]) == record["start"]


def spawn(stack: Stack, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    log = stack.home / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # a session of its own: stopping it stops its children (uvicorn and gunicorn workers, engines)
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stack.processes[name] = {"pid": proc.pid, "start": process_start_time(proc.pid) or 0}
    save_state(stack)
    return proc


def stop_process(name: str, record: dict[str, int], sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if not is_running(record):
        return
    pid = record["pid"]
    try:
        # the whole session (its children too) unless it is PostgreSQL's postmaster, which stops its own
        os.killpg(pid, sig) if name != "postgres" else os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(record):
        time.sleep(0.2)
    if is_running(record):
        os.killpg(pid, signal.SIGKILL)


def wait_until(what: str, ready: Callable[[], bool], proc: subprocess.Popen | None, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    raise InputError(
        f"the stack's {what} did not start (log: {log}): "
        f"{tail.strip().splitlines()[-1] if tail.strip() else 'no output'}"
    )


def port_open(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# --- state and secrets -------------------------------------------------------------------------


def save_state(stack: Stack) -> None:
    state = {"ports": asdict(stack.ports), "processes": stack.processes}
    (stack.home / "state.json").write_text(json.dumps(state, indent=1))


def load_stack(home: Path) -> Stack | None:
    """The stack recorded in ``home`` (None if none was started there)."""
    try:
        state = json.loads((home / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return Stack(home, StackPorts(**state["ports"]), state["processes"])


def stack_secrets(home: Path) -> dict[str, str]:
    """The stack's generated passwords, made once and kept in a file only its owner reads."""
    path = home / "secrets.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    wanted = ("postgres", "mlflow", "s3", "flask")
    if set(wanted) - set(known):
        home.mkdir(parents=True, exist_ok=True)
        known = {**{k: secrets.token_urlsafe(18) for k in wanted}, **known}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(known, fh)
    return known


def write_env_file(stack: Stack) -> Path:
    """``home/env``: ``KEY=value`` lines to ``set -a; . home/env`` (mode 600: it holds the password)."""
    path = stack.home / "env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{key}={value}\n" for key, value in stack.client_env().items())
    return path
