"""A logged model loaded in a helper process while the CLI starts: a second core does the model's
share of start-up (MLflow's download, skops, scikit-learn) while this one imports Prefect, Polars
and MLflow and opens the flow run.

``bce-eval evaluate --model-uri`` with a running Prefect server starts ``python -m
tasks.model_prefetch`` at once. The helper calls :func:`tasks.model.load_model` itself, the same
code the flow calls, and hands back a *linear* scikit-learn classifier as its coefficients
(:class:`tasks.scoring.LinearModel`: the scan needs nothing else, and this process then never
imports scikit-learn). Any other model, or any failure, and the flow loads the model itself, as
without the helper, with its own error messages. What the helper hands back is used only for the
same model URI, tracking URI and score kind, once, by the process that started it.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.model import LoadedModel

#: the helper's folder, for this process and only while its command runs
ENV = "BCE_EVAL_MODEL_PREFETCH"
#: at most this long for a helper still loading (it normally ends before the flow asks)
WAIT_SECONDS = 30.0
_RESULT, _SKIPPED = "model.pkl", "skipped"


def start_prefetch(model_uri: str, score_kind: str) -> subprocess.Popen | None:
    """Start the helper for ``model_uri`` (its folder in :data:`ENV`); :func:`stop_prefetch` ends it."""
    folder = tempfile.mkdtemp(prefix="bce-eval-prefetch-")  # private (mode 700): it will hold a pickle
    os.environ[ENV] = folder
    cmd = [sys.executable, "-m", "tasks.model_prefetch", folder, model_uri, score_kind]
    env = {k: v for k, v in os.environ.items() if k != ENV}  # the helper loads for real, not from itself
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[1])


def stop_prefetch(helper: subprocess.Popen | None) -> None:
    """End the helper if it still runs, remove its folder, and forget it (a later command loads anew)."""
    import shutil

    folder = os.environ.pop(ENV, None)
    if helper is not None and helper.poll() is None:
        helper.kill()
        helper.wait()
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def take_prefetched(model_uri: str, tracking_uri: str, score_kind: str) -> "LoadedModel | None":
    """The helper's model if it loaded exactly this one (waiting while it runs), else None. Once."""
    folder = os.environ.get(ENV)
    if not folder:
        return None
    result, skipped = Path(folder) / _RESULT, Path(folder) / _SKIPPED
    deadline = time.monotonic() + WAIT_SECONDS
    while not (result.exists() or skipped.exists()) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.environ.pop(ENV, None)  # used once: a retry or a second load reads the store again
    if not result.exists():
        return None
    with result.open("rb") as fh:
        asked, loaded = pickle.load(fh)  # written by our own helper, in our own private folder
    return loaded if asked == (model_uri, tracking_uri, score_kind) else None


def _write(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / (name + ".part")
    tmp.write_bytes(data)
    tmp.replace(folder / name)  # whole or absent: the reader never sees half a file


def main(argv: list[str]) -> int:
    """The helper: load the model as the flow would, and hand back a linear one's coefficients."""
    import dataclasses

    folder, model_uri, score_kind = Path(argv[0]), argv[1], argv[2]
    try:
        from tasks.model import load_model
        from tasks.scoring import LinearModel, is_linear
        from tasks.tracking import resolve_tracking_uri

        tracking_uri = resolve_tracking_uri()
        loaded = load_model(model_uri, tracking_uri, score_kind)  # type: ignore[arg-type]
        if loaded.flavor.name != "sklearn" or not is_linear(loaded.model):
            _write(folder, _SKIPPED, b"")
            return 0
        light = dataclasses.replace(loaded, model=LinearModel.of(loaded.model), example=None)
        _write(folder, _RESULT, pickle.dumps(((model_uri, tracking_uri, score_kind), light), protocol=5))
    except BaseException:  # noqa: BLE001 - the flow loads the model itself and says what is wrong
        _write(folder, _SKIPPED, b"")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
