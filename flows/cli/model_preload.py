"""A logged model loaded in a helper process while the CLI starts: a second core does the model's
share of start-up (MLflow's download, skops, scikit-learn) while this one imports Prefect, Polars
and MLflow and opens the flow run.

``bce-eval evaluate --model-uri`` with a running Prefect server starts ``python -m
flows.cli.model_preload`` at once, in the user's folder with the user's environment (a relative
``sqlite:///mlflow.db`` or model path means the same there). The helper describes the model in the
registry and loads it with :func:`tasks.models.loading.load_model`, the code the flow calls, and hands back a
*linear* scikit-learn classifier as its coefficients (:class:`tasks.models.scoring.LinearModel`: the scan
needs nothing else, and this process never imports scikit-learn). Any other model, or any failure,
and the flow loads the model itself, as without the helper, with its own error messages.

What the helper hands back is used once, by the process that started it, and only for the same
model URI, tracking URI and score kind, and the same registry version the flow's own look-up finds
then (an alias moved in between: the flow loads the model itself). It comes through the pipe that
joins the two processes, never through a file: a CLI killed after the helper loaded the model
leaves no copy of it behind.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from tasks.home import CODE_ROOT

if TYPE_CHECKING:
    from tasks.models.loading import LoadedModel

#: at most this long for a helper still loading (it normally ends before the flow asks)
WAIT_SECONDS = 30.0
#: the length that precedes the pickle on the pipe: a helper killed while writing is told apart
_SIZE = struct.Struct("<Q")


class Helper:
    """A running helper: its process and the read end of its pipe. Its model is taken at most once."""

    def __init__(self, process: subprocess.Popen, read_fd: int) -> None:
        self.process, self.read_fd = process, read_fd
        self._taken = False

    def take(self, model_uri: str, tracking_uri: str, score_kind: str) -> "LoadedModel | None":
        """The helper's model if it loaded exactly this one (waiting while it runs), else None. Once:
        a retry or a second load reads the store again."""
        if self._taken:
            return None
        self._taken = True
        data = _read_to_end(self.read_fd, time.monotonic() + WAIT_SECONDS)
        # nothing (it failed, died, or is still loading) or cut short (killed while writing): the flow
        # loads the model itself
        if len(data) < _SIZE.size or _SIZE.unpack_from(data)[0] != len(data) - _SIZE.size:
            return None
        asked, described, loaded = pickle.loads(
            memoryview(data)[_SIZE.size :]
        )  # from our own helper, through our own pipe
        if asked != (model_uri, tracking_uri, score_kind):
            return None
        from tasks.tracking.adapter import MlflowTracker

        # the registry now, as the flow's own look-up saw it: an alias moved since the helper loaded
        # the model means another version, which the flow loads itself
        return loaded if MlflowTracker(tracking_uri).describe_model(model_uri) == described else None

    def stop(self) -> None:
        """End the helper if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.read_fd)


def start_model_preload(model_uri: str, score_kind: str) -> Helper | None:
    """Start the helper for ``model_uri``; None if it cannot start (the flow then loads the model)."""
    read_fd, write_fd = os.pipe()
    # -P: the user's folder is not on the path (a "tasks" package there must not shadow ours)
    path = os.pathsep.join(p for p in (str(CODE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    cmd = [sys.executable, "-P", "-m", "flows.cli.model_preload", str(write_fd), model_uri, score_kind]
    try:
        # a session of its own: Ctrl-C in a terminal signals the terminal's foreground process group,
        # and the CLI, not the helper, decides what stops (it kills the helper on its way out)
        process = subprocess.Popen(
            cmd,
            env=env,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        os.close(read_fd)
        return None
    finally:
        os.close(write_fd)  # the helper holds the only write end: its exit reads as end of file
    return Helper(process, read_fd)


def _read_to_end(fd: int, deadline: float) -> bytes:
    """What the helper wrote before it exited; empty if it has not exited by ``deadline``."""
    # readable when the helper writes or exits (a crash included): no polling. (Not select(): it
    # cannot watch a descriptor numbered above 1023.)
    waiting = select.poll()
    waiting.register(fd, select.POLLIN)
    chunks = []
    while waiting.poll(max(0.0, deadline - time.monotonic()) * 1000):
        chunk = os.read(fd, 1 << 16)
        if not chunk:  # end of file: the helper has exited, all it wrote is here
            return b"".join(chunks)
        chunks.append(chunk)
    return b""


def main(argv: list[str]) -> int:
    """The helper: describe and load the model as the flow would; hand back a linear one's coefficients."""
    import contextlib
    import dataclasses

    done_fd, model_uri, score_kind = int(argv[0]), argv[1], argv[2]
    # closed as soon as this is done, written or not (not at the end of the interpreter's exit), and
    # not inherited by anything this process starts: its end of file is the CLI's signal
    os.set_inheritable(done_fd, False)
    pipe = os.fdopen(done_fd, "wb")
    try:
        from tasks.models.loading import load_model
        from tasks.models.scoring import LinearModel, is_linear
        from tasks.tracking.adapter import MlflowTracker, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri()
        described = MlflowTracker(tracking_uri).describe_model(model_uri)
        loaded = load_model(model_uri, tracking_uri, score_kind)  # type: ignore[arg-type]
        if loaded.flavor.name == "sklearn" and is_linear(loaded.model):
            light = dataclasses.replace(loaded, model=LinearModel.of(loaded.model), example=None)
            data = pickle.dumps(((model_uri, tracking_uri, score_kind), described, light), protocol=5)
            pipe.write(_SIZE.pack(len(data)) + data)  # a CLI gone meanwhile: a broken pipe, and nothing is kept
            pipe.flush()
    except BaseException:  # noqa: BLE001 - the flow loads the model itself and says what is wrong
        return 1
    finally:
        with contextlib.suppress(OSError):
            pipe.close()
    return 0


if __name__ == "__main__":
    import gc

    # a process that imports, loads and exits: its cyclic collector would only walk the libraries'
    # objects (half a second of a core the CLI needs meanwhile; see flows.cli.process)
    gc.disable()
    code = main(sys.argv[1:])
    gc.freeze()
    sys.exit(code)
