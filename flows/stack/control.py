"""``bce-eval stack up|down|status``: the team stack on one machine, every server on 127.0.0.1.

PostgreSQL (Debian's) holds the MLflow and Prefect servers' databases; an S3-compatible server
(moto's) holds the data and MLflow's artifacts; MLflow's tracking server runs with its basic-auth
app; Prefect's server runs with a process work pool, the deployments of ``prefect.yaml`` and a
worker; a Dask scheduler and two workers take ``--dask``. ``up`` starts what is not running and
records each process id with its start time; ``down`` stops exactly those processes (a reused
process id is left alone) and keeps every byte: PostgreSQL's cluster stays in the stack's folder,
and the S3 server's objects are saved there before it stops and put back when it starts.

The tests start the same stack (in a temporary folder, on free ports) through :func:`start_stack`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from flows.stack.base import (  # noqa: F401 - re-exported: the stack's one entry point
    BUCKET,
    DATABASES,
    HOST,
    PG_BIN,
    REPO,
    SERVICES,
    WORK_POOL,
    Stack,
    StackPorts,
    http_ok,
    is_running,
    load_stack,
    save_state,
    stop_process,
    wait_until,
    write_env_file,
)
from flows.stack.services import (  # noqa: F401
    dask_workers,
    deploy,
    restart_postgres,
    restore_objects,
    save_objects,
    start_dask,
    start_mlflow,
    start_postgres,
    start_prefect,
    start_s3,
    start_worker,
    worker_ready,
)


def default_home() -> Path:
    return Path(os.environ.get("BCE_EVAL_STACK_HOME", REPO / ".stack"))


# --- up and down -------------------------------------------------------------------------------


def start_stack(home: Path, ports: StackPorts = StackPorts(), say: Callable[[str], None] = print) -> Stack:  # noqa: B008 - frozen, so one default instance is safe
    """Start every server of the stack that is not running, wait until each answers; returns the stack."""
    home.mkdir(parents=True, exist_ok=True)
    # others may pass through (the postgres user, to its cluster) but not list; the files with
    # secrets are mode 600 themselves
    home.chmod(0o711)
    old = load_stack(home)
    if old is not None and any(is_running(r) for r in old.processes.values()):
        if all(is_running(old.processes.get(name, {"pid": 0, "start": -1})) for name in SERVICES):
            say(f"the stack in {home} is already running")
            return old
        stop_stack(home, say)
    stack = Stack(home, ports if old is None or ports != StackPorts() else old.ports)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_", "PG"))}
    base_env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "GIT_PYTHON_REFRESH": "quiet"})
    say(f"starting the team stack in {home} (logs in {home / 'logs'})")
    try:
        return _start_all(stack, base_env, say)
    except BaseException:
        # nothing half-started is left behind: stop what did start, then report
        stop_stack(home, lambda _: None)
        raise


def _start_all(stack: Stack, base_env: dict[str, str], say: Callable[[str], None]) -> Stack:
    logs, t0 = stack.home / "logs", time.monotonic()
    start_postgres(stack)
    say(f"  PostgreSQL 15     {HOST}:{stack.ports.postgres}  databases {', '.join(DATABASES)}")
    start_s3(stack, base_env)
    say(f"  S3 (moto server)  {stack.s3_url}  bucket {BUCKET}")
    # the two servers migrate their databases at the same time, and Dask starts meanwhile
    mlflow, prefect = start_mlflow(stack, base_env), start_prefect(stack, base_env)
    dask = start_dask(stack, base_env)
    wait_until("Prefect server", lambda: http_ok(f"{stack.prefect_api}/health"), prefect, logs / "prefect.log", 300)
    say(f"  Prefect server    {stack.prefect_api}  (database on PostgreSQL)")
    deploy(stack, base_env)
    worker = start_worker(stack, base_env)
    wait_until("MLflow server", lambda: http_ok(f"{stack.mlflow_url}/health"), mlflow, logs / "mlflow.log", 300)
    say(f"  MLflow server     {stack.mlflow_url}  (runs on PostgreSQL, artifacts in s3://{BUCKET}/mlflow, basic auth)")
    wait_until("Dask cluster", lambda: dask_workers(stack) >= 2, dask[0], logs / "dask-scheduler.log", 120)
    say(
        f"  Dask cluster      {stack.dask_address}  (scheduler and 2 worker processes: pass --dask "
        f"{stack.dask_address})"
    )
    wait_until("Prefect worker", lambda: worker_ready(stack), worker, logs / "worker.log", 120)
    say(f"  Prefect worker    pool {WORK_POOL} (process), deployments from prefect.yaml")
    env_file = write_env_file(stack)
    say(f"ready in {time.monotonic() - t0:.0f} s. To use it:  set -a; . {env_file}; set +a")
    say("  (" + ", ".join(k for k in stack.client_env()) + "; the file is mode 600: it holds the password)")
    return stack


def stop_stack(home: Path, say: Callable[[str], None] = print) -> None:
    """Stop the processes ``start_stack`` started in ``home`` (by process id and start time); keep all data."""
    stack = load_stack(home)
    if stack is None:
        say(f"no stack was started in {home}")
        return
    for name in SERVICES:
        record = stack.processes.get(name)
        if record is None or not is_running(record):
            continue
        if name == "s3":
            say(f"  saved {save_objects(stack)} objects of the S3 server to {home / 's3'}")
        stop_process(name, record, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        say(f"  stopped {name} (pid {record['pid']})")
    stack.processes.clear()
    save_state(stack)


def stack_status(home: Path) -> dict[str, bool]:
    stack = load_stack(home)
    return {
        name: stack is not None and name in stack.processes and is_running(stack.processes[name]) for name in SERVICES
    }
