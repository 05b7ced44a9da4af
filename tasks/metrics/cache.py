"""A cache of per-partition results, so a nightly run reads only what is new.

Each partition's record (its sufficient statistics and ROC AUC) and its score histogram are
stored under a key made of:

- the scorer's identity (:attr:`tasks.models.scoring.Scorer.identity`): a linear model's coefficients; for
  another loaded model its registry name and version (an alias resolved), else its source run and
  URI; for another model fitted in the run its pickle; or the stored score column and its kind;
- the partition's files: for each, its path relative to the dataset, its size and Parquet footer
  (every column chunk's offsets and statistics) and its identity on the storage (locally: device,
  inode, size, mtime and ctime in nanoseconds; see :class:`tasks.data.storage.LocalStorage`), so a file
  rewritten in place, replaced by a rename, added or removed gives the partition a new key;
- the label and feature columns, the partition columns, whether the per-partition AUC is exact,
  :data:`tasks.metrics.reduce.METRIC_VERSION` and a hash of the metric code's source files.

What it cannot see without ``--verify-cache``: a file whose bytes changed while every one of those
attributes stayed the same (possible only by resetting the clock or copying a file system image).
``--verify-cache`` hashes the bytes of every cached file's footer and used column chunks (xxh3,
no decoding) and recomputes any partition whose bytes differ from what they were when it was cached
(or that was cached without a hash).

The store is a folder (``BCE_EVAL_CACHE``, default ``.bce-eval/cache`` in the repo): each chunk's
records and histograms in one pair of Parquet files, written atomically (temporary file, then
rename), and one small entry per partition naming its pair, written after it. Concurrent runs and a
killed process never leave an entry that points at a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.data.dataset import Dataset, content_hashes, files_by_partition
from tasks.data.storage import storage_for
from tasks.errors import InputError
from tasks.home import CODE_ROOT, project_home
from tasks.metrics.reduce import METRIC_VERSION
from tasks.models.scoring import Scorer


def cache_dir() -> Path:
    """Where cached partition results live."""
    return Path(os.environ.get("BCE_EVAL_CACHE", project_home() / ".bce-eval" / "cache"))


def results_dir() -> Path:
    """Where each evaluation's results are saved before logging (beside the cache folder)."""
    return cache_dir().parent / "results"


def check_cache_dir(use_cache: bool = True) -> None:
    """Create the cache folder (when ``use_cache``) and the results folder, or raise
    :class:`InputError` naming the setting when one cannot be a folder: a file there, a parent that
    is a file, or a folder this process cannot write.

    Checked before the pass, so a bad setting stops the run at once instead of after scoring.
    """
    for folder in ((cache_dir(),) if use_cache else ()) + (results_dir(),):
        _check_folder(folder)


def _check_folder(folder: Path) -> None:
    setting = (
        f"BCE_EVAL_CACHE={os.environ['BCE_EVAL_CACHE']}"
        if os.environ.get("BCE_EVAL_CACHE")
        else f"the cache folder {folder}"
    )
    remedy = "point BCE_EVAL_CACHE at a folder bce-eval may write (or unset it), or pass --no-cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{setting}: {folder} is a file or lies under one, not a folder; {remedy}.") from None
    except OSError as exc:
        raise InputError(f"{setting}: cannot create {folder} ({exc.strerror}); {remedy}.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{setting}: {folder} is not writable by this user; {remedy}.")


#: The modules whose code computes the cached figures: any edit to them invalidates the cache
_METRIC_MODULES = (
    "tasks.metrics.loss",
    "tasks.metrics.kernels",
    "tasks.metrics.lanes",
    "tasks.metrics.reduce",
    "tasks.metrics.runs",
    "tasks.metrics.cells",
    "tasks.metrics.cell_kernel",
    "tasks.data.slicing",
    "tasks.metrics.auc",
    "tasks.metrics.schema",
    # what the schema is made of: the calibration sums a record holds, the parts, the figures it lists
    "tasks.metrics.calibration",
    "tasks.metrics.late_labels",
    "tasks.metrics.formulas",
    "tasks.metrics.decisions",
    "tasks.metrics.decision_kernel",
    "tasks.metrics.bad_input",  # which rows are refused: a record exists only when none is
    "tasks.data.dataset",
    "tasks.data.column_types",
    "tasks.models.loading",
    "tasks.models.scoring",
    "tasks.models.flavors",
)


def metric_code_identity(sources: tuple[Path, ...] | None = None) -> str:
    """:data:`METRIC_VERSION` and a hash of the metric code, so an edit nobody versioned still recomputes."""
    h = hashlib.blake2b(METRIC_VERSION.encode(), digest_size=8)
    for path in sources or tuple(CODE_ROOT / (name.replace(".", "/") + ".py") for name in _METRIC_MODULES):
        h.update(path.read_bytes())
    return h.hexdigest()


def partition_keys(dataset: Dataset, scorer: Scorer, exact_auc: bool) -> dict[tuple[str | None, ...], str]:
    """The cache key of every partition (hive partitions only; otherwise one key for the data)."""
    storage = storage_for(dataset.root)
    # records per cell, weighted: other records than a plain run's. Not the slice columns themselves:
    # records cut by more columns roll up exactly to fewer (load_cached keeps those that hold them all)
    cells = f"|cells|{dataset.weight}" if dataset.per_cell else ""
    base = (
        f"{scorer.identity}|{dataset.label}|{dataset.features}|{dataset.partition_by}|"
        f"{exact_auc}|{metric_code_identity()}{cells}"
    )
    out = {}
    for part, files in files_by_partition(dataset).items():
        h = hashlib.blake2b(base.encode(), digest_size=20)
        h.update(repr(part).encode())
        ordered = sorted(files, key=lambda f: f.path)
        for f, rel in zip(ordered, storage.relative(dataset.root, [f.path for f in ordered])):
            h.update(f"{rel}:{f.fingerprint}:{f.identity}\n".encode())
        out[part] = h.hexdigest()
    return out


def partition_content_hashes(
    dataset: Dataset, parts: Iterable[tuple[str | None, ...]]
) -> dict[tuple[str | None, ...], str]:
    """A hash of the bytes each partition's files hold in the columns the evaluation reads."""
    by_part = files_by_partition(dataset)
    chosen = {part: sorted(by_part[part], key=lambda f: f.path) for part in parts}
    hashes = content_hashes(
        dataset, [f for files in chosen.values() for f in files]
    )  # all at once: one batch from a store
    out = {}
    for part, files in chosen.items():
        h = hashlib.blake2b(digest_size=_HASH_LENGTH // 2)
        for f in files:
            h.update(f"{f.path}:{hashes[f.path]}\n".encode())
        out[part] = h.hexdigest()
    return out


_CHUNK_NAME_LENGTH = 32
_HASH_LENGTH = 32


def _entry(key: str) -> Path:
    return cache_dir() / key[:2] / f"{key}.entry"


def _chunk_file(name: str, kind: str) -> Path:
    return cache_dir() / "chunks" / f"{name}.{kind}.parquet"


def _read_entry(key: str) -> tuple[str, str | None] | None:
    """``(chunk name, content hash or None)`` of an entry; None when absent or torn by a crash."""
    try:
        text = _entry(key).read_text(encoding="utf-8")
    except OSError:
        return None
    chunk, _, digest = text.partition(":")
    if len(chunk) != _CHUNK_NAME_LENGTH or (digest and len(digest) != _HASH_LENGTH):
        return None
    return chunk, digest or None


def load_cached(
    keys: dict[tuple[str | None, ...], str],
    verify: dict[tuple[str | None, ...], str] | None = None,
    columns: tuple[str, ...] = (),
) -> dict[tuple[str | None, ...], tuple[pl.DataFrame, pl.DataFrame]]:
    """The cached (record, histogram) of each partition whose entry and chunk files are present.

    With ``verify`` (each partition's content hash now), a partition is returned only if its entry
    was stored with the same hash: an entry cached without one, or from other bytes, is recomputed.
    ``columns``: the slice columns this run needs; an entry cut by other columns is recomputed, one cut
    by more is kept (its cells roll up exactly).
    """
    where: dict[str, list[tuple[tuple[str | None, ...], str]]] = {}
    for part, key in keys.items():
        entry = _read_entry(key)
        if entry is None:
            continue
        chunk, digest = entry
        if verify is not None and (digest is None or digest != verify.get(part)):
            continue
        where.setdefault(chunk, []).append((part, key))
    found = {}
    for chunk, wanted in where.items():
        try:
            recs = pl.read_parquet(_chunk_file(chunk, "record"))
            hists = pl.read_parquet(_chunk_file(chunk, "hist"))
        except (OSError, pl.exceptions.PolarsError):
            continue  # an unreadable entry is recomputed
        by_rec = recs.partition_by("__key", as_dict=True, include_key=False)
        by_hist = hists.partition_by("__key", as_dict=True, include_key=False) if hists.height else {}
        empty = hists.head(0).drop("__key")
        for part, key in wanted:
            rec = by_rec.get((key,))
            if rec is not None and all(c in rec.columns for c in columns):
                found[part] = (rec, by_hist.get((key,), empty))
    return found


def _keyed_cells(
    records: pl.DataFrame, histogram: pl.DataFrame, cols: list[str], keys: dict[tuple[str | None, ...], str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-cell records and their histogram rows with each partition's key; each row's ``__cell`` renumbered to
    its record's row among that partition's records (what a cached partition's pair reads back)."""
    key_of = pl.DataFrame([(*part, key) for part, key in keys.items()], schema=[*cols, "__key"], orient="row")
    records = records.with_row_index("__row").join(
        key_of, on=cols, how="inner", nulls_equal=True, maintain_order="left"
    )
    records = records.with_columns(pl.int_range(pl.len()).over("__key").alias("__local"))
    rows = records.get_column("__row").to_numpy()
    rows = rows.astype(np.int64)
    local = np.full(int(rows.max(initial=-1)) + 1, -1, np.int64)
    local[rows] = records.get_column("__local").to_numpy()
    key_row = np.full(len(local), -1, np.int64)
    key_row[rows] = np.arange(len(rows))
    histogram = histogram.filter(pl.Series(local[histogram.get_column("__cell").to_numpy()] >= 0))
    cell = histogram.get_column("__cell").to_numpy()
    histogram = histogram.with_columns(
        pl.Series("__cell", local[cell].astype(np.int32)),
        records.get_column("__key").gather(key_row[cell]).alias("__key"),
    )
    return records.drop("__row", "__local"), histogram


def _atomic_write(write: Callable[[str], None], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def store_records(
    dataset: Dataset,
    keys: dict[tuple[str | None, ...], str],
    records: pl.DataFrame,
    histogram: pl.DataFrame,
    hashes: dict[tuple[str | None, ...], str] | None = None,
) -> int:
    """Store a chunk's computed partitions: two files for the chunk, one small entry per partition.

    The chunk's records and histograms go to one pair of Parquet files (thousands of partitions
    cost two writes, not thousands); each partition's entry names that pair and is written last,
    so an entry that exists always points at whole files. ``hashes`` (from ``--verify-cache``)
    are kept in the entries, for later verified runs to compare. Returns how many were stored.
    """
    cols = list(dataset.partition_by)
    by_cell = "__cell" in histogram.columns  # a sliced or weighted pass: bins name their record, not its keys
    if not cols or not all(k in dataset.hive_keys for k in cols):
        if len(keys) != 1:
            return 0
        (key,) = keys.values()
        records, histogram = (
            records.with_columns(pl.lit(key).alias("__key")),
            histogram.with_columns(pl.lit(key).alias("__key")),
        )
    elif by_cell:
        records, histogram = _keyed_cells(records, histogram, cols, keys)
    else:
        key_of = pl.DataFrame([(*part, key) for part, key in keys.items()], schema=[*cols, "__key"], orient="row")
        # nulls_equal: a null hive partition (__HIVE_DEFAULT_PARTITION__) is a partition too
        records = records.join(key_of, on=cols, how="inner", nulls_equal=True)
        histogram = histogram.join(key_of, on=cols, how="inner", nulls_equal=True)
    stored = records.get_column("__key").unique().to_list()
    if not stored:
        return 0
    chunk = hashlib.blake2b("|".join(sorted(stored)).encode(), digest_size=_CHUNK_NAME_LENGTH // 2).hexdigest()
    _atomic_write(histogram.write_parquet, _chunk_file(chunk, "hist"))
    _atomic_write(records.write_parquet, _chunk_file(chunk, "record"))
    digest_of = {key: (hashes or {}).get(part) for part, key in keys.items()}
    folders: set[Path] = set()
    for key in stored:  # written last: an entry's presence means its chunk files are whole
        path = _entry(key)
        if path.parent not in folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            folders.add(path.parent)
        # no rename needed: a torn entry names no chunk (names have a fixed length) and is recomputed
        digest = digest_of.get(key)
        path.write_text(f"{chunk}:{digest}" if digest else chunk, encoding="utf-8")
    return len(stored)


def evaluation_key(dataset: Dataset, scorer: Scorer, settings: dict[str, Any]) -> str:
    """What makes two evaluations "the same": data content, model, and the settings that change results."""
    ignore = {"run_name", "experiment", "full", "cache", "verify_cache", "dask", "dask_workers", "chunk_rows"}
    relevant = {k: v for k, v in sorted(settings.items()) if k not in ignore}
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{dataset.fingerprint}|{scorer.identity}|{relevant!r}|{METRIC_VERSION}".encode())
    return h.hexdigest()


def save_results(key: str, table: pl.DataFrame, overall: dict[str, Any]) -> str:
    """Keep the computed results on disk before logging, so a tracking outage loses nothing."""
    import json

    folder = results_dir()
    path = folder / f"{key}.json"
    folder.mkdir(parents=True, exist_ok=True)
    if _plain_json(table):
        rows = table.write_json()  # 0.1 s less than dumps of to_dicts for 10,000 partitions; NaN as null
    else:
        rows = json.dumps(table.to_dicts(), default=str)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(f'{{"overall": {json.dumps(overall, default=str)}, "table": {rows}}}')
    os.replace(tmp, path)
    return str(path)


def _plain_json(table: pl.DataFrame) -> bool:
    """Whether Polars writes ``table`` as JSON with the values json.dumps would write (NaN aside).

    Only for text, booleans, integers and float64 without infinities: Polars writes an infinity as
    null, a float32 with its own shortest digits, dates and durations in its own formats, and
    panics on binary columns (a partition key read as bytes).
    """
    if not all(t in (pl.String, pl.Boolean, pl.Float64, pl.Null) or t.is_integer() for t in table.dtypes):
        return False
    infinite = table.select(pl.col(pl.Float64).is_infinite().any())
    return infinite.width == 0 or not any(infinite.row(0))
