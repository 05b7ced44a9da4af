"""A logged model loaded in a helper process while the CLI starts: a second core does the model's
share of start-up (MLflow's download, skops, scikit-learn) while this one imports Prefect, Polars
and MLflow and opens the flow run.

``bce-eval evaluate --model-uri`` with a running Prefect server starts ``python -m
tasks.model_prefetch`` at once, in the user's folder with the user's environment (a relative
``sqlite:///mlflow.db`` or model path means the same there). The helper describes the model in the
registry and loads it with :func:`tasks.model.load_model`, the code the flow calls, and hands back a
*linear* scikit-learn classifier as its coefficients (:class:`tasks.scoring.LinearModel`: the scan
needs nothing else, and this process never imports scikit-learn). Any other model, or any failure,
and the flow loads the model itself, as without the helper, with its own error messages.

What the helper hands back is used once, by the process that started it, and only for the same
model URI, tracking URI and score kind, and the same registry version the flow's own look-up finds
then (an alias moved in between: the flow loads the model itself).
"""

from __future__ import annotations

import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from tasks.model import LoadedModel

#: "<read end of the helper's pipe>:<its folder>", for this process and only while its command runs
ENV = "BCE_EVAL_MODEL_PREFETCH"
#: at most this long for a helper still loading (it normally ends before the flow asks)
WAIT_SECONDS = 30.0
_RESULT = "model.pkl"
_REPO = Path(__file__).resolve().parents[1]


class Helper(NamedTuple):
    """A running helper: its process, the read end of its pipe, its private folder."""

    process: subprocess.Popen
    read_fd: int
    folder: str


def start_prefetch(model_uri: str, score_kind: str) -> Helper | None:
    """Start the helper for ``model_uri``; None if it cannot start (the flow then loads the model)."""
    folder = tempfile.mkdtemp(prefix="bce-eval-prefetch-")  # private (mode 700): it will hold a pickle
    read_fd, write_fd = os.pipe()
    # -P: the user's folder is not on the path (a "tasks" package there must not shadow ours)
    path = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**{k: v for k, v in os.environ.items() if k != ENV}, "PYTHONPATH": path}
    cmd = [sys.executable, "-P", "-m", "tasks.model_prefetch", folder, str(write_fd), model_uri, score_kind]
    try:
        process = subprocess.Popen(cmd, env=env, pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        os.close(read_fd)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    finally:
        os.close(write_fd)  # the helper holds the only write end: its exit reads as end of file
    os.environ[ENV] = f"{read_fd}:{folder}"
    return Helper(process, read_fd, folder)


def stop_prefetch(helper: Helper | None) -> None:
    """End the helper if it still runs, remove its folder, and forget it (a later command loads anew)."""
    os.environ.pop(ENV, None)
    if helper is None:
        return
    if helper.process.poll() is None:
        helper.process.kill()
    helper.process.wait()
    os.close(helper.read_fd)
    shutil.rmtree(helper.folder, ignore_errors=True)


def take_prefetched(model_uri: str, tracking_uri: str, score_kind: str) -> "LoadedModel | None":
    """The helper's model if it loaded exactly this one (waiting while it runs), else None. Once."""
    value = os.environ.pop(ENV, None)  # used once: a retry or a second load reads the store again
    if not value:
        return None
    fd, folder = value.split(":", 1)
    # readable when the helper says it is done, or when it exits (a crash included): no polling
    waiting = select.poll()  # (not select(): it cannot watch a descriptor numbered above 1023)
    waiting.register(int(fd), select.POLLIN)
    waiting.poll(WAIT_SECONDS * 1000)
    result = Path(folder) / _RESULT
    if not result.exists():
        return None
    with result.open("rb") as fh:
        asked, described, loaded = pickle.load(fh)  # written by our own helper, in our own private folder
    if asked != (model_uri, tracking_uri, score_kind):
        return None
    from tasks.tracking import MlflowTracker

    # the registry now, as the flow's own look-up saw it: an alias moved since the helper loaded
    # the model means another version, which the flow loads itself
    return loaded if MlflowTracker(tracking_uri).describe_model(model_uri) == described else None


def main(argv: list[str]) -> int:
    """The helper: describe and load the model as the flow would; hand back a linear one's coefficients."""
    import dataclasses

    folder, done_fd, model_uri, score_kind = Path(argv[0]), int(argv[1]), argv[2], argv[3]
    parent = os.getppid()
    try:
        from tasks.model import load_model
        from tasks.scoring import LinearModel, is_linear
        from tasks.tracking import MlflowTracker, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri()
        described = MlflowTracker(tracking_uri).describe_model(model_uri)
        loaded = load_model(model_uri, tracking_uri, score_kind)  # type: ignore[arg-type]
        if loaded.flavor.name == "sklearn" and is_linear(loaded.model):
            light = dataclasses.replace(loaded, model=LinearModel.of(loaded.model), example=None)
            data = pickle.dumps(((model_uri, tracking_uri, score_kind), described, light), protocol=5)
            if os.getppid() != parent:  # the CLI is gone (killed): leave nothing behind
                shutil.rmtree(folder, ignore_errors=True)
                return 0
            (folder / (_RESULT + ".part")).write_bytes(data)
            (folder / (_RESULT + ".part")).replace(folder / _RESULT)  # whole or absent
    except BaseException:  # noqa: BLE001 - the flow loads the model itself and says what is wrong
        return 1
    finally:
        os.write(done_fd, b"x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
