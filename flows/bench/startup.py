"""Start-up against the peer, for ``make bench``: a cold ``bce-eval evaluate --model-uri`` on 10 rows
beside what a user would otherwise run, each a fresh process, best of several:

- ``mlflow.models.evaluate`` of the same logged model on the same rows (pandas, a classifier
  evaluation in an MLflow run on the same store): the peer;
- an empty one-task Prefect flow (what any Prefect flow costs before its work starts).

bce-eval runs against a running Prefect server and with Prefect's temporary one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from flows.bench.hot import _best_interleaved

#: the peer: a fresh Python process evaluating the logged model with MLflow's own evaluator
_PEER = """
import sys
import mlflow
import pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
df = pd.read_parquet(sys.argv[3])
mlflow.set_experiment("bce-bench-peer")
with mlflow.start_run():
    result = mlflow.models.evaluate(sys.argv[2], df.drop(columns=[c for c in df.columns if c == "part"]),
    targets="label",
                                    model_type="classifier")
assert "log_loss" in result.metrics, result.metrics
"""

_EMPTY_FLOW = "from prefect import flow, task\n@task\ndef t(): return 1\n@flow\ndef f(): return t()\nf()"


def _wall(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def measure_startup(
    ten_rows: Path,
    model_uri: str,
    tracking: str,
    served: dict[str, str],
    temporary: dict[str, str],
    cwd: Path,
    repeats: int,
) -> dict[str, float]:
    """Best wall seconds of each contender on the 10-row dataset ``ten_rows`` (a hive folder)."""
    cli = [
        sys.executable,
        "-m",
        "flows.cli",
        "evaluate",
        str(ten_rows),
        "--label",
        "label",
        "--model-uri",
        model_uri,
        "--no-cache",
    ]
    files = sorted(ten_rows.rglob("*.parquet"))
    peer = [sys.executable, "-c", _PEER, tracking, model_uri, str(files[0])]
    runs = {
        "bce_eval_running_server": (cli, served),
        "bce_eval_temporary_server": (cli, temporary),
        "mlflow_models_evaluate": (peer, temporary),
        "empty_prefect_flow": ([sys.executable, "-c", _EMPTY_FLOW], temporary),
    }
    # cold starts, the contenders in turn (a machine that drifts shifts them alike)
    timed = {name: (lambda cmd=cmd, env=env: _wall(cmd, env, cwd)) for name, (cmd, env) in runs.items()}
    times, _ = _best_interleaved(timed, repeats, warm_up=False)
    peer_s = times["mlflow_models_evaluate"]
    return {
        **{k: round(v, 2) for k, v in times.items()},
        "running_over_peer": round(times["bce_eval_running_server"] / peer_s, 2),
        "temporary_over_peer": round(times["bce_eval_temporary_server"] / peer_s, 2),
    }
