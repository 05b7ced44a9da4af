"""``make bench`` / ``python -m flows.bench``: the scale targets, measured in one run on this machine.

Per-row costs are slopes between two sizes of the same hive-partitioned dataset (fixed start-up cost
cancels), best of several runs, against a real Prefect server started here. Prints the ratios and
writes them to ``bench-data/results.json``.

    python -m flows.bench [--small 4000000] [--large 40000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench-data"
FEATURES = [f"x{i}" for i in range(6)]
WEIGHTS = np.array([0.8, -1.1, 0.5, 0.3, -0.7, 1.2])


def write_dataset(root: Path, rows: int, partitions: int, seed: int = 0) -> Path:
    """A hive tree ``part=<i>/data.parquet`` of ``rows`` rows, 6 float features and a 0/1 label."""
    import polars as pl

    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    per = rows // partitions
    for i in range(partitions):
        n = per + (1 if i < rows % partitions else 0)
        X = rng.normal(size=(n, 6))
        p = 1.0 / (1.0 + np.exp(-(X @ WEIGHTS + 0.2 * (i % 7 - 3))))
        y = (rng.random(n) < p).astype(np.int8)
        folder = root / f"part={i}"
        folder.mkdir(parents=True)
        df = pl.DataFrame({**{f: X[:, j] for j, f in enumerate(FEATURES)}, "label": y})
        df.write_parquet(folder / "data.parquet", statistics=True)
    marker.touch()
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command.

    The peak is the child's own high-water mark (VmHWM), polled until it exits: wait4's ru_maxrss
    would also count the parent's pages that the child shared between fork and exec.
    """
    start = time.perf_counter()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
    peak = 0.0
    while proc.poll() is None:
        hwm = _peak_rss_mib(proc.pid)
        peak = max(peak, hwm or 0.0)
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        err.seek(0)
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
    return elapsed, peak


def _best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def floor_scan(root: Path) -> None:
    """Only scan and decode the columns an evaluation reads."""
    import polars as pl

    pl.scan_parquet(root, hive_partitioning=True).select([*FEATURES, "label"]).select(pl.all().sum()).collect(engine="streaming")


def hand_written(root: Path, w: np.ndarray, b: float) -> None:
    """One fused Polars expression: logits, stable BCE, group by partition (no checks)."""
    import polars as pl

    z = sum((pl.col(f) * float(wi) for f, wi in zip(FEATURES, w)), pl.lit(b))
    y = pl.col("label").cast(pl.Float64)
    loss = pl.max_horizontal(z, 0.0) - z * y + (-z.abs()).exp().log1p()
    (
        pl.scan_parquet(root, hive_partitioning=True)
        .group_by("part")
        .agg(loss.sum().alias("s"), pl.len().alias("n"))
        .collect(engine="streaming")
    )


def naive(root: Path, model: object) -> None:
    """pandas read_parquet, then predict_proba and log_loss per partition in a loop."""
    import pandas as pd
    from sklearn.metrics import log_loss

    df = pd.read_parquet(root)
    for _, part in df.groupby("part", observed=True):
        p = model.predict_proba(part[FEATURES].to_numpy())[:, 1]
        log_loss(part["label"].to_numpy(), p, labels=[0, 1])


def hot_pass(root: Path, model: object) -> None:
    """Discovery and the streaming reduce of every partition, in process, as the flow calls them."""
    from tasks.dataset import discover_dataset, group_files
    from tasks.scoring import make_scorer
    from tasks.reduce import reduce_chunk

    dataset = discover_dataset(root, "label", FEATURES)
    scorer = make_scorer(model, dataset.features)
    for chunk in group_files(dataset, 64_000_000):
        reduce_chunk(dataset, scorer, chunk)


def verify_pass(root: Path) -> None:
    """What ``--verify-cache`` adds: discovery and a hash of every partition's used column chunks."""
    from tasks.cache import partition_content_hashes
    from tasks.dataset import discover_dataset, files_by_partition

    dataset = discover_dataset(root, "label", FEATURES)
    partition_content_hashes(dataset, files_by_partition(dataset))


def measure_verify_cost(root: Path, model: object, repeats: int) -> dict[str, float]:
    """``--verify-cache``'s hashing against the hot pass of a full run, in process, best of ``repeats``."""
    hot_pass(root, model)  # compile the loop and fill the page cache first
    hot = _best(lambda: _timed(lambda: hot_pass(root, model)), repeats)
    verify = _best(lambda: _timed(lambda: verify_pass(root)), repeats)
    return {"hot_pass_s": round(hot, 3), "verify_hash_s": round(verify, 3), "verify_over_full": round(verify / hot, 3)}


def _tree_models(root: Path) -> dict[str, object]:
    """An XGBoost and a LightGBM classifier of 200 trees of depth 6, fitted on 200,000 rows of ``root``."""
    import polars as pl
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    train = pl.scan_parquet(str(root / "**/*.parquet"), hive_partitioning=True).head(200_000).collect()
    X, y = train.select(FEATURES).to_numpy(), train.get_column("label").to_numpy()
    return {
        "xgboost": XGBClassifier(n_estimators=200, max_depth=6).fit(X, y).get_booster(),
        "lightgbm": LGBMClassifier(n_estimators=200, max_depth=6, num_leaves=63, verbose=-1).fit(X, y).booster_,
    }


def measure_tree_models(root: Path, repeats: int) -> dict[str, dict[str, float]]:
    """bce-eval's whole pass (discovery, read, margin, BCE) on a tree model against the model's own
    margin prediction over the same rows already in memory, in process, best of ``repeats``."""
    import polars as pl

    from tasks.dataset import discover_dataset, group_files
    from tasks.flavors import LightGBMRaw, XGBoostMargin
    from tasks.reduce import reduce_chunk

    X = pl.scan_parquet(str(root / "**/*.parquet"), hive_partitioning=True).select(FEATURES).collect().to_numpy(order="c")
    out = {}
    for name, booster in _tree_models(root).items():
        batch = XGBoostMargin.of(booster, name) if name == "xgboost" else LightGBMRaw.of(booster, name)
        dataset = discover_dataset(root, "label", FEATURES)
        scorer = batch.scorer(dataset.features, f"bench-{name}")

        def whole_pass() -> None:
            for chunk in group_files(dataset, 64_000_000):
                reduce_chunk(dataset, scorer, chunk)

        predict = _best(lambda: _timed(lambda: batch.score(X)), repeats)
        evaluate = _best(lambda: _timed(whole_pass), repeats)
        out[name] = {
            "predict_ns_per_row": round(predict / len(X) * 1e9, 1), "bce_eval_ns_per_row": round(evaluate / len(X) * 1e9, 1),
            "ratio": round(evaluate / predict, 3),
        }
        print(f"  {name}: {out[name]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=int, default=4_000_000)
    ap.add_argument("--large", type=int, default=40_000_000)
    ap.add_argument("--partitions", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--partition-rows", type=int, default=2_000_000, help="rows for the 100 vs 10,000 partitions test")
    ap.add_argument("--verify-only", action="store_true", help="only measure --verify-cache's cost, in process, on the large dataset")
    ap.add_argument("--trees-only", action="store_true", help="only measure XGBoost and LightGBM models against their own predict, in process")
    args = ap.parse_args(argv)

    import polars as pl
    from sklearn.linear_model import LogisticRegression

    OUT.mkdir(exist_ok=True)
    print(f"writing datasets under {OUT} (reused when present) ...", flush=True)
    small = write_dataset(OUT / f"rows{args.small}", args.small, args.partitions)
    large = write_dataset(OUT / f"rows{args.large}", args.large, args.partitions)
    p100 = write_dataset(OUT / f"p100_rows{args.partition_rows}", args.partition_rows, 100, seed=1)
    p10k = write_dataset(OUT / f"p10000_rows{args.partition_rows}", args.partition_rows, 10_000, seed=1)
    tiny = write_dataset(OUT / "tiny", 1000, 4, seed=2)

    work = Path(tempfile.mkdtemp(prefix="bce-bench-"))
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(work / "prefect-client")}
    sample = pl.read_parquet(small / "part=0" / "data.parquet")
    model = LogisticRegression().fit(sample.select(FEATURES).to_numpy(), sample.get_column("label").to_numpy())
    from tasks.run_content import RunContent
    from tasks.tracking import MlflowTracker

    # artifacts beside the temporary store (never in the working directory's ./mlruns); the
    # signature names the features, so --model-uri runs need no --features
    tracker = MlflowTracker(tracking)
    run_id, experiment_id = tracker.create_run("bce-bench", "bench model", {})
    example = sample.select(FEATURES).to_pandas().head(5)
    tracker.log_run_content(run_id, experiment_id, RunContent("bce-bench", "bench model", model=model, model_input_example=example))
    model_uri = f"runs:/{run_id}/model"
    w, b = model.coef_.ravel(), float(model.intercept_[0])
    print(f"timing tree models (200 trees, depth 6) on {small.name}: bce-eval's pass vs the model's own margin predict ...", flush=True)
    trees = measure_tree_models(small, args.repeats)
    if args.trees_only:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print("timing --verify-cache's hashing against the hot pass (in process) ...", flush=True)
    verify_cost = measure_verify_cost(large, model, args.repeats)
    print(f"  {verify_cost}", flush=True)
    if args.verify_only:
        shutil.rmtree(work, ignore_errors=True)
        return 0

    port = _free_port()
    server_env = {**env, "PREFECT_HOME": str(work / "prefect-server")}
    server_env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    results: dict[str, object] = {
        "small_rows": args.small, "large_rows": args.large, "partitions": args.partitions, "verify_cache": verify_cost, "tree_models": trees,
    }
    try:
        import httpx

        api = f"http://127.0.0.1:{port}/api"
        for _ in range(240):
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        served = {**env, "PREFECT_API_URL": api}
        cli = [sys.executable, "-m", "flows.cli", "evaluate"]

        def evaluate(root: Path, auc: str, *extra: str) -> tuple[float, float]:
            flags = list(extra) or ["--no-cache"]  # per-row costs are measured without the cache
            return _run([*cli, str(root), "--label", "label", "--model-uri", model_uri, "--auc", auc, *flags], served)

        evaluate(small, "exact")  # warm the server, the store and the page cache once
        times: dict[str, dict[str, float]] = {}
        rss: dict[str, float] = {}
        for name, root in (("small", small), ("large", large)):
            print(f"timing {name} ({root.name}) ...", flush=True)
            t = {
                "floor": _best(lambda: _timed(lambda: floor_scan(root)), args.repeats),
                "hand_written": _best(lambda: _timed(lambda: hand_written(root, w, b)), args.repeats),
                "naive": _best(lambda: _timed(lambda: naive(root, model)), max(1, args.repeats - 1)),
            }
            for auc in ("binned", "exact"):
                runs = [evaluate(root, auc) for _ in range(args.repeats)]
                t[f"bce_eval_auc_{auc}"] = min(r[0] for r in runs)
                rss[f"{name}_auc_{auc}"] = max(r[1] for r in runs)
            times[name] = t
            print(f"  {json.dumps({k: round(v, 3) for k, v in t.items()})}", flush=True)
        extra = args.large - args.small
        slope = {k: (times["large"][k] - times["small"][k]) / extra * 1e9 for k in times["small"]}
        results["ns_per_row"] = {k: round(v, 3) for k, v in slope.items()}
        results["ratio_to_floor"] = {k: round(v / slope["floor"], 3) for k, v in slope.items()}
        results["naive_over_bce_eval"] = {
            auc: round(slope["naive"] / slope[f"bce_eval_auc_{auc}"], 2) for auc in ("binned", "exact")
        }
        results["peak_rss_mib"] = {k: round(v) for k, v in rss.items()}
        results["memory_ratio_10x_rows"] = {
            auc: round(rss[f"large_auc_{auc}"] / rss[f"small_auc_{auc}"], 2) for auc in ("binned", "exact")
        }

        print("timing 100 vs 10,000 partitions ...", flush=True)
        t100 = min(evaluate(p100, "binned")[0] for _ in range(args.repeats))
        t10k = min(evaluate(p10k, "binned")[0] for _ in range(args.repeats))
        results["partitions_10000_over_100"] = round(t10k / t100, 2)
        results["partitions_seconds"] = {"100": round(t100, 2), "10000": round(t10k, 2)}

        print("timing an incremental run: one new partition added to the large dataset ...", flush=True)
        cache_env = {**served, "BCE_EVAL_CACHE": str(work / "cache")}
        inc_root = work / "incremental"
        shutil.copytree(large, inc_root)
        full_t = _run([*cli, str(inc_root), "--label", "label", "--model-uri", model_uri, "--full"], cache_env)[0]
        new = pl.read_parquet(large / "part=0" / "data.parquet")
        (inc_root / f"part={args.partitions}").mkdir()
        new.write_parquet(inc_root / f"part={args.partitions}" / "data.parquet")
        inc_t = _run([*cli, str(inc_root), "--label", "label", "--model-uri", model_uri], cache_env)[0]
        # the same run again, nothing new: every partition cached (per-partition bookkeeping, no rows)
        cached_t = min(_run([*cli, str(inc_root), "--label", "label", "--model-uri", model_uri], cache_env)[0] for _ in range(args.repeats))
        # --verify-cache: the first verified run recomputes what was cached without a hash; after it,
        # a verified run with nothing new only hashes the bytes of every cached file
        verify_cmd = [*cli, str(inc_root), "--label", "label", "--model-uri", model_uri, "--verify-cache"]
        _run(verify_cmd, cache_env)
        verified_t = min(_run(verify_cmd, cache_env)[0] for _ in range(args.repeats))
        results["incremental"] = {
            "full_s": round(full_t, 2), "one_new_partition_s": round(inc_t, 2), "nothing_new_s": round(cached_t, 2),
            "nothing_new_verified_s": round(verified_t, 2),
        }
        shutil.rmtree(inc_root, ignore_errors=True)

        print("timing fixed costs ...", flush=True)
        tiny_cmd = [*cli, str(tiny), "--label", "label", "--model-uri", model_uri]
        results["fixed_cost_with_server_s"] = round(min(_run(tiny_cmd, served)[0] for _ in range(args.repeats)), 2)
        temp_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        empty = [sys.executable, "-c", "from prefect import flow, task\n@task\ndef t(): return 1\n@flow\ndef f(): return t()\nf()"]
        results["fixed_cost_temporary_server_s"] = round(min(_run(tiny_cmd, temp_env)[0] for _ in range(args.repeats)), 2)
        results["empty_flow_temporary_server_s"] = round(min(_run(empty, temp_env)[0] for _ in range(args.repeats)), 2)
        fixed = results["fixed_cost_with_server_s"]
        inc = results["incremental"]
        # marginal = wall time minus the fixed cost of a run on a tiny dataset, both with the server up
        inc["marginal_ratio"] = round(max(inc["one_new_partition_s"] - fixed, 0.0) / max(inc["full_s"] - fixed, 1e-9), 3)
        # the new partition's own cost: against the same run with nothing new (same partitions, same bookkeeping)
        base = inc["nothing_new_s"]
        inc["new_rows_ratio"] = round(max(inc["one_new_partition_s"] - base, 0.0) / max(inc["full_s"] - base, 1e-9), 3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    r = results
    print("\nbce-eval benchmark (slopes between the two sizes; best of %d)" % args.repeats)
    print(f"  per-row cost relative to scanning the same columns (floor = {r['ns_per_row']['floor']:.2f} ns/row):")
    for k, v in r["ratio_to_floor"].items():
        print(f"    {k:<20} {v:6.2f}x   ({r['ns_per_row'][k]:.2f} ns/row)")
    print(f"  naive / bce-eval per row: {r['naive_over_bce_eval']}   (target >= 4)")
    print(f"  peak RSS MiB: {r['peak_rss_mib']}; 10x rows -> {r['memory_ratio_10x_rows']}x memory (target <= 2)")
    print(f"  10,000 vs 100 partitions, same rows: {r['partitions_10000_over_100']}x {r['partitions_seconds']} (target <= 1.3)")
    print(f"  fixed cost, tiny data: {r['fixed_cost_with_server_s']} s with a running server (target <= 6); "
          f"{r['fixed_cost_temporary_server_s']} s with the temporary server vs "
          f"{r['empty_flow_temporary_server_s']} s for an empty flow with one task")
    inc = r["incremental"]
    print(f"  incremental: one new partition of {args.partitions + 1}: {inc['one_new_partition_s']} s vs a full run {inc['full_s']} s "
          f"and {inc['nothing_new_s']} s with nothing new; marginal cost {inc['marginal_ratio']}x of a full run's minus the "
          f"tiny-data fixed cost, {inc['new_rows_ratio']}x minus the nothing-new run (target <= 0.1)")
    v = r["verify_cache"]
    print(f"  --verify-cache: hashing every cached file's used column chunks costs {v['verify_over_full']}x the hot pass of a "
          f"full run in process ({v['verify_hash_s']} s vs {v['hot_pass_s']} s); a whole verified run with nothing new "
          f"{inc['nothing_new_verified_s']} s vs {inc['nothing_new_s']} s unverified and {inc['full_s']} s full")
    for name, t in r["tree_models"].items():
        print(f"  {name} (200 trees, depth 6): bce-eval {t['bce_eval_ns_per_row']} ns/row vs the model's own margin predict "
              f"{t['predict_ns_per_row']} ns/row on rows in memory: {t['ratio']}x (target <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
