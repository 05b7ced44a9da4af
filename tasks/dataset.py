"""Find, check and scan a Parquet dataset: one file, a folder of files, or a hive tree.

Everything here reads only Parquet footers (schemas, row counts) until :func:`scan_files`
builds the lazy query, so bad files and columns are reported before any work is done.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from datetime import datetime
from typing import Callable
from urllib.parse import unquote

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tasks._prefect import as_task
from tasks.errors import InputError


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a dataset, with its hive keys and a fingerprint of its content."""

    path: str
    num_rows: int
    size: int
    fingerprint: str
    hive: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """A checked dataset: its files, the columns an evaluation uses, and how rows are grouped."""

    root: str
    files: tuple[DataFile, ...]
    label: str
    features: tuple[str, ...]
    partition_by: tuple[str, ...]
    hive_keys: tuple[str, ...]
    schema: dict[str, str]
    fingerprint: str
    extra_columns: tuple[str, ...] = ()

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def columns(self) -> list[str]:
        """The columns a scan must read (file columns and hive keys alike)."""
        cols = [*self.features, self.label, *self.extra_columns, *self.partition_by]
        return list(dict.fromkeys(cols))


def _is_parquet(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in {".parquet", ".pq", ".parq"}


def list_parquet_files(path: str | os.PathLike[str]) -> list[Path]:
    """All Parquet files under ``path`` (a file or a folder), sorted; hidden files are skipped."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory; pass a Parquet file or a folder of them.")
    if root.is_file():
        if not _is_parquet(root):
            raise InputError(f"{root}: not a Parquet file (expected a .parquet file or a folder of them).")
        return [root]
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]  # hidden and _temporary folders
        found.extend(
            os.path.join(folder, n) for n in names
            if not n.startswith((".", "_")) and n.lower().endswith((".parquet", ".pq", ".parq"))
        )
    if not found:
        raise InputError(f"{root}: no .parquet files found in this folder.")
    return [Path(f) for f in sorted(found)]


def parse_hive_keys(root: Path, file: Path) -> dict[str, str]:
    """``{key: value}`` from the ``key=value`` folders between ``root`` and ``file``."""
    keys: dict[str, str] = {}
    base, path = str(root), str(file)
    if path.startswith(base.rstrip(os.sep) + os.sep):
        rel = path[len(base.rstrip(os.sep)) + 1 :].split(os.sep)[:-1]
    elif root.is_dir():
        rel = os.path.relpath(file, root).split(os.sep)[:-1]
    else:
        return keys
    for part in rel:
        if "=" in part:
            k, v = part.split("=", 1)
            keys[unquote(k)] = unquote(v)
    return keys


def _read_footer_bytes(path: Path, size: int) -> bytes:
    """The file's Parquet footer with its length and magic (``b''`` when it has none)."""
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 8))
        tail = fh.read(8)
        if len(tail) != 8 or tail[4:] != b"PAR1":
            return b""
        footer_len = int.from_bytes(tail[:4], "little")
        if footer_len > size - 12:
            return b""
        fh.seek(size - 8 - footer_len)
        return fh.read(footer_len) + tail


def _footer_fingerprint(size: int, footer: bytes) -> str:
    # The Parquet footer holds every column chunk's offsets, sizes, row counts and min/max/null
    # statistics: a rewrite with different content changes it, and hashing it (with the file
    # size) costs nothing more than the footer read the checks need anyway, instead of reading
    # the data pages, which would double the I/O.
    return hashlib.blake2b(str(size).encode() + footer, digest_size=16).hexdigest()


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_null(t):
        return "null"
    return "other"


def _read_footer(path: Path, footer: bytes = b"") -> tuple[pq.FileMetaData, pa.Schema]:
    try:
        # parsed from the bytes already read (the leading magic makes them a Parquet "file")
        md = pq.read_metadata(pa.BufferReader(b"PAR1" + footer) if footer else path)
        return md, md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable Parquet file ({reason}); the file may be truncated or corrupt.") from exc


def select_partitions(
    root: Path,
    paths: list[Path],
    where: dict[str, list[str]] | None = None,
    date_key: str | None = None,
    window_days: int | None = None,
    reference: "datetime | None" = None,
) -> list[Path]:
    """Keep the files whose hive keys match ``where`` and whose ``date_key`` falls in the window.

    The window is the ``window_days`` days up to ``reference`` (a scheduled run's start time), so
    each night's run evaluates the newest partitions. Hive values of ``date_key`` are ISO dates.
    """
    from datetime import date, datetime, timedelta, timezone

    if not where and not date_key:
        return paths
    kept = []
    if date_key and window_days:
        ref = (reference or datetime.now(timezone.utc)).date()
        lo, hi = ref - timedelta(days=window_days - 1), ref
    for path in paths:
        hive = parse_hive_keys(root, path)
        for key in [*(where or {}), *([date_key] if date_key else [])]:
            if key not in hive:
                raise InputError(f"{path}: no hive key {key!r} to select partitions by; keys are {sorted(hive)}.")
        if where and any(hive[k] not in set(map(str, v)) for k, v in where.items()):
            continue
        if date_key and window_days:
            try:
                day = date.fromisoformat(hive[date_key][:10])
            except ValueError:
                raise InputError(f"{path}: hive key {date_key}={hive[date_key]!r} is not an ISO date (YYYY-MM-DD).") from None
            if not lo <= day <= hi:
                continue
        kept.append(path)
    if not kept:
        window = f" and {date_key} in [{lo}, {hi}]" if date_key and window_days else ""
        raise InputError(f"{root}: no partition matches the selection {where or {}}{window}.")
    return kept


def _read_one(path: Path) -> tuple[pq.FileMetaData, pa.Schema, int, str]:
    size = os.stat(path).st_size
    footer = _read_footer_bytes(path, size)
    md, schema = _read_footer(path, footer)
    return md, schema, size, _footer_fingerprint(size, footer)


def _read_footers(paths: list[Path]):
    """Footers of the files, in path order (threads do not help: pyarrow's footer parsing holds the GIL)."""
    return map(_read_one, paths)


def discover_dataset(
    data: str | os.PathLike[str],
    label: str,
    features: list[str] | tuple[str, ...],
    partition_by: list[str] | tuple[str, ...] | None = None,
    extra_columns: list[str] | tuple[str, ...] = (),
    where: dict[str, list[str]] | None = None,
    date_key: str | None = None,
    window_days: int | None = None,
    reference: "datetime | None" = None,
) -> Dataset:
    """Find the files of ``data`` and check that they form one dataset with the needed columns.

    Checks, from footers only: every file is readable Parquet; all files agree on the types of the
    columns used; the label, feature and partition columns exist; features are numeric; the
    dataset has rows. Raises :class:`InputError` naming the file or column at fault.
    """
    root = Path(data)
    paths = select_partitions(root, list_parquet_files(root), where, date_key, window_days, reference)
    features = tuple(features)
    if not features and not extra_columns:
        raise InputError("no feature columns given; pass --features A,B,...")
    used = {label, *features, *extra_columns, *(partition_by or ())}
    files: list[DataFile] = []
    ref_schema: pa.Schema | None = None
    ref_file: Path | None = None
    hive_keys: tuple[str, ...] | None = None
    for path, (md, schema, size, fingerprint) in zip(paths, _read_footers(paths)):
        hive = parse_hive_keys(root, path)
        if hive_keys is None:
            hive_keys = tuple(hive)
        elif tuple(hive) != hive_keys:
            raise InputError(
                f"{path}: hive keys {list(hive)} differ from {list(hive_keys)} in {paths[0]}; "
                "all files of a dataset need the same key=value folders."
            )
        if ref_schema is None:
            ref_schema, ref_file = schema, path
        elif not schema.equals(ref_schema):
            for name in used:
                if name in schema.names and name in ref_schema.names and _kind(schema.field(name).type) != _kind(ref_schema.field(name).type):
                    raise InputError(
                        f"{path}: column {name!r} is {schema.field(name).type} but {ref_file} has "
                        f"{ref_schema.field(name).type}; the files' schemas disagree."
                    )
            missing = [c for c in (*features, label, *extra_columns) if c in ref_schema.names and c not in schema.names]
            if missing:
                raise InputError(f"{path}: column {missing[0]!r} is missing here but present in {ref_file}.")
        files.append(DataFile(path=str(path), num_rows=md.num_rows, size=size, fingerprint=fingerprint, hive=hive))
    assert ref_schema is not None and hive_keys is not None and ref_file is not None
    available = set(ref_schema.names) | set(hive_keys)
    for role, cols in (("label", (label,)), ("feature", features), ("score", tuple(extra_columns))):
        for col in cols:
            if col not in available:
                raise InputError(
                    f"{ref_file}: no {role} column {col!r}; columns are {sorted(available)}."
                )
    if label in features:
        raise InputError(f"column {label!r} is both the label and a feature; drop it from --features.")
    for col in (*features, *extra_columns):
        if col in hive_keys:
            raise InputError(f"{col!r} is a hive partition key (text), it cannot be a numeric feature.")
        kind = _kind(ref_schema.field(col).type)
        if kind not in {"int", "float", "bool"}:
            raise InputError(
                f"{ref_file}: feature column {col!r} has type {ref_schema.field(col).type}, "
                "not numeric; cast it to a number or drop it from --features."
            )
    if label not in hive_keys and _kind(ref_schema.field(label).type) not in {"int", "float", "bool", "null"}:
        raise InputError(
            f"{ref_file}: label column {label!r} has type {ref_schema.field(label).type}; "
            "labels must be 0/1 numbers or booleans."
        )
    parts = tuple(partition_by) if partition_by else hive_keys
    for col in parts:
        if col not in available:
            raise InputError(f"{ref_file}: no partition column {col!r}; columns are {sorted(available)}.")
    if sum(f.num_rows for f in files) == 0:
        raise InputError(f"{root}: the dataset has no rows.")
    schema_kinds = {n: str(ref_schema.field(n).type) for n in ref_schema.names}
    schema_kinds.update({k: "string (hive key)" for k in hive_keys})
    fp = hashlib.blake2b(digest_size=16)
    base = str(root if root.is_dir() else root.parent)
    for f in files:
        rel = f.path[len(base) + 1 :] if f.path.startswith(base + os.sep) else os.path.relpath(f.path, base)
        fp.update(rel.encode())
        fp.update(f.fingerprint.encode())
    fp.update(repr((label, features, parts)).encode())
    return Dataset(
        root=str(root),
        files=tuple(files),
        label=label,
        features=features,
        partition_by=parts,
        hive_keys=hive_keys,
        schema=schema_kinds,
        fingerprint=fp.hexdigest(),
        extra_columns=tuple(extra_columns),
    )


def scan_files(dataset: Dataset, files: list[DataFile] | tuple[DataFile, ...] | None = None) -> pl.LazyFrame:
    """A Polars LazyFrame of just the needed columns of ``files`` (default: all), hive keys as text."""
    chosen = dataset.files if files is None else files
    paths = [f.path for f in chosen]
    lf = pl.scan_parquet(
        paths,
        hive_partitioning=bool(dataset.hive_keys),
        hive_schema={k: pl.String for k in dataset.hive_keys} if dataset.hive_keys else None,
        missing_columns="raise",
    )
    return lf.select(dataset.columns)


def files_by_partition(dataset: Dataset) -> dict[tuple[str, ...], list[DataFile]]:
    """The files of each partition, when partitions are hive folders; else one group of all files."""
    by_part: dict[tuple[str, ...], list[DataFile]] = {}
    hive_only = all(k in dataset.hive_keys for k in dataset.partition_by)
    for f in dataset.files:
        key = tuple(f.hive[k] for k in dataset.partition_by) if hive_only else ("*",)
        by_part.setdefault(key, []).append(f)
    return by_part


def group_files(
    dataset: Dataset, target_rows: int, skip: set[tuple[str, ...]] | frozenset[tuple[str, ...]] = frozenset()
) -> list[list[DataFile]]:
    """Split the files into chunks of whole partitions of about ``target_rows`` rows each.

    A partition's files always land in the same chunk, so per-partition figures that do not merge
    (ROC AUC) can be computed where the rows are. Partitions in ``skip`` (already cached) are left out.
    """
    by_part = {k: v for k, v in files_by_partition(dataset).items() if k not in skip}
    chunks: list[list[DataFile]] = []
    current: list[DataFile] = []
    rows = 0
    for part_files in by_part.values():
        n = sum(f.num_rows for f in part_files)
        if current and rows + n > target_rows:
            chunks.append(current)
            current, rows = [], 0
        current.extend(part_files)
        rows += n
    if current:
        chunks.append(current)
    return chunks


def collect_training_data(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix X (float64) and labels y (0/1) of the whole dataset, checked."""
    df = scan_files(dataset).select([*dataset.features, dataset.label]).collect()
    y_series = df.get_column(dataset.label)
    try:
        check_label_values(y_series, dataset.root)
    except InputError:
        _raise_in_file(dataset, lambda part: check_label_values(part.get_column(dataset.label), ""))
        raise
    X = df.select(pl.col(c).cast(pl.Float64) for c in dataset.features).to_numpy()
    bad = ~np.isfinite(X)
    if bad.any():
        col = dataset.features[int(np.argwhere(bad)[0][1])]
        n_bad = int(bad[:, dataset.features.index(col)].sum())
        where = locate_file(dataset, (pl.col(col).is_null() | ~pl.col(col).cast(pl.Float64).is_finite()).fill_null(True))
        raise InputError(
            f"{where}: feature column {col!r} has {n_bad} null or non-finite value(s) (NaN/inf); "
            "drop or impute such rows first."
        )
    y = y_series.cast(pl.Float64).to_numpy().astype(np.int64)
    if np.unique(y).size < 2:
        raise InputError(
            f"{dataset.root}: the training data holds a single class (all labels are {int(y[0])}); "
            "fitting needs both 0 and 1 (or pass --model-uri to evaluate an existing model)."
        )
    return X, y


def locate_file(dataset: Dataset, predicate: pl.Expr) -> str:
    """The first file with a row where ``predicate`` holds (for error messages; slow path only)."""
    for f in dataset.files:
        if scan_files(dataset, [f]).select(predicate.any()).collect().item():
            return f.path
    return dataset.root


def _raise_in_file(dataset: Dataset, check: "Callable[[pl.DataFrame], None]") -> None:
    # re-run a check file by file so the error names the file at fault
    for f in dataset.files:
        try:
            check(scan_files(dataset, [f]).collect())
        except InputError as exc:
            raise InputError(f"{f.path}{exc}") from None


def check_label_values(labels: pl.Series, where: str) -> None:
    """Raise :class:`InputError` unless every label is 0/1 (or a boolean) and not null."""
    name = labels.name
    nulls = labels.null_count()
    if nulls:
        raise InputError(f"{where}: label column {name!r} has {nulls} null value(s); labels must be 0 or 1.")
    if labels.dtype == pl.Boolean:
        return
    if labels.dtype.is_float():
        nonfinite = labels.filter(~labels.is_finite())
        if len(nonfinite):
            raise InputError(f"{where}: label column {name!r} has value {nonfinite[0]!r}; labels must be 0 or 1.")
    bad = labels.filter(~labels.cast(pl.Float64).is_in([0.0, 1.0]))
    if len(bad):
        raise InputError(
            f"{where}: label column {name!r} has value {bad[0]!r}; labels must be 0 or 1 "
            "(map the classes to 0/1 first)."
        )


discover_dataset_task = as_task(discover_dataset, name="discover-dataset")
collect_training_data_task = as_task(collect_training_data, name="collect-training-data")
