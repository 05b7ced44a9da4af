"""tasks/tracking/lifecycle.py: the SQLite store's writer lock (an OS lock another process would wait
on, re-entrant in this process), reruns that reuse a finished run and fail runs of dead processes
(against a real local SQLite MLflow store), and requests sent at once."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tasks.tracking.lifecycle import owner_tags, previous_attempt, request_workers, run_all, sqlite_path, store_lock


def test_sqlite_path_of_each_uri_form():
    assert sqlite_path("sqlite:////tmp/x/mlflow.db") == Path("/tmp/x/mlflow.db")
    assert sqlite_path("sqlite:///mlflow/mlflow.db") == Path("mlflow/mlflow.db")  # relative to the current folder
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("postgresql://u:p@db/mlflow") is None
    assert sqlite_path("/tmp/mlruns") is None


def _taken_elsewhere(lock_file: Path) -> bool:
    """True when another open file description (what another process has) cannot take the lock now."""
    with open(lock_file, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_the_lock_is_an_os_lock_beside_the_database(tmp_path: Path):
    db = tmp_path / "new" / "mlflow.db"
    lock_file = tmp_path / "new" / "mlflow.db.lock"
    with store_lock(f"sqlite:///{db}"):
        assert lock_file.exists()  # its folder is made first
        assert _taken_elsewhere(lock_file)
    assert not _taken_elsewhere(lock_file)
    assert not db.exists()  # the lock makes no database


def test_the_lock_is_re_entrant_and_held_until_the_outermost_exit(tmp_path: Path):
    uri, lock_file = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlflow.db.lock"
    steps: list[bool] = []

    def nested() -> None:
        with store_lock(uri):
            with store_lock(uri):  # would wait on itself forever if it took the OS lock again
                with store_lock(uri):
                    steps.append(_taken_elsewhere(lock_file))
                steps.append(_taken_elsewhere(lock_file))
            steps.append(_taken_elsewhere(lock_file))
        steps.append(_taken_elsewhere(lock_file))

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a nested store_lock waited on itself"
    assert steps == [True, True, True, False]


def test_a_writer_elsewhere_waits_until_the_lock_is_released(tmp_path: Path):
    uri, lock_file = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlflow.db.lock"
    events: list[str] = []
    inside = threading.Event()

    def other_writer() -> None:  # a blocking flock on its own descriptor, as another process's store_lock
        inside.wait(10)
        with open(lock_file, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            events.append("other writer")
            fcntl.flock(fh, fcntl.LOCK_UN)

    thread = threading.Thread(target=other_writer, daemon=True)
    with store_lock(uri):
        thread.start()
        inside.set()
        time.sleep(0.3)
        events.append("holder leaves")
    thread.join(10)
    assert events == ["holder leaves", "other writer"]


def test_a_second_thread_waits_for_the_first_and_keeps_the_store_locked_while_inside(tmp_path: Path):
    uri, lock_file = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlflow.db.lock"
    first_in = threading.Event()
    events: list[object] = []

    def second() -> None:
        first_in.wait(10)
        with store_lock(uri):
            events.append("second in")
            events.append(_taken_elsewhere(lock_file))  # another process must still be kept out here

    thread = threading.Thread(target=second, daemon=True)
    with store_lock(uri):
        thread.start()
        first_in.set()
        time.sleep(0.3)
        events.append("first leaves")
    thread.join(10)
    assert events == ["first leaves", "second in", True]
    with store_lock(uri):  # and the lock is whole again for this thread: another process is kept out
        assert _taken_elsewhere(lock_file)


def test_other_stores_take_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with store_lock("http://127.0.0.1:5000"), store_lock("postgresql://db/mlflow"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_owner_tags_and_request_workers():
    assert owner_tags() == {"bce_eval.host": socket.gethostname(), "bce_eval.pid": str(os.getpid())}
    assert request_workers("https://mlflow.example.org") == request_workers("http://127.0.0.1:5000") == 4
    assert request_workers("sqlite:////tmp/x.db") == 1


# --- run_all ------------------------------------------------------------------------------------------


def test_run_all_returns_results_in_order_serially_or_at_once():
    calls = [lambda i=i: i * i for i in range(5)]
    assert run_all(calls) == run_all(calls, workers=3) == [0, 1, 4, 9, 16]
    meet = threading.Barrier(2, timeout=10)  # only returns when both calls run at the same time
    assert run_all([lambda: meet.wait() is not None, lambda: meet.wait() is not None], workers=2) == [True, True]


def test_run_all_raises_the_first_error_in_order_once_every_started_call_has_ended():
    ended: list[str] = []

    def slow_ok() -> str:
        time.sleep(0.2)
        ended.append("slow")
        return "ok"

    def fails(name: str) -> str:
        ended.append(name)
        raise ValueError(name)

    with pytest.raises(ValueError, match="^first$"):
        run_all([slow_ok, lambda: fails("first"), lambda: fails("second")], workers=3)
    assert "slow" in ended  # not left running behind the caller
    with pytest.raises(ValueError, match="^first$"):
        run_all([lambda: fails("first"), lambda: fails("second")])


# --- previous_attempt, against a real local store -------------------------------------------------------


def _dead_pid() -> int:
    pid = (
        int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
        if Path("/proc/sys/kernel/pid_max").exists()
        else 4_000_000
    )
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_a_rerun_reuses_its_finished_run_and_dead_processes_runs_are_failed(tmp_path: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    here = {"bce_eval.host": socket.gethostname(), "bce_eval.evaluation_key": "k1"}
    dead = client.create_run(exp, tags={**here, "bce_eval.pid": str(_dead_pid())}).info.run_id
    alive = client.create_run(exp, tags={**here, "bce_eval.pid": str(os.getpid())}).info.run_id
    elsewhere = client.create_run(
        exp, tags={**here, "bce_eval.host": "another-host", "bce_eval.pid": str(_dead_pid())}
    ).info.run_id

    assert previous_attempt(client, exp, {"bce_eval.evaluation_key": "k1"}) is None
    assert client.get_run(dead).info.status == "FAILED"
    assert client.get_run(dead).data.tags["bce_eval.recovered"].startswith("process ")
    assert client.get_run(alive).info.status == "RUNNING"  # its process (this one) is alive
    assert client.get_run(elsewhere).info.status == "RUNNING"  # another host's pid says nothing here

    unfinished = client.create_run(exp, tags={"prefect.flow_run_id": "fr-1"}).info.run_id
    finished = client.create_run(exp, tags={"prefect.flow_run_id": "fr-1"}).info.run_id
    client.set_terminated(finished, "FINISHED")
    assert previous_attempt(client, exp, {"prefect.flow_run_id": "fr-1"}, workers=2) == finished
    client.set_terminated(finished, "FAILED")
    assert previous_attempt(client, exp, {"prefect.flow_run_id": "fr-1"}) is None
    assert client.get_run(unfinished).info.lifecycle_stage == "deleted"  # superseded attempts: failed, deleted
    assert client.get_run(unfinished).info.status == "FAILED"
