"""A cache of per-partition results, so a nightly run reads only what is new.

Each partition's record (its sufficient statistics and exact AUC) and its score histogram are
stored under a key made of:

- the model's identity: a hash of its fitted parameters (coefficients, or the pickled estimator),
  or the stored score column and its kind;
- the partition's content: its hive values and the fingerprints of its files (size + Parquet
  footer, which holds every column chunk's offsets and statistics, so a rewritten file with the
  same name gets a new key);
- the label and feature columns, whether AUC is computed, and :data:`tasks.reduce.METRIC_VERSION`.

The store is a folder of small Parquet files (``BCE_EVAL_CACHE``, default ``.bce-eval/cache`` in
the repo). Entries are written atomically (temporary file, then rename), so concurrent runs and a
killed process never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks._prefect import as_task
from tasks.dataset import Dataset, files_by_partition
from tasks.model import Scorer
from tasks.reduce import METRIC_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where cached partition results live."""
    return Path(os.environ.get("BCE_EVAL_CACHE", REPO_ROOT / ".bce-eval" / "cache"))


def scorer_identity(scorer: Scorer) -> str:
    """A hash that changes whenever the scores could change."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{scorer.kind}|{scorer.features}|{scorer.column}".encode())
    if scorer.model is not None:
        model = scorer.model
        coef = getattr(model, "coef_", None)
        if coef is not None and getattr(model, "intercept_", None) is not None:
            h.update(type(model).__name__.encode())
            h.update(np.ascontiguousarray(coef, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(model.intercept_, dtype=np.float64).tobytes())
        else:
            h.update(pickle.dumps(model, protocol=5))
    elif scorer.expression is not None:
        h.update(str(scorer.expression).encode())  # the linear expression spells out every weight
    return h.hexdigest()


def partition_keys(dataset: Dataset, scorer: Scorer, with_auc: bool) -> dict[tuple[str, ...], str]:
    """The cache key of every partition (hive partitions only; otherwise one key for the data)."""
    base = f"{scorer_identity(scorer)}|{dataset.label}|{dataset.features}|{dataset.partition_by}|{with_auc}|{METRIC_VERSION}"
    out = {}
    for part, files in files_by_partition(dataset).items():
        h = hashlib.blake2b(base.encode(), digest_size=20)
        h.update(repr(part).encode())
        for f in sorted(files, key=lambda f: f.path):
            h.update(f"{Path(f.path).name}:{f.fingerprint}".encode())
        out[part] = h.hexdigest()
    return out


def _path(key: str, kind: str) -> Path:
    return cache_dir() / key[:2] / f"{key}.{kind}.parquet"


def load_cached(keys: dict[tuple[str, ...], str]) -> dict[tuple[str, ...], tuple[pl.DataFrame, pl.DataFrame]]:
    """The cached (record, histogram) of each partition that has both."""
    present = {part: key for part, key in keys.items() if _path(key, "record").exists() and _path(key, "hist").exists()}
    if not present:
        return {}
    try:
        # one parallel read of all entries; each file remembers which partition it belongs to
        recs = pl.read_parquet([_path(k, "record") for k in present.values()], include_file_paths="__file")
        hists = pl.read_parquet([_path(k, "hist") for k in present.values()], include_file_paths="__file")
    except (OSError, pl.exceptions.PolarsError):
        return _load_one_by_one(present)
    by_rec = recs.partition_by("__file", as_dict=True, include_key=False)
    by_hist = hists.partition_by("__file", as_dict=True, include_key=False) if hists.height else {}
    empty = hists.head(0).drop("__file")
    found = {}
    for part, key in present.items():
        rec = by_rec.get((str(_path(key, "record")),))
        if rec is not None:
            found[part] = (rec, by_hist.get((str(_path(key, "hist")),), empty))
    return found


def _load_one_by_one(present: dict[tuple[str, ...], str]) -> dict[tuple[str, ...], tuple[pl.DataFrame, pl.DataFrame]]:
    found = {}
    for part, key in present.items():
        try:
            found[part] = (pl.read_parquet(_path(key, "record")), pl.read_parquet(_path(key, "hist")))
        except (OSError, pl.exceptions.PolarsError):
            continue  # an unreadable entry is recomputed
    return found


def _atomic_write(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def store_records(
    dataset: Dataset, keys: dict[tuple[str, ...], str], records: pl.DataFrame, histogram: pl.DataFrame
) -> int:
    """Store each computed partition's record and histogram; returns how many were stored."""
    cols = list(dataset.partition_by)
    stored = 0
    if not cols or not all(k in dataset.hive_keys for k in cols):
        if len(keys) == 1:
            (key,) = keys.values()
            _atomic_write(histogram, _path(key, "hist"))
            _atomic_write(records, _path(key, "record"))
            return 1
        return 0
    for part, rec in records.group_by(cols, maintain_order=True):
        part = tuple(str(v) for v in part)
        key = keys.get(part)
        if key is None:
            continue
        hist = histogram.filter(pl.all_horizontal(pl.col(c) == v for c, v in zip(cols, part))) if histogram.height else histogram
        _atomic_write(hist, _path(key, "hist"))
        _atomic_write(rec, _path(key, "record"))  # written last: its presence means the entry is whole
        stored += 1
    return stored


load_cached_task = as_task(load_cached, name="load-cached-partitions")
store_records_task = as_task(store_records, name="cache-partitions")


def evaluation_key(dataset: Dataset, scorer: Scorer, settings: dict[str, Any]) -> str:
    """What makes two evaluations "the same": data content, model, and the settings that change results."""
    ignore = {"run_name", "experiment", "full", "cache", "dask", "dask_workers", "chunk_rows", "top_partitions"}
    relevant = {k: v for k, v in sorted(settings.items()) if k not in ignore}
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{dataset.fingerprint}|{scorer_identity(scorer)}|{relevant!r}|{METRIC_VERSION}".encode())
    return h.hexdigest()


def save_results(key: str, table: pl.DataFrame, overall: dict[str, Any]) -> str:
    """Keep the computed results on disk before logging, so a tracking outage loses nothing."""
    import json

    folder = cache_dir().parent / "results"
    path = folder / f"{key}.json"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"overall": overall, "table": table.to_dicts()}
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, default=str)
    os.replace(tmp, path)
    return str(path)


save_results_task = as_task(save_results, name="save-results-locally")
