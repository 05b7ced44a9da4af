"""``bce-eval`` in a real terminal: Ctrl-C typed at the keyboard, as the kernel delivers it.

A pseudo-terminal is the command's controlling terminal, in a session of its own; the interrupt
character written to its master makes the kernel send SIGINT to the terminal's whole foreground
process group, as a key press does (not only to the CLI's pid).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import REPO

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        sys.platform != "linux", reason="a Linux pseudo-terminal; /proc lists a process's children; prctl"
    ),
]

#: runs a command (argv[3:]) as its child and reports on it in the JSON file argv[1]: its exit code, when it
#: ended, and what it left running. With argv[2] == "tty": in a session of its own, the terminal on fd 0 its
#: controlling terminal, so the kernel's Ctrl-C reaches the command's process group. A "subreaper": whatever the
#: command leaves behind becomes this process's child (not init's, which may kill or hide it), is listed, then killed.
WATCH = r"""
import ctypes, fcntl, json, os, signal, sys, termios, time
from pathlib import Path
report, tty, cmd = sys.argv[1], sys.argv[2] == "tty", sys.argv[3:]
if tty:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the key is the command's
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(cmd[0], cmd)
_, status = os.waitpid(pid, 0)
ended = time.time()
time.sleep(0.5)  # what the command stopped on its way out has stopped by now
def running(p):
    try:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
left = [int(c) for t in Path(f"/proc/{os.getpid()}/task").glob("*/children") for c in t.read_text().split()]
left = [p for p in left if running(p)]
for p in left:
    os.kill(p, signal.SIGKILL)
Path(report).write_text(json.dumps({"code": os.waitstatus_to_exitcode(status), "ended": ended, "left": left}))
"""
#: what Prefect prints when the server it reports to died under it (the defect this guards against)
PREFECT_NOISE = (
    "Crash detected",
    "Error logging to API",
    "EventsWorker",
    "Unable to connect",
    "internal error",
    "Traceback",
    "Finished in state",
)


def watched(args: list[str], report: Path, tty: bool = False) -> list[str]:
    """The command line that runs ``args`` under :data:`WATCH`, reporting to ``report``."""
    return [sys.executable, "-c", WATCH, str(report), "tty" if tty else "-", *args]


class Terminal:
    """``bce-eval ARGS`` with a pseudo-terminal as its controlling terminal; what it printed, as text."""

    def __init__(self, args: list[str], env: dict[str, str], report: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))  # wide: no wrapped lines
        self.report = report
        self.proc = subprocess.Popen(
            watched([sys.executable, "-m", "flows.cli", *args], report, tty=True),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=REPO,
        )
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.raw.decode(errors="replace")).replace("\r", "")

    def read(self, timeout: float) -> bool:
        """Read what the command printed within ``timeout``; False once the terminal is closed."""
        if select.select([self.master], [], [], timeout)[0]:
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:  # EIO: every process holding the terminal has exited
                return False
            self.raw += chunk
            return bool(chunk)
        return True

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            assert self.proc.poll() is None, f"the command ended before {pattern!r}:\n{self.text}"
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n{self.text}"
            self.read(0.1)

    def outcome(self, timeout: float) -> dict:
        """The command's exit code, when it ended and what it left running (:data:`WATCH`'s report)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read(0.05)
        while self.read(0.2) and time.monotonic() < deadline + 5:  # what it printed last
            pass
        if self.proc.poll() is None:  # still running: end it and everything it started
            for pid in [self.proc.pid, *children(self.proc.pid)]:
                kill_tree(pid)
            self.proc.wait()
            return {"code": None, "ended": time.time(), "left": []}
        return json.loads(self.report.read_text())

    def close(self) -> None:
        os.close(self.master)


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (any of its threads), as /proc lists them."""
    found = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in listing.read_text().split()]
        except OSError:
            pass
    return found


def kill_tree(pid: int) -> None:
    for child in children(pid):
        kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _write_partitions(root: Path, parts: int, rows: int) -> Path:
    rng = np.random.default_rng(7)
    for i in range(parts):
        X = rng.normal(size=(rows, 3))
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(X @ np.array([1.2, -0.8, 0.5]))))).astype(np.int64)
        (root / f"region=r{i}").mkdir(parents=True)
        pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y}).write_parquet(
            root / f"region=r{i}" / "part-0.parquet"
        )
    return root


@pytest.fixture
def terminal_env(tmp_path: Path) -> dict[str, str]:
    """No Prefect API configured (the CLI starts its temporary server); private MLflow store, cache and Prefect home."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"}
    }
    (tmp_path / "mlruns").mkdir()
    return {
        **env,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "BCE_EVAL_CACHE": str(tmp_path / "cache"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "TERM": "xterm",
    }


def test_ctrl_c_while_scoring_ends_the_run_at_once_with_one_line_and_nothing_left(tmp_path, terminal_env, hive_data):
    # twelve partitions of a million rows, each a chunk of its own, with exact ROC AUC (a sort per
    # partition): a third of a second a chunk on an idle machine, so that the flow's progress line,
    # written once scoring has taken two seconds, comes with chunks still to score
    data = _write_partitions(tmp_path / "big", 12, 1_000_000)
    args = [
        "evaluate",
        str(data),
        "--label",
        "label",
        "--features",
        "a,b,c",
        "--auc",
        "exact",
        "--chunk-rows",
        "1000000",
    ]
    term = Terminal(args, terminal_env, tmp_path / "report.json")
    try:
        term.wait_for(r"scored ([1-9]|10)/12 chunks", timeout=900)  # two chunks or more still to score
        cli = children(term.proc.pid)
        assert len(cli) == 1 and children(cli[0]), "the CLI runs, and its temporary Prefect server"
        os.write(term.master, b"\x03")  # Ctrl-C, as typed: the kernel signals the terminal's foreground group
        typed = time.time()
        outcome = term.outcome(timeout=60)
    finally:
        term.close()
    took = outcome["ended"] - typed
    print(f"Ctrl-C to exit: {took:.2f} s")
    assert outcome["code"] == 130, term.text
    assert took < 2.0, (took, term.text)
    after = term.text.split("^C", 1)[-1]
    lines = [line for line in after.splitlines() if line.strip()]
    assert lines == ["bce-eval: interrupted"], term.text  # one line, the last, and nothing after it
    assert "drawing the plots" not in term.text  # it was still scoring
    assert not [noise for noise in PREFECT_NOISE if noise in term.text], term.text
    assert outcome["left"] == [], "a process the CLI started outlived it"

    # the next run, with the same Prefect home and MLflow store, works
    again = subprocess.run(
        [sys.executable, "-m", "flows.cli", "evaluate", str(hive_data), "--label", "label", "--features", "a,b,c"],
        env=terminal_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    assert "BCE evaluation of hive: 750 rows, 4 partition(s)" in again.stdout
