"""Partition numbers of the rows of a batch, as runs of consecutive rows."""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.data.dataset import DataFile, Dataset


class PartitionRuns:
    """Partition numbers of the rows of each batch, as runs of consecutive rows.

    When every partition key is a hive folder, a file's rows are all in one partition: runs follow
    from the files' row counts (from their footers) and the scan's order, and no key is read per
    row. Otherwise the key columns come with each batch and runs are found where they change.
    """

    def __init__(self, dataset: Dataset, files: list[DataFile]) -> None:
        self.keys = list(dataset.partition_by)
        self.by_files = all(k in dataset.hive_keys for k in self.keys)
        self.index: dict[tuple, int] = {}
        self.offset = 0
        if self.by_files:
            file_part = [self._number(tuple(f.hive[k] for k in self.keys)) for f in files]
            self.file_part = np.asarray(file_part, dtype=np.int64)
            self.file_ends = np.cumsum([f.num_rows for f in files], dtype=np.int64)

    def _number(self, key: tuple) -> int:
        return self.index.setdefault(key, len(self.index))

    @property
    def columns(self) -> list[str]:
        """Key columns each batch must carry."""
        return [] if self.by_files else self.keys

    def runs(self, batch: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(run_ends, run_ids)`` of a batch: run r is rows up to ``run_ends[r]``, partition ``run_ids[r]``."""
        n = batch.height
        start, self.offset = self.offset, self.offset + n
        if self.by_files:
            first = int(np.searchsorted(self.file_ends, start, side="right"))
            last = int(np.searchsorted(self.file_ends, start + n - 1, side="right"))
            ends = np.minimum(self.file_ends[first : last + 1], start + n) - start
            return ends, self.file_part[first : last + 1]
        keys = batch.select(self.keys)
        changed = pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(1)) for k in self.keys)
        starts = np.flatnonzero(keys.select(changed.fill_null(True)).to_series().to_numpy())
        ids = [self._number(row) for row in keys[starts].rows()]
        return np.append(starts[1:], n).astype(np.int64), np.asarray(ids, dtype=np.int64)

    def frame(self, schema: pl.Schema | None) -> pl.DataFrame:
        """The key columns of every partition number, in number order."""
        rows = list(self.index)
        if not self.keys:
            return pl.DataFrame({"partition": ["all"] * len(rows)})
        if self.by_files or schema is None:
            return pl.DataFrame(rows, schema=dict.fromkeys(self.keys, pl.String), orient="row")
        return pl.DataFrame(rows, schema={k: schema[k] for k in self.keys}, orient="row")
