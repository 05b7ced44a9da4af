"""Find, check and scan a Parquet dataset (a file, a folder, a hive tree). Only footers are read until
:func:`scan_files` builds the lazy query: bad files and columns are reported before any work is done."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.data.column_types import check_columns, check_slice_columns, polars_type, unified_type
from tasks.data.file_entry import FileEntry
from tasks.data.parquet_files import (
    arrow_schema,
    column_chunk_ranges,
    list_parquet_files,
    parse_hive_keys,
    read_file_footers,
    read_footer,
    read_footers_bytes,
)
from tasks.data.partitions import select_partitions
from tasks.data.slicing import CellColumn
from tasks.data.storage import local_path, storage_for
from tasks.errors import InputError


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
    #: features read as text (a model's signature takes strings there); all others are numeric
    text_features: tuple[str, ...] = ()
    #: the slice columns of the finest cross (``--slice``), beyond the partition keys
    cells: tuple[CellColumn, ...] = ()
    #: the column of the rows' weights (``--weight-col``), or None: every row weighs 1
    weight: str | None = None
    #: slicings were declared (perhaps only on partition keys, which ``cells`` leaves out)
    sliced: bool = False

    @property
    def per_cell(self) -> bool:  # slicings or weights: a record per cell (partition × slice values), weighted
        return bool(self.cells or self.weight or self.sliced)

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def columns(self) -> list[str]:
        """The columns a scan must read (file columns and hive keys alike)."""
        cols = [*self.features, self.label, *self.extra_columns, *self.partition_by, *self.cell_sources]
        return list(dict.fromkeys([*cols, *([self.weight] if self.weight else [])]))

    @property
    def cell_sources(self) -> list[str]:
        """The data columns the slice columns read."""
        return list(dict.fromkeys(c.column for c in self.cells))

    @property
    def file_columns(self) -> list[str]:
        """The used columns stored in the files (not hive keys)."""
        return [c for c in self.columns if c not in self.hive_keys]


def content_hashes(dataset: "Dataset", files: list["DataFile"] | tuple["DataFile", ...]) -> dict[str, str]:
    """``{path: hash}`` of each file's footer and the bytes of the column chunks the evaluation reads.

    For ``--verify-cache``: it reads the raw (compressed) bytes and decodes nothing, so it costs one
    read of those bytes, a fraction of a scan (from an object store, many objects' in one batch of
    concurrent requests).
    """
    storage = storage_for(dataset.root)
    columns = dataset.file_columns
    footers = read_footers_bytes(storage, [FileEntry(f.path, f.size, f.identity) for f in files])
    items = []
    for f, footer in zip(files, footers):
        md = read_footer(f.path, footer)
        items.append((f.path, [(f.size - len(footer), len(footer)), *column_chunk_ranges(md, columns)]))
    return dict(zip([f.path for f in files], storage.hash_files(items)))


@dataclass(frozen=True)
class DatasetFiles:
    """A dataset's files as listed and as their footers describe them, before any column is checked.

    What discovery's column checks need, read without knowing which columns are used: the I/O of
    :func:`discover_dataset`, apart from its checks.
    """

    root: str
    files: tuple[DataFile, ...]
    hive_keys: tuple[str, ...]
    ref_schema: pa.Schema
    ref_file: str
    #: ``(first file, schema)`` of each Arrow schema other than the first file's, in file order
    #: (the first file missing a column, or with a column's type, is always the first with its schema)
    variants: tuple[tuple[str, pa.Schema], ...] = ()


def read_dataset_files(
    data: str | os.PathLike[str],
    where: dict[str, list[str]] | None = None,
    date_key: str | None = None,
    window_days: int | None = None,
    reference: "datetime | None" = None,
    stop: threading.Event | None = None,
) -> DatasetFiles:
    """List the Parquet files of ``data`` in the selected partitions and read every footer once.

    Checks that every file is readable Parquet and that all have the same hive keys; raises
    :class:`InputError` naming the file otherwise. A ``stop`` that is set (the flow failed or was
    interrupted while this ran beside it) ends the listing at its next batch of files with
    :class:`tasks.errors.Stopped`.
    """
    root = local_path(os.fspath(data))
    storage = storage_for(root)
    entries = select_partitions(root, list_parquet_files(root, storage), where, date_key, window_days, reference)
    files: list[DataFile] = []
    variants: dict[pa.Schema, str] = {}  # each Arrow schema other than the first file's (no metadata): its first file
    ref: pq.FileMetaData | None = None
    hive_keys: tuple[str, ...] | None = None
    for entry, (md, fingerprint) in zip(entries, read_file_footers(storage, entries, stop)):
        hive = parse_hive_keys(root, entry.path)
        if hive_keys is None:
            hive_keys = tuple(hive)
        elif tuple(hive) != hive_keys:
            raise InputError(
                f"{entry.path}: hive keys {list(hive)} differ from {list(hive_keys)} in {entries[0].path}; "
                "all files of a dataset need the same key=value folders."
            )
        if ref is None:
            ref, ref_schema = md, arrow_schema(entry.path, md)
            stored = md.metadata if md.metadata and b"ARROW:schema" in md.metadata else None
        elif stored is None or md.metadata != stored or not md.schema.equals(ref.schema):
            # converting a footer's schema to Arrow costs 7 µs a file: skipped when its Parquet leaves
            # and pyarrow's stored schema (which fixes the nesting the leaves do not) equal the first file's
            schema = arrow_schema(entry.path, md).remove_metadata()
            if not schema.equals(ref_schema):
                variants.setdefault(schema, entry.path)
        files.append(DataFile(entry.path, md.num_rows, entry.size, fingerprint, hive, entry.identity))
    assert ref is not None and hive_keys is not None
    return DatasetFiles(
        root, tuple(files), hive_keys, ref_schema, files[0].path, tuple((p, s) for s, p in variants.items())
    )


def _column_types(listing: DatasetFiles, roles: dict[str, str]) -> dict[str, dict[pa.DataType, str]]:
    """For each used column: {Arrow type: first file with it}, over the first file and every variant."""
    types: dict[str, dict[pa.DataType, str]] = {}
    for path, schema in [(listing.ref_file, listing.ref_schema), *listing.variants]:
        for name in roles:
            if name in listing.hive_keys:
                continue
            if name not in schema.names:
                if name in listing.ref_schema.names:
                    raise InputError(f"{path}: column {name!r} is missing here but present in {listing.ref_file}.")
                continue
            types.setdefault(name, {}).setdefault(schema.field(name).type, path)
    return types


def _typed_reference(ref_schema: pa.Schema, types: dict[str, dict[pa.DataType, str]]) -> pa.Schema:
    # the first file's types are the reference, except a column it holds as nulls (an empty frame
    # written by pandas): there the type of the files that have values
    for name, seen in types.items():
        typed = [t for t in seen if not pa.types.is_null(t)]
        if typed and name in ref_schema.names and pa.types.is_null(ref_schema.field(name).type):
            ref_schema = ref_schema.set(ref_schema.get_field_index(name), pa.field(name, typed[0]))
    return ref_schema


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
    model_types: dict[str, str] | None = None,
    model_name: str = "",
) -> Dataset:
    """Find the files of ``data`` and check that they form one dataset with the needed columns.

    Checks, from footers only (:func:`read_dataset_files`, then :func:`check_dataset`): every file
    is readable Parquet; every file has the used columns, with types that widen to one (int32 and
    int64, float32 and float64, as pyarrow.dataset does; other columns may come and go); the label,
    feature and partition columns exist; features are numeric (or of the type ``model_types``, the
    signature of the model ``model_name``, names: text where it takes strings); the dataset has
    rows. Raises :class:`InputError` naming the file or column at fault.
    """
    _check_some_features(features, extra_columns)  # before any file is read
    listing = read_dataset_files(data, where, date_key, window_days, reference)
    return check_dataset(listing, label, features, partition_by, extra_columns, model_types, model_name)


def _check_some_features(features: list[str] | tuple[str, ...], extra_columns: list[str] | tuple[str, ...]) -> None:
    if not features and not extra_columns:
        raise InputError("no feature columns given; pass --features A,B,...")


def check_dataset(
    listing: DatasetFiles,
    label: str,
    features: list[str] | tuple[str, ...],
    partition_by: list[str] | tuple[str, ...] | None = None,
    extra_columns: list[str] | tuple[str, ...] = (),
    model_types: dict[str, str] | None = None,
    model_name: str = "",
    cells: tuple[CellColumn, ...] = (),
    weight: str | None = None,
) -> Dataset:
    """The :class:`Dataset` of the files ``listing`` (:func:`read_dataset_files`) describes, once its
    columns pass the checks of :func:`discover_dataset` (and the slice and weight columns theirs);
    raises :class:`InputError` otherwise."""
    _check_some_features(features, extra_columns)
    features, extra_columns = tuple(features), tuple(extra_columns)
    roles = (
        dict.fromkeys((c.column for c in cells), "slice")
        | dict.fromkeys([weight] if weight else [], "weight")
        | dict.fromkeys(partition_by or (), "partition")
        | dict.fromkeys(features, "feature")
        | dict.fromkeys(extra_columns, "score")
        | {label: "label"}
    )
    types = _column_types(listing, roles)
    ref_schema = _typed_reference(listing.ref_schema, types)
    parts = tuple(partition_by) if partition_by else listing.hive_keys
    text_features = check_columns(
        listing.ref_file, ref_schema, listing.hive_keys, label, features, extra_columns, parts, model_types, model_name
    )
    check_slice_columns(listing.ref_file, ref_schema, listing.hive_keys, cells, weight)
    _check_binned_hive_keys(listing, cells)
    sliced = bool(cells)
    cells = tuple(c for c in cells if c.edges or c.column not in parts)  # a partition key is in every record already
    widened = {name: unified_type(name, seen, roles[name]) for name, seen in types.items()}
    if sum(f.num_rows for f in listing.files) == 0:
        raise InputError(f"{listing.root}: the dataset has no rows.")
    sources = [c.column for c in cells] + ([weight] if weight else [])
    used = [
        c for c in dict.fromkeys([*features, label, *extra_columns, *parts, *sources]) if c not in listing.hive_keys
    ]
    return Dataset(
        root=listing.root,
        files=listing.files,
        label=label,
        features=features,
        partition_by=parts,
        hive_keys=listing.hive_keys,
        schema=_schema_description(ref_schema, listing.hive_keys, widened),
        fingerprint=_dataset_fingerprint(listing.root, listing.files, (label, features, parts, cells, weight)),
        extra_columns=extra_columns,
        scan_schema=_scan_schema(ref_schema, widened, used),
        text_features=text_features,
        cells=tuple(cells),
        weight=weight,
        sliced=sliced,
    )


def _check_binned_hive_keys(listing: DatasetFiles, cells: tuple[CellColumn, ...]) -> None:
    """Bins on a hive key need numbers in its folder names."""
    for cell in (c for c in cells if c.edges and c.column in listing.hive_keys):
        for f in listing.files:
            value = f.hive.get(cell.column)
            try:
                float(value) if value is not None else None
            except ValueError:
                raise InputError(
                    f"{f.path}: --slice {cell.name}: hive key {cell.column!r} is {value!r}, not a number; slice it by "
                    f"value instead (--slice {cell.column})."
                ) from None


def _schema_description(
    ref: pa.Schema, hive_keys: tuple[str, ...], widened: dict[str, pl.DataType | None]
) -> dict[str, str]:
    kinds = {n: str(ref.field(n).type) for n in ref.names}
    kinds.update({n: f"{ref.field(n).type} (read as {t})" for n, t in widened.items() if t is not None})
    kinds.update(dict.fromkeys(hive_keys, "string (hive key)"))
    return kinds


def _dataset_fingerprint(root: str, files: tuple[DataFile, ...], columns: tuple) -> str:
    """A digest of the files' relative paths and content fingerprints, and the columns used."""
    storage = storage_for(root)
    fp = hashlib.blake2b(digest_size=16)
    for f, rel in zip(files, storage.relative(root, [f.path for f in files])):
        fp.update(rel.encode())
        fp.update(f.fingerprint.encode())
    fp.update(repr(columns).encode())
    return fp.hexdigest()


def _scan_schema(
    ref: pa.Schema, widened: dict[str, pl.DataType | None], used: list[str]
) -> tuple[tuple[str, pl.DataType], ...]:
    """The types to read the used file columns as, when some widen (else empty: read them as stored)."""
    if not any(t is not None for t in widened.values()):
        return ()
    return tuple((c, widened.get(c) or polars_type(ref.field(c).type)) for c in used)


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
        hive_schema=dict.fromkeys(dataset.hive_keys, pl.String) if dataset.hive_keys else None,
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
