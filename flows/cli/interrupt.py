"""Ctrl-C in the ``bce-eval`` process: the command ends within a bounded time, whatever it is doing.

The first SIGINT raises ``KeyboardInterrupt`` in the main thread, as Python's own handler does: the
command stops where it is, Prefect marks its runs crashed, the CLI drains the logs, stops what it
started and prints its last line. Two things can hold that up for long: a chunk being scored on one
of the task runner's threads runs to its end (Prefect's thread pool waits for it before the flow
run ends), and Python runs a signal handler only between the main thread's bytecodes, so a long
call into compiled code that lets other threads run (Polars, the scan's kernels) delays the
``KeyboardInterrupt`` itself. So the signal's arrival is also written to a pipe
(``signal.set_wakeup_fd``: the C handler writes it at once), which a thread watches: when the
process has not ended :data:`GRACE_SECONDS` later, it kills the processes this one started, prints
the last line (unless the CLI has printed its own) and exits 130. A second Ctrl-C changes nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

#: after Ctrl-C, how long the command may take to stop by itself before the CLI ends it
GRACE_SECONDS = 1.0
EXIT_INTERRUPTED = 130
INTERRUPTED = "bce-eval: interrupted"
_STOP_WATCHING = 0  # written to the pipe by the CLI itself (no signal has number 0)


def kill_children() -> None:
    """SIGKILL to every process this one started that still runs (Linux's /proc lists them; elsewhere none is found)."""
    for listing in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for pid in listing.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


class InterruptBound:
    """For the ``bce-eval`` process only (it sets the process's SIGINT handler; main thread): Ctrl-C
    ends the command within ``grace`` seconds, with one last line and exit code 130."""

    def __init__(self, grace: float = GRACE_SECONDS) -> None:
        self._grace = grace
        self._lock = threading.Lock()  # held while the CLI prints its last lines
        self._exit_code: int | None = None  # the CLI's, once it has printed them
        self._interrupted = threading.Event()
        self._write_fd = -1
        self._previous: tuple[Any, int] = (None, -1)

    def __enter__(self) -> "InterruptBound":
        read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # as set_wakeup_fd requires
        self._previous = (
            signal.signal(signal.SIGINT, self._interrupt_once),
            signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False),
        )
        threading.Thread(target=self._watch, args=(read_fd,), name="bce-eval-interrupt", daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        handler, wakeup_fd = self._previous
        signal.set_wakeup_fd(wakeup_fd)
        if not self._interrupted.is_set():  # once interrupted, the bound holds until the process ends
            signal.signal(signal.SIGINT, handler)
        with contextlib.suppress(OSError):  # a watcher that saw Ctrl-C has stopped reading
            os.write(self._write_fd, bytes([_STOP_WATCHING]))
        os.close(self._write_fd)

    def _interrupt_once(self, signum: int, frame: FrameType | None) -> None:
        self._interrupted.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: the first one's bound holds
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def last_lines(self, code: int) -> Iterator[None]:
        """Around the CLI's last lines: the bound does not cut them, and ends the process with ``code`` after them."""
        with self._lock:
            yield
            self._exit_code = code

    def _watch(self, read_fd: int) -> None:
        with open(read_fd, "rb", buffering=0) as pipe:
            while True:
                received = pipe.read(64)
                if signal.SIGINT in received:
                    break
                if not received or _STOP_WATCHING in received:
                    return
        time.sleep(self._grace)
        with self._lock:  # not while the CLI prints its last lines
            kill_children()
            if self._exit_code is None:
                with contextlib.suppress(OSError):  # a closed stderr must not keep the process alive
                    os.write(2, f"{INTERRUPTED}\n".encode())
            os._exit(EXIT_INTERRUPTED if self._exit_code is None else self._exit_code)
