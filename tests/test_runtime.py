"""The CLI's process set-up against a real Prefect server: what it changes in Prefect's engine."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from flows.runtime import end_heartbeats_promptly


def _heartbeats(api: str, flow_run_id: str) -> int:
    body = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 10}
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
