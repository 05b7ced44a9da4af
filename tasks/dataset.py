"""Find, check and scan a Parquet dataset: one file, a folder of files, or a hive tree.

Everything here reads only Parquet footers (schemas, row counts) until :func:`scan_files`
builds the lazy query, so bad files and columns are reported before any work is done.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from urllib.parse import unquote

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tasks._prefect import as_task
from tasks.errors import InputError
from tasks.storage import FileEntry, Storage, local_path, storage_for


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a dataset: its hive keys, a fingerprint of its content, its identity.

    ``fingerprint`` hashes the size and the Parquet footer (every column chunk's offsets, sizes and
    statistics): the same bytes give the same fingerprint on any machine. ``identity`` is what the
    storage says about the file (locally: device, inode, size, mtime and ctime in nanoseconds), so
    a rewrite that keeps the size, the footer and the mtime still changes it.
    """

    path: str
    num_rows: int
    size: int
    fingerprint: str
    hive: dict[str, str | None] = field(default_factory=dict)
    identity: str = ""


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
    #: Polars types to read the used file columns as, when files disagree on widths (else empty)
    scan_schema: tuple[tuple[str, pl.DataType], ...] = ()

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def columns(self) -> list[str]:
        """The columns a scan must read (file columns and hive keys alike)."""
        cols = [*self.features, self.label, *self.extra_columns, *self.partition_by]
        return list(dict.fromkeys(cols))

    @property
    def file_columns(self) -> list[str]:
        """The used columns stored in the files (not hive keys)."""
        return [c for c in self.columns if c not in self.hive_keys]


#: The folder name Hive, Spark, pyarrow, pandas and Polars write for a null partition value
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_MAGIC = b"PAR1"


def _has_magic(storage: Storage, entry: FileEntry) -> bool:
    # files without a Parquet suffix (Hive's 000000_0, exporters' part-00000) are Parquet when they
    # start with the magic bytes (one that does not also end with them is truncated: reported by the
    # footer check, not skipped, or its rows would silently go missing); anything else (README,
    # .csv, logs) is clutter
    if entry.size < 4:
        return False
    return storage.read_range(entry.path, 0, 4) == _MAGIC


def list_parquet_files(path: str | os.PathLike[str], storage: Storage | None = None) -> list[FileEntry]:
    """All Parquet files under ``path`` (a file or a folder), sorted; hidden and ``_`` files skipped.

    A file counts as Parquet by its suffix (``.parquet``, ``.pq``, ``.parq``) or, without one, by its
    leading magic bytes (a corrupt or truncated one is an error later); other files are skipped as
    clutter.
    """
    root = local_path(os.fspath(path))
    storage = storage or storage_for(root)
    if not storage.is_dir(root):
        entry = storage.entry(root)
        if not (entry.path.lower().endswith(_PARQUET_SUFFIXES) or _has_magic(storage, entry)):
            raise InputError(f"{root}: not a Parquet file (no Parquet magic bytes); pass a Parquet file or a folder of them.")
        return [entry]
    found = [
        e for e in storage.walk(root)
        if e.path.lower().endswith(_PARQUET_SUFFIXES) or _has_magic(storage, e)
    ]
    if not found:
        raise InputError(f"{root}: no Parquet files found in this folder.")
    return found


def parse_hive_keys(root: str | os.PathLike[str], file: str | os.PathLike[str]) -> dict[str, str | None]:
    """``{key: value}`` from the ``key=value`` folders between ``root`` and ``file``.

    Values are URL-decoded; the null folder (``key=__HIVE_DEFAULT_PARTITION__``) gives ``None``.
    """
    base, path = os.fspath(root).rstrip(os.sep), os.fspath(file)
    if path.startswith(base + os.sep):
        rel = path[len(base) + 1 :].split(os.sep)[:-1]
    elif os.path.isdir(base):
        rel = os.path.relpath(path, base).split(os.sep)[:-1]
    else:
        return {}
    keys: dict[str, str | None] = {}
    for part in rel:
        if "=" in part:
            k, v = part.split("=", 1)
            keys[unquote(k)] = None if v == HIVE_NULL else unquote(v)
    return keys


def _read_footer_bytes(storage: Storage, path: str, size: int) -> bytes:
    """The file's Parquet footer with its length and magic (``b''`` when it has none)."""
    # one read of the last 8 KiB holds most footers whole; a longer one costs a second read
    tail = storage.read_range(path, max(0, size - 8192), 8192)
    if len(tail) < 8 or tail[-4:] != _MAGIC:
        return b""
    footer_len = int.from_bytes(tail[-8:-4], "little")
    if footer_len > size - 12:
        return b""
    if footer_len + 8 <= len(tail):
        return tail[len(tail) - 8 - footer_len :]
    return storage.read_range(path, size - 8 - footer_len, footer_len + 8)


def _footer_fingerprint(size: int, footer: bytes) -> str:
    # The Parquet footer holds every column chunk's offsets, sizes, row counts and min/max/null
    # statistics: a rewrite with different content almost always changes it, and hashing it (with
    # the file size) costs nothing more than the footer read the checks need anyway.
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


def _read_footer(path: str, footer: bytes) -> tuple[pq.FileMetaData, pa.Schema]:
    try:
        if not footer:
            raise OSError("no Parquet footer at the end of the file")
        # parsed from the bytes already read (the leading magic makes them a Parquet "file")
        md = pq.read_metadata(pa.BufferReader(_MAGIC + footer))
        return md, md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable Parquet file ({reason}); the file may be truncated or corrupt.") from exc


def column_chunk_ranges(md: pq.FileMetaData, columns: list[str]) -> list[tuple[int, int]]:
    """``(start, length)`` of the column chunks of ``columns`` in every row group (dictionary page first)."""
    names = md.schema.names
    wanted = [names.index(c) for c in columns if c in names]
    ranges = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in wanted:
            col = rg.column(j)
            start = col.dictionary_page_offset if col.has_dictionary_page and col.dictionary_page_offset else col.data_page_offset
            ranges.append((int(start), int(col.total_compressed_size)))
    return ranges


def content_hashes(dataset: "Dataset", files: list["DataFile"] | tuple["DataFile", ...]) -> dict[str, str]:
    """``{path: hash}`` of each file's footer and the bytes of the column chunks the evaluation reads.

    For ``--verify-cache``: it reads the raw (compressed) bytes and decodes nothing, so it costs one
    read of those bytes, a fraction of a scan.
    """
    storage = storage_for(dataset.root)
    columns = dataset.file_columns
    out = {}
    for f in files:
        footer = _read_footer_bytes(storage, f.path, f.size)
        md, _ = _read_footer(f.path, footer)
        ranges = [(f.size - len(footer), len(footer)), *column_chunk_ranges(md, columns)]
        out[f.path] = storage.hash_ranges(f.path, ranges)
    return out


def select_partitions(
    root: str,
    entries: list[FileEntry],
    where: dict[str, list[str]] | None = None,
    date_key: str | None = None,
    window_days: int | None = None,
    reference: "datetime | None" = None,
) -> list[FileEntry]:
    """Keep the files whose hive keys match ``where`` and whose ``date_key`` falls in the window.

    The window is the ``window_days`` days up to ``reference`` (a scheduled run's start time), so
    each night's run evaluates the newest partitions. Hive values of ``date_key`` are ISO dates.
    """
    from datetime import date, timedelta, timezone

    if not where and not date_key:
        return entries
    kept = []
    if date_key and window_days:
        ref = (reference or datetime.now(timezone.utc)).date()
        lo, hi = ref - timedelta(days=window_days - 1), ref
    for entry in entries:
        hive = parse_hive_keys(root, entry.path)
        for key in [*(where or {}), *([date_key] if date_key else [])]:
            if key not in hive:
                raise InputError(f"{entry.path}: no hive key {key!r} to select partitions by; keys are {sorted(hive)}.")
        if where and any(hive[k] not in set(map(str, v)) for k, v in where.items()):
            continue
        if date_key and window_days:
            try:
                day = date.fromisoformat((hive[date_key] or "")[:10])
            except ValueError:
                raise InputError(f"{entry.path}: hive key {date_key}={hive[date_key]!r} is not an ISO date (YYYY-MM-DD).") from None
            if not lo <= day <= hi:
                continue
        kept.append(entry)
    if not kept:
        window = f" and {date_key} in [{lo}, {hi}]" if date_key and window_days else ""
        raise InputError(f"{root}: no partition matches the selection {where or {}}{window}.")
    return kept


def _read_one(storage: Storage, entry: FileEntry) -> tuple[pq.FileMetaData, pa.Schema, str]:
    footer = _read_footer_bytes(storage, entry.path, entry.size)
    md, schema = _read_footer(entry.path, footer)
    return md, schema, _footer_fingerprint(entry.size, footer)


def _string_like(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _string_like(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _unified_type(name: str, seen: dict[pa.DataType, str], role: str) -> pl.DataType | None:
    """The Polars type that reads every file's ``name`` losslessly, as pyarrow.dataset would widen it.

    ``seen`` maps each distinct Arrow type to the first file that has it. None when all files agree
    (nothing to cast). A column of type null (pandas writes an empty frame's columns so) takes the
    others' type; integers of any width widen to Int64 (Float64 beside floats or uint64), floats to
    Float64; text partition columns (string, large_string, pandas' category) are read as text;
    booleans, decimals and text mixed with anything else are a real conflict.
    """
    typed = {t: f for t, f in seen.items() if not pa.types.is_null(t)}
    if len(typed) < 2:
        # one type beside nulls: read the null files' column as that type (the first file may be one)
        return _polars_type(next(iter(typed))) if typed and len(seen) > 1 else None
    types = list(typed)
    if role == "partition" and all(_string_like(t) for t in types):
        return pl.String
    kinds = {_kind(t) for t in types}
    plain = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types)
    if not plain or not kinds <= {"int", "float"}:
        (t1, f1), (t2, f2) = list(typed.items())[:2]
        raise InputError(
            f"{f2}: {role} column {name!r} is {t2} but {f1} has {t1}; the files' schemas disagree. "
            "Rewrite the files with one type for this column (for example cast it to int64 or float64)."
        )
    if kinds == {"int"} and not any(t == pa.uint64() for t in types):
        return pl.Int64
    return pl.Float64


def _check_columns(
    ref_file: str, ref_schema: pa.Schema, hive_keys: tuple[str, ...], label: str,
    features: tuple[str, ...], extra_columns: tuple[str, ...], parts: tuple[str, ...],
) -> None:
    """The label, feature, score and partition columns exist and have usable types."""
    available = set(ref_schema.names) | set(hive_keys)
    for role, cols in (("label", (label,)), ("feature", features), ("score", extra_columns), ("partition", parts)):
        for col in cols:
            if col not in available:
                raise InputError(f"{ref_file}: no {role} column {col!r}; columns are {sorted(available)}.")
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

    Checks, from footers only: every file is readable Parquet; every file has the used columns,
    with types that widen to one (int32 and int64, float32 and float64, as pyarrow.dataset does;
    other columns may come and go); the label, feature and partition columns exist; features are
    numeric; the dataset has rows. Raises :class:`InputError` naming the file or column at fault.
    """
    root = local_path(os.fspath(data))
    storage = storage_for(root)
    entries = select_partitions(root, list_parquet_files(root, storage), where, date_key, window_days, reference)
    features, extra_columns = tuple(features), tuple(extra_columns)
    if not features and not extra_columns:
        raise InputError("no feature columns given; pass --features A,B,...")
    roles = (
        {c: "partition" for c in partition_by or ()}
        | {c: "feature" for c in features} | {c: "score" for c in extra_columns} | {label: "label"}
    )
    files: list[DataFile] = []
    ref_schema: pa.Schema | None = None
    ref_file = ""
    hive_keys: tuple[str, ...] | None = None
    types: dict[str, dict[pa.DataType, str]] = {}
    for entry in entries:
        md, schema, fingerprint = _read_one(storage, entry)
        hive = parse_hive_keys(root, entry.path)
        if hive_keys is None:
            hive_keys = tuple(hive)
        elif tuple(hive) != hive_keys:
            raise InputError(
                f"{entry.path}: hive keys {list(hive)} differ from {list(hive_keys)} in {entries[0].path}; "
                "all files of a dataset need the same key=value folders."
            )
        if ref_schema is None:
            ref_schema, ref_file = schema, entry.path
        if ref_schema is schema or not schema.equals(ref_schema):
            for name in roles:
                if name in hive:
                    continue
                if name not in schema.names:
                    if name in ref_schema.names:
                        raise InputError(f"{entry.path}: column {name!r} is missing here but present in {ref_file}.")
                    continue
                types.setdefault(name, {}).setdefault(schema.field(name).type, entry.path)
        # a schema equal to the first file's has the same types: no per-column work (the common case)
        files.append(DataFile(entry.path, md.num_rows, entry.size, fingerprint, hive, entry.identity))
    assert ref_schema is not None and hive_keys is not None
    parts = tuple(partition_by) if partition_by else hive_keys
    # the first file's types are the reference, except a column it holds as nulls (an empty frame
    # written by pandas): there the type of the files that have values
    for name, seen in types.items():
        typed = [t for t in seen if not pa.types.is_null(t)]
        if typed and name in ref_schema.names and pa.types.is_null(ref_schema.field(name).type):
            ref_schema = ref_schema.set(ref_schema.get_field_index(name), pa.field(name, typed[0]))
    _check_columns(ref_file, ref_schema, hive_keys, label, features, extra_columns, parts)
    widened = {name: _unified_type(name, seen, roles[name]) for name, seen in types.items()}
    if sum(f.num_rows for f in files) == 0:
        raise InputError(f"{root}: the dataset has no rows.")
    schema_kinds = {n: str(ref_schema.field(n).type) for n in ref_schema.names}
    schema_kinds.update({n: f"{ref_schema.field(n).type} (read as {t})" for n, t in widened.items() if t is not None})
    schema_kinds.update({k: "string (hive key)" for k in hive_keys})
    fp = hashlib.blake2b(digest_size=16)
    for f in files:
        fp.update(storage.relative(root, f.path).encode())
        fp.update(f.fingerprint.encode())
    fp.update(repr((label, features, parts)).encode())
    scan_schema: tuple[tuple[str, pl.DataType], ...] = ()
    if any(t is not None for t in widened.values()):
        used = [c for c in dict.fromkeys([*features, label, *extra_columns, *parts]) if c not in hive_keys]
        scan_schema = tuple((c, widened.get(c) or _polars_type(ref_schema.field(c).type)) for c in used)
    return Dataset(
        root=root,
        files=tuple(files),
        label=label,
        features=features,
        partition_by=parts,
        hive_keys=hive_keys,
        schema=schema_kinds,
        fingerprint=fp.hexdigest(),
        extra_columns=extra_columns,
        scan_schema=scan_schema,
    )


def _polars_type(t: pa.DataType) -> pl.DataType:
    return pl.from_arrow(pa.schema([pa.field("c", t)]).empty_table()).schema["c"]


def scan_files(dataset: Dataset, files: list[DataFile] | tuple[DataFile, ...] | None = None) -> pl.LazyFrame:
    """A Polars LazyFrame of just the needed columns of ``files`` (default: all), hive keys as text.

    Columns the evaluation does not use may differ between files (``extra_columns="ignore"``);
    used columns whose widths differ are read as their widened type (``Dataset.scan_schema``).
    """
    chosen = dataset.files if files is None else files
    paths = [f.path for f in chosen]
    widen = {}
    if dataset.scan_schema:
        widen = {
            "schema": dict(dataset.scan_schema),
            "cast_options": pl.ScanCastOptions(
                integer_cast=["upcast", "allow-float"], float_cast="upcast", categorical_to_string="allow"
            ),
        }
    lf = pl.scan_parquet(
        paths,
        hive_partitioning=bool(dataset.hive_keys),
        hive_schema={k: pl.String for k in dataset.hive_keys} if dataset.hive_keys else None,
        missing_columns="raise",
        extra_columns="ignore",
        storage_options=storage_for(dataset.root).storage_options,
        **widen,
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
