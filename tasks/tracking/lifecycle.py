"""The run lifecycle: one writer at a time on a SQLite store, reruns that are safe, and requests to
a tracking server sent at once where they do not depend on each other.

A retried flow run reuses its FINISHED run; runs left RUNNING by a killed process are marked FAILED.
No MLflow import here: :class:`tasks.tracking.adapter.MlflowTracker` hands in its client.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


#: the SQLite stores this thread holds the lock of, and how deep: re-entrant within a thread;
#: another thread of this process opens the lock file anew and waits on it as another process does
_this_thread = threading.local()


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise writers of a SQLite store across processes and threads (re-entrant within a thread).

    SQLite allows one writer: concurrent runs otherwise race on its first migrations ("table
    already exists") and fail with "database is locked". Other stores need no lock.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    held: dict[str, int] = _this_thread.__dict__.setdefault("held", {})
    key = str(db)
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    # flock belongs to an open file: this open waits for any other holder, in this process or another
    with open(db.with_name(db.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


def owner_tags() -> dict[str, str]:
    return {"bce_eval.host": socket.gethostname(), "bce_eval.pid": str(os.getpid())}


def previous_attempt(client: Any, experiment_id: str, identity: dict[str, str], workers: int = 1) -> str | None:
    """Make reruns safe: reuse this flow run's FINISHED run; fail runs left RUNNING by dead processes.

    A retried Prefect flow run (same flow run id) that already logged returns that run instead of
    creating a second one; its unfinished attempts are marked FAILED and deleted (MLflow keeps
    deleted runs restorable). A run of the same evaluation
    (same evaluation key) still RUNNING although its process on this host is gone (killed) is
    marked FAILED with the tag ``bce_eval.recovered``. ``client`` is the tracking adapter's; the
    two searches (MLflow's filters have no OR) go at once when ``workers`` > 1.
    """
    flow_run_id, key = identity.get("prefect.flow_run_id"), identity.get("bce_eval.evaluation_key")

    def search(filter_string: str | None) -> Callable[[], list[Any]]:
        return (
            partial(client.search_runs, [experiment_id], filter_string=filter_string) if filter_string else list
        )  # none: no runs

    attempts, stale = run_all(
        [
            search(f"tags.`prefect.flow_run_id` = '{flow_run_id}'" if flow_run_id else None),
            search(f"tags.`bce_eval.evaluation_key` = '{key}' and attributes.status = 'RUNNING'" if key else None),
        ],
        workers,
    )
    for r in attempts:
        if r.info.status == "FINISHED":
            return r.info.run_id
    for r in attempts:
        # an earlier attempt of this flow run that did not finish (a request that timed out on
        # a busy server may still have created it): failed, tagged and deleted (restorable), so
        # the experiment shows one run per evaluation, the retry's
        client.set_tag(r.info.run_id, "bce_eval.recovered", "superseded by a retry of the same flow run")
        if r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, "FAILED")
        client.delete_run(r.info.run_id)
    superseded = {r.info.run_id for r in attempts}
    for r in stale:
        host, pid = r.data.tags.get("bce_eval.host"), r.data.tags.get("bce_eval.pid", "")
        if r.info.run_id not in superseded and host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            client.set_tag(r.info.run_id, "bce_eval.recovered", f"process {pid} died before the run finished")
            client.set_terminated(r.info.run_id, "FAILED")
    return None


def request_workers(uri: str) -> int:
    """How many requests to a store go at once: a few to a tracking server (each one waits on the
    server, mostly on its password check; two nested groups stay within the 10 connections MLflow's
    HTTP session keeps), one to a local store (a SQLite file takes one writer)."""
    return 4 if uri.startswith(("http://", "https://")) else 1


def run_all(calls: Sequence[Callable[[], T]], workers: int = 1) -> list[T]:
    """Each call's result, in order; on ``workers`` threads when more than one. A failed call's error
    (the first in order) is raised once every started call has ended: none is left running behind
    the caller's back, and those not started yet never start."""
    if workers <= 1 or len(calls) < 2:
        return [call() for call in calls]
    with ThreadPoolExecutor(min(workers, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:  # one has failed, or Ctrl-C: those not started yet are not started (none once all are done)
            for future in futures:
                future.cancel()
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    if errors:
        raise errors[0]
    return [future.result() for future in futures]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
