"""``bce-eval ui``: MLflow's UI on a store, as a process this one starts and stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from flows.cli.process import debug_log_path


def run_ui(uri: str, artifacts: str | None, host: str, port: int) -> int:
    """MLflow's UI on ``uri`` until Ctrl-C or SIGTERM, then every process it started is stopped.

    One worker (the UI needs no more, and it starts faster); its warnings and logs go to the debug
    log, not the terminal; the URL is printed when the server answers.
    """
    import signal

    from tasks.redact import redact_uri

    cmd = _server_command(uri, artifacts, host, port)
    print(f"bce-eval ui: starting MLflow's UI for {redact_uri(uri)} (its log: {debug_log_path()})", flush=True)
    proc = _start_server(cmd)

    def _raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _wait_for_health(proc, f"http://{host}:{port}/health")
        if proc.poll() is None:
            # the model-training view (MLflow 3.17 opens its GenAI view unless the link says otherwise)
            print(
                f"MLflow UI ready at http://{host}:{port}/#/experiments?workflowType=machine_learning (Ctrl-C to stop)",
                flush=True,
            )
        return proc.wait() if proc.poll() is None else proc.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_session(proc)


def _server_command(uri: str, artifacts: str | None, host: str, port: int) -> list[str]:
    """``mlflow server`` on the store, with one worker, bce-eval's app when it is installed, and the artifact root."""
    from importlib.metadata import entry_points

    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if any(e.name == "bce-eval" for e in entry_points(group="mlflow.app")):  # installed by `make` (pyproject.toml)
        # MLflow's app, its UI opening in the model-training view (flows/cli/ui_app.py)
        cmd += ["--app-name", "bce-eval"]
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    return cmd


def _start_server(cmd: list[str]) -> subprocess.Popen:
    """The server in a session of its own, quiet, its output appended to the debug log."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_PYTHON_REFRESH": "quiet"}
    debug_log_path().parent.mkdir(parents=True, exist_ok=True)
    with open(debug_log_path(), "ab") as log:
        # a session of its own: stopping it stops the server's workers too
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _wait_for_health(proc: subprocess.Popen, url: str) -> None:
    """Wait until the server answers ``url`` or its process ends."""
    import urllib.request

    while proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)


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
