"""The hot pass in process, against its peers, at a given thread count: part of ``make bench``.

``python -m flows.bench.hot ROOT --threads T`` runs in a fresh process with Polars' and DuckDB's
threads set to T (Polars reads its count once, at import) and prints one JSON line: seconds, best
of ``--repeats``, for

- the **floor**: Polars scanning and decoding the columns an evaluation reads, nothing else;
- the same columns **decoded into memory** (``collect()``, Polars' default engine): what loading
  the data to compute a metric on it costs before any metric, the heavier floor an outside
  measurement of the hot pass appears to have used (its hand-written query was 1.20x its floor,
  where it is about 1.7x the floor above and 1.3x this one);
- a **hand-written Polars** query: the stable per-row loss from the logit, summed per partition;
- one **DuckDB SQL** ``GROUP BY`` computing the same;
- **bce-eval**: discovery and the streaming reduce of every chunk, as the flow calls them;
- **bce-eval's scan** alone: its Polars query (read, logit, label) drained, without the per-row pass;
- the **per-row pass alone** (:class:`tasks.metrics.kernels.Reducer` on scores already in memory) at 1
  thread and at T threads, from which the serial share of the pass follows;
- the **pass in the flow**: the CPU time its threads spend per row inside bce-eval's hot pass,
  beside Polars' decoding (alone, its batches sit in its own core's cache; here they come from
  Polars' threads, which share the caches with it);

and each one's overall BCE, which must agree to 1e-12, with bce-eval's as its exact bits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks.home import CODE_ROOT

FEATURES = [f"x{i}" for i in range(6)]


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls after one warm-up call, and the last call's result."""
    times, results = _best_interleaved({"fn": fn}, repeats)
    return times["fn"], results["fn"]


def _best_interleaved(
    contenders: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True
) -> tuple[dict[str, float], dict[str, object]]:
    """Each contender's best wall time of ``repeats`` calls, and its last result.

    One warm-up call each (unless ``warm_up`` is false: cold starts are what is timed), then the
    contenders in turn, ``repeats`` rounds: a machine that slows down or speeds up during the run
    (other load, clocks, a noisy neighbour) shifts every contender alike, so the ratios between
    them hold better than with each one's calls in a row.
    """
    results = {name: fn() for name, fn in contenders.items()} if warm_up else dict.fromkeys(contenders)
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best, results


def floor_scan(root: Path) -> float:
    """Scan and decode the columns an evaluation reads; returns their row count."""
    import polars as pl

    out = (
        pl.scan_parquet(root, hive_partitioning=True)
        .select([*FEATURES, "label"])
        .select(pl.all().sum(), pl.len())
        .collect(engine="streaming")
    )
    return float(out.get_column("len")[0])


def decode_into_memory(root: Path) -> float:
    """Decode the columns an evaluation reads into one in-memory frame; returns its row count."""
    import polars as pl

    return float(pl.scan_parquet(root, hive_partitioning=True).select([*FEATURES, "label"]).collect().height)


def hand_written_bce(root: Path, w: np.ndarray, b: float) -> float:
    """One fused Polars query: logit, stable loss max(z,0) − z·y + log1p(exp(−|z|)), summed per partition."""
    import polars as pl

    z = sum((pl.col(f) * float(wi) for f, wi in zip(FEATURES, w)), pl.lit(b))
    y = pl.col("label").cast(pl.Float64)
    loss = pl.max_horizontal(z, 0.0) - z * y + (-z.abs()).exp().log1p()
    per_part = (
        pl.scan_parquet(root, hive_partitioning=True)
        .group_by("part")
        .agg(loss.sum().alias("s"), pl.len().alias("n"))
        .collect(engine="streaming")
    )
    return float(per_part.get_column("s").sum() / per_part.get_column("n").sum())


def duckdb_bce(root: Path, w: np.ndarray, b: float, threads: int) -> float:
    """One DuckDB SQL ``GROUP BY`` of the same stable loss (``ln(1 + exp(−|z|))``: DuckDB has no log1p)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    z = " + ".join([repr(float(b)), *(f"{float(wi)!r} * {f}" for f, wi in zip(FEATURES, w))])
    sql = f"""
        SELECT sum(s) / sum(n) FROM (
          SELECT part, sum(greatest(z, 0) - z * label + ln(1 + exp(-abs(z)))) AS s, count(*) AS n
          FROM (SELECT part, label, {z} AS z FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true))
          GROUP BY part)
    """
    value = con.execute(sql).fetchone()[0]
    con.close()
    return float(value)


def bce_eval_bce(root: Path, model: object) -> float:
    """Discovery and the streaming reduce of every chunk, in process, as the flow calls them."""
    from tasks.data.dataset import discover_dataset, group_files
    from tasks.metrics.reduce import reduce_chunk, summarize_records
    from tasks.models.scoring import make_scorer

    dataset = discover_dataset(root, "label", FEATURES)
    scorer = make_scorer(model, dataset.features)
    records, hists = zip(*(reduce_chunk(dataset, scorer, chunk) for chunk in group_files(dataset, 64_000_000)))
    _, overall = summarize_records(list(records), list(hists), list(dataset.partition_by))
    return float(overall["bce"])


def bce_eval_scan(root: Path, model: object) -> float:
    """bce-eval's own Polars query alone (read, logit, label as float), drained batch by batch: the pass's input."""
    from tasks.data.dataset import discover_dataset, group_files, scan_files
    from tasks.metrics.reduce import _S, _Y, _scan_columns
    from tasks.models.scoring import make_scorer

    dataset = discover_dataset(root, "label", FEATURES)
    scorer = make_scorer(model, dataset.features)
    rows = 0
    for chunk in group_files(dataset, 64_000_000):
        for batch in scan_files(dataset, chunk).select(_scan_columns(dataset, scorer, [])).collect_batches():
            scores, labels = (
                batch.get_column(_S).to_numpy(),
                batch.get_column(_Y).to_numpy(),
            )  # both, as the pass takes them
            rows += min(len(scores), len(labels))
    return float(rows)


def pass_alone(
    threads: int, rows: int = 20_000_000, partitions: int = 100, batch: int = 100_000, repeats: int = 5
) -> float:
    """Seconds per row of the per-row pass on logits already in memory, in batches and partitions of
    the benchmark dataset's sizes (Polars' 100,000-row morsels; 200,000-row partitions).

    The batches cycle over 16 distinct arrays (25 MiB, within this machine's L3 cache): Polars hands
    over batches it has just written, so they are rarely in main memory only.
    """
    from tasks.metrics.lanes import Reducer

    rng = np.random.default_rng(0)
    pool = [(rng.normal(size=batch) * 2.0, (rng.random(batch) < 0.4).astype(np.float64)) for _ in range(16)]
    per = rows // partitions

    def one_pass() -> None:
        reducer = Reducer(threads)
        for i, lo in enumerate(range(0, rows, batch)):
            hi = min(rows, lo + batch)
            first, last = lo // per, (hi - 1) // per
            ends = np.minimum(np.arange(first + 1, last + 2) * per, hi) - lo
            s, y = pool[i % len(pool)]
            reducer.add(
                s[: hi - lo],
                y[: hi - lo],
                ends.astype(np.int64),
                np.arange(first, last + 1, dtype=np.int64),
                True,
                partitions,
            )
        reducer.finish()

    return _best(one_pass, repeats)[0] / rows


def lane_time(root: Path, model: object) -> tuple[float, int]:
    """``(CPU seconds, rows)`` of the pass's threads in one :func:`bce_eval_bce`: their own thread
    time, summed over every lane's share, and the rows those shares held."""
    from tasks.metrics import lanes as parallel_pass

    run = parallel_pass._Lane.run
    spent: list[tuple[float, int]] = []  # one (seconds, rows) per lane's share: list.append is atomic

    def timed_run(lane: object, batches: list[tuple]) -> None:
        start = time.thread_time()
        run(lane, batches)
        spent.append((time.thread_time() - start, sum(len(batch[0]) for batch in batches)))

    parallel_pass._Lane.run = timed_run
    try:
        bce_eval_bce(root, model)
    finally:
        parallel_pass._Lane.run = run
    return sum(s for s, _ in spent), sum(n for _, n in spent)


def pass_in_flow(root: Path, model: object, repeats: int = 3) -> float:
    """Seconds of CPU per row of the pass inside bce-eval's hot pass (:func:`lane_time`), the least of ``repeats``
    runs."""
    return min(seconds / rows for seconds, rows in (lane_time(root, model) for _ in range(repeats)))


def _model(root: Path) -> object:
    """The logistic model every contender evaluates (fitted on one partition, so all see the same weights)."""
    import polars as pl
    from sklearn.linear_model import LogisticRegression

    sample = pl.read_parquet(root / "part=0" / "data.parquet")
    return LogisticRegression().fit(sample.select(FEATURES).to_numpy(), sample.get_column("label").to_numpy())


def measure(root: Path, threads: int, repeats: int) -> dict[str, object]:
    """Every contender's best time and BCE at ``threads`` threads (set in this process's environment)."""
    import polars as pl

    assert pl.thread_pool_size() == threads, (pl.thread_pool_size(), threads)
    model = _model(root)
    w, b = model.coef_.ravel(), float(model.intercept_[0])
    times, results = _best_interleaved(
        {
            "floor": lambda: floor_scan(root),
            "floor_in_memory": lambda: decode_into_memory(root),
            "hand_written": lambda: hand_written_bce(root, w, b),
            "duckdb": lambda: duckdb_bce(root, w, b, threads),
            "bce_eval": lambda: bce_eval_bce(root, model),
            "bce_eval_scan": lambda: bce_eval_scan(root, model),
        },
        repeats,
    )
    rows = results["floor"]
    bces = {k: results[k] for k in ("hand_written", "duckdb", "bce_eval")}
    return {
        "threads": threads,
        "rows": int(rows),
        "seconds": times,
        "bce": bces,
        "bce_eval_bits": float(bces["bce_eval"]).hex(),
        "pass_alone_ns_per_row": {"1": pass_alone(1) * 1e9, str(threads): pass_alone(threads) * 1e9},
        "pass_in_flow_ns_per_row": pass_in_flow(root, model) * 1e9,
    }


def run_at(root: Path, threads: int, repeats: int) -> dict[str, object]:
    """:func:`measure` in a fresh process with Polars' thread count set to ``threads``."""
    import subprocess

    env = {**os.environ, "POLARS_MAX_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "flows.bench.hot", str(root), "--threads", str(threads), "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=CODE_ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="a hive tree part=<i>/data.parquet written by flows.bench.run")
    ap.add_argument("--threads", type=int, required=True, help="the thread count POLARS_MAX_THREADS was set to")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of each contender, after one warm-up call")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.root, args.threads, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
