"""The per-row pass on several threads: the same sums to the last bit at every thread count, equal to
an independent computation, in process and in fresh processes with Polars' thread count set."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from tasks.metrics.kernels import HIST_BINS, STATS
from tasks.metrics.lanes import Reducer
from tests.conftest import REPO


def _batches(seed: int, n_batches: int = 9, rows: int = 70_000, parts: int = 5):
    """Batches of logits and labels whose partitions come in runs, some partitions more than once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        s = rng.normal(size=rows) * 3.0
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-s))).astype(np.float64)
        ends = np.sort(rng.choice(np.arange(1, rows), size=3, replace=False))
        run_ends = np.append(ends, rows).astype(np.int64)
        run_ids = rng.integers(0, parts, size=len(run_ends)).astype(np.int64)
        out.append((s, y, run_ends, run_ids))
    return out


def _reduce(batches, threads: int, parts: int = 5):
    reducer = Reducer(threads, capacity=1024)  # small on purpose: the buffers grow
    for s, y, run_ends, run_ids in batches:
        reducer.add(s, y, run_ends, run_ids, True, parts)
    stats, bins, flushes = reducer.finish()
    return stats[:parts].copy(), bins, flushes


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_every_thread_count_gives_the_same_bits_as_one_thread(threads):
    batches = _batches(seed=threads)
    one = _reduce(batches, 1)
    many = _reduce(batches, threads)
    assert one[0].tobytes() == many[0].tobytes()  # every sum, bit for bit
    order = np.lexsort((one[1][:, 1], one[1][:, 0]))
    order_many = np.lexsort((many[1][:, 1], many[1][:, 0]))
    assert np.array_equal(one[1][order, :4], many[1][order_many, :4])  # the same bins and counts
    # Σ p a bin is a float sum whose last bits depend on how the threads shared the rows (only the equal-mass ECE
    # reads it)
    assert np.allclose(one[1][order, 4], many[1][order_many, 4], rtol=1e-12, atol=0)
    assert one[2][np.argsort(one[2][:, 0])].tobytes() == many[2][np.argsort(many[2][:, 0])].tobytes()  # AUC sums


def test_the_sums_equal_an_independent_computation():
    batches = _batches(seed=7)
    stats, bins, flushes = _reduce(batches, 3)
    ids = np.concatenate([np.repeat(r, np.diff(e, prepend=0)) for _, _, e, r in batches])
    s = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    for k in range(5):
        z, t = s[ids == k], y[ids == k]
        loss = [max(zi, 0.0) - zi * ti + math.log1p(math.exp(-abs(zi))) for zi, ti in zip(z.tolist(), t.tolist())]
        row = dict(zip(STATS, stats[k]))
        assert row["n_rows"] == len(z) and row["n_pos"] == t.sum()
        assert row["sum_loss"] == pytest.approx(math.fsum(loss), rel=1e-13)
        p = 1.0 / (1.0 + np.exp(-z))
        assert row["sum_brier"] == pytest.approx(math.fsum(((p - t) ** 2).tolist()), rel=1e-12)
        mine = bins[bins[:, 0] == k]
        by_bin = np.minimum((p * HIST_BINS).astype(int), HIST_BINS - 1)
        expected_bins = np.bincount(by_bin, minlength=HIST_BINS)
        at = mine[:, 1].astype(np.int64)
        assert np.array_equal(mine[:, 2], expected_bins[at]) and mine[:, 2].sum() == len(z)
        assert np.allclose(mine[:, 4], np.bincount(by_bin, p, HIST_BINS)[at], rtol=1e-12, atol=0)
    assert sorted(flushes[:, 0]) == list(range(5))  # one flush per partition, merged across threads


_IN_FRESH_PROCESS = """
import json, sys
import polars as pl
from tasks.data.dataset import discover_dataset, group_files
from tasks.metrics.reduce import reduce_chunk, summarize_records
from tasks.models.scoring import stored_scorer
ds = discover_dataset(sys.argv[1], "label", [], extra_columns=["score"])
scorer = stored_scorer("score", "logit")
recs, hists = zip(*(reduce_chunk(ds, scorer, c) for c in group_files(ds, 10_000_000)))
table, overall = summarize_records(list(recs), list(hists), list(ds.partition_by))
print(json.dumps({"threads": pl.thread_pool_size(), "bce": overall["bce"].hex(),
                  "per_partition": [v.hex() for v in table.sort("part").get_column("bce").to_list()]}))
"""


@pytest.mark.system  # fresh processes
def test_fresh_processes_at_one_and_two_and_three_polars_threads_agree_to_the_bit(tmp_path):
    rng = np.random.default_rng(3)
    for i, n in enumerate((150_000, 90_000, 260_000)):
        z = rng.normal(size=n) * 2.0
        folder = tmp_path / "data" / f"part={i}"
        folder.mkdir(parents=True)
        pl.DataFrame({"score": z, "label": (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)}).write_parquet(
            folder / "f.parquet"
        )
    results = []
    for threads in (1, 2, 3):
        env = {**os.environ, "POLARS_MAX_THREADS": str(threads)}
        out = subprocess.run(
            [sys.executable, "-c", _IN_FRESH_PROCESS, str(tmp_path / "data")],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [r["threads"] for r in results] == [1, 2, 3]
    assert results[0]["bce"] == results[1]["bce"] == results[2]["bce"]
    assert results[0]["per_partition"] == results[1]["per_partition"] == results[2]["per_partition"]
    df = pl.read_parquet(tmp_path / "data" / "**" / "*.parquet")
    z, y = df.get_column("score").to_numpy(), df.get_column("label").to_numpy()
    reference = math.fsum((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).tolist()) / len(z)
    assert float.fromhex(results[0]["bce"]) == pytest.approx(reference, rel=1e-13)


def test_odd_sized_batches_that_grow_the_buffers_give_the_same_bits_run_after_run():
    """Batches above the buffers' capacity, of odd lengths (where malloc's gaps would decide the
    compiled loop's path if the buffers were separate allocations)."""
    rng = np.random.default_rng(1)
    batches = []
    for i in range(12):
        n = int(rng.integers(131_000, 300_000)) | 1
        s, y = rng.normal(size=n) * 2.0, (rng.random(n) < 0.4).astype(np.float64)
        batches.append((s, y, np.array([n // 3, n], np.int64), np.array([i % 5, (i + 1) % 5], np.int64)))

    def run(threads: int) -> bytes:
        reducer = Reducer(threads)
        for s, y, ends, ids in batches:
            reducer.add(s, y, ends, ids, True, 5)
        return reducer.finish()[0][:5].tobytes()

    first = run(1)
    assert all(run(t) == first for t in (1, 2, 3, 4, 1, 2))


def test_rounds_cut_short_by_their_bytes_give_the_same_sums(monkeypatch):
    """A round ends early when its batches reach MAX_LANE_BYTES a thread (its batches then spread
    over every lane): the same sums to the last bit as full rounds, at 1 and 3 threads."""
    import tasks.metrics.lanes as parallel_pass

    batches = _batches(seed=12, n_batches=11, rows=7_001)
    expected = _reduce(batches, 1)[0].tobytes()
    monkeypatch.setattr(parallel_pass, "MAX_LANE_BYTES", 7_001 * 16 * 2)  # 2 batches a thread
    assert _reduce(batches, 1)[0].tobytes() == _reduce(batches, 3)[0].tobytes() == expected
