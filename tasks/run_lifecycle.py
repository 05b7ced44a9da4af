"""The run lifecycle: one writer at a time on a SQLite store, and reruns that are safe.

A retried flow run reuses its FINISHED run; runs left RUNNING by a killed process are marked FAILED.
No MLflow import here: :class:`tasks.tracking.MlflowTracker` hands in its client.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Any, Iterator


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


_held: dict[str, int] = {}


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise writers of a SQLite store across processes (re-entrant within one process).

    SQLite allows one writer: concurrent runs otherwise race on its first migrations ("table
    already exists") and fail with "database is locked". Other stores need no lock.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    key = str(db)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        _held[key] = 1
        try:
            yield
        finally:
            _held[key] = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


def owner_tags() -> dict[str, str]:
    return {"bce_eval.host": socket.gethostname(), "bce_eval.pid": str(os.getpid())}


def previous_attempt(client: Any, experiment_id: str, identity: dict[str, str]) -> str | None:
    """Make reruns safe: reuse this flow run's FINISHED run; fail runs left RUNNING by dead processes.

    A retried Prefect flow run (same flow run id) that already logged returns that run instead of
    creating a second one; its unfinished attempts are marked FAILED and deleted (MLflow keeps
    deleted runs restorable). A run of the same evaluation
    (same evaluation key) still RUNNING although its process on this host is gone (killed) is
    marked FAILED with the tag ``bce_eval.recovered``. ``client`` is the tracking adapter's.
    """
    flow_run_id = identity.get("prefect.flow_run_id")
    if flow_run_id:
        runs = client.search_runs([experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
        for r in runs:
            if r.info.status == "FINISHED":
                return r.info.run_id
        for r in runs:
            # an earlier attempt of this flow run that did not finish (a request that timed out on
            # a busy server may still have created it): failed, tagged and deleted (restorable), so
            # the experiment shows one run per evaluation, the retry's
            client.set_tag(r.info.run_id, "bce_eval.recovered", "superseded by a retry of the same flow run")
            if r.info.status == "RUNNING":
                client.set_terminated(r.info.run_id, "FAILED")
            client.delete_run(r.info.run_id)
    key = identity.get("bce_eval.evaluation_key")
    if key:
        for r in client.search_runs([experiment_id], filter_string=f"tags.`bce_eval.evaluation_key` = '{key}' and attributes.status = 'RUNNING'"):
            host, pid = r.data.tags.get("bce_eval.host"), r.data.tags.get("bce_eval.pid", "")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                client.set_tag(r.info.run_id, "bce_eval.recovered", f"process {pid} died before the run finished")
                client.set_terminated(r.info.run_id, "FAILED")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
