"""Partition numbers of a batch's rows, as runs: against a run-length encoding by pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from tasks.data.dataset import discover_dataset
from tasks.metrics.runs import PartitionRuns


def test_runs_of_key_columns_inside_the_files_follow_every_change(tmp_path):
    rng = np.random.default_rng(8)
    keys = rng.choice(["a", "b", "c"], 500)
    keys[100:180] = "a"  # a long run among short ones
    frame = pl.DataFrame({"y": rng.integers(0, 2, 500), "x": rng.normal(size=500), "shop": keys})
    frame.write_parquet(tmp_path / "f.parquet")
    ds = discover_dataset(tmp_path / "f.parquet", "y", ["x"], partition_by=["shop"])
    runs = PartitionRuns(ds, list(ds.files))
    ends, ids = runs.runs(frame.head(300))
    ends2, ids2 = runs.runs(frame.tail(200))
    got = np.concatenate([np.repeat(ids, np.diff(ends, prepend=0)), np.repeat(ids2, np.diff(ends2, prepend=0))])
    # the same key gets the same number in both batches; numbers follow first appearance
    codes = pd.Series(keys).map({k: i for i, k in enumerate(dict.fromkeys(keys))}).to_numpy()
    assert (got == codes).all()
    changes = int((pd.Series(keys[:300]) != pd.Series(keys[:300]).shift()).sum())
    assert len(ends) == changes and ends[-1] == 300
    assert runs.frame(None).get_column("shop").to_list() == list(dict.fromkeys(keys))
