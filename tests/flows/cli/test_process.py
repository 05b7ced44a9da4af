"""The CLI's process set-up against a real Prefect server: what it changes in Prefect's engine."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from flows.cli.process import end_heartbeats_promptly
from tests.conftest import REPO

#: real processes (the CLI, servers, a terminal or a browser): part of make test, not make test-fast
pytestmark = pytest.mark.system


def _heartbeats(api: str, flow_run_id: str) -> int:
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 10,
    }
    return len(httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"])


def test_a_flow_run_sends_heartbeats_and_does_not_wait_for_their_thread_at_its_end(prefect_server, monkeypatch):
    import prefect.flow_engine as engine
    from prefect import flow, runtime

    monkeypatch.setattr(engine, "_send_heartbeats", engine._send_heartbeats)  # Prefect's own again after the test
    end_heartbeats_promptly()
    end_heartbeats_promptly()  # a second call changes nothing
    joins: list[float | None] = []
    join = threading.Thread.join

    def recorded_join(thread: threading.Thread, timeout: float | None = None) -> None:
        joins.append(timeout)
        join(thread, timeout)

    @flow
    def short() -> str:
        time.sleep(1.0)  # long enough for the heartbeat thread to send its first one while the run is on
        return str(runtime.flow_run.id)

    monkeypatch.setattr(threading.Thread, "join", recorded_join)
    flow_run_id = short()
    monkeypatch.setattr(threading.Thread, "join", join)
    # Prefect's synchronous engine joins its heartbeat thread with a 2 s limit: that join is what waited
    assert 2 not in joins, joins
    deadline = time.monotonic() + 30  # events reach the server in batches
    while not _heartbeats(prefect_server, flow_run_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _heartbeats(prefect_server, flow_run_id) == 1  # sent as the run started, none after its end


_HELD_UP = """
import os, subprocess, sys, threading, time
from flows.cli.interrupt import INTERRUPTED, InterruptBound

with InterruptBound(grace=0.5) as bound:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    worker = threading.Thread(target=time.sleep, args=(120,))  # not a daemon: the interpreter's exit would wait for it
    worker.start()
    print(os.getpid(), flush=True)
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        if sys.argv[1] == "stuck":
            worker.join()  # the command's own clean-up waits on work that does not stop
        with bound.last_lines(130):
            print(INTERRUPTED, file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize("mode", ["prints", "stuck"])
def test_ctrl_c_ends_a_process_whose_work_would_hold_it_up_within_the_bound(mode, tmp_path):
    """Work that does not stop on KeyboardInterrupt holds the process only for the grace: then it ends with
    130 and one last line (the CLI's, or the bound's when the CLI's clean-up is what waits), no child left."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.flows.cli.test_terminal import watched

    report = tmp_path / "report.json"
    cmd = watched([sys.executable, "-c", _HELD_UP, mode], report)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    time.sleep(0.3)
    os.kill(pid, signal.SIGINT)
    sent = time.time()
    time.sleep(0.1)
    os.kill(pid, signal.SIGINT)  # a second Ctrl-C changes nothing
    try:
        proc.wait(timeout=30)
    finally:
        proc.kill()
    outcome = json.loads(report.read_text())
    took = outcome["ended"] - sent
    assert outcome["code"] == 130 and 0.3 <= took < 2.0, (outcome, took)
    assert proc.stderr.read().splitlines() == ["bce-eval: interrupted"]  # once, with no traceback
    assert outcome["left"] == []  # the child it started was stopped with it
