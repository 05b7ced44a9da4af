"""Parquet files as stored: which files are Parquet, their hive keys, footers and fingerprints.

Reads bytes only through a :class:`tasks.data.storage.Storage` (a footer, a file's magic), never data pages.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.data.file_entry import FileEntry
from tasks.data.storage import Storage, local_path, storage_for
from tasks.errors import InputError, Stopped

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
            raise InputError(
                f"{root}: not a Parquet file (no Parquet magic bytes); pass a Parquet file or a folder of them."
            )
        return [entry]
    found = [e for e in storage.walk(root) if e.path.lower().endswith(_PARQUET_SUFFIXES) or _has_magic(storage, e)]
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


#: bytes read from the end of each file: most footers fit whole; a longer one costs a second read
TAIL_BYTES = 8192
#: files whose last bytes are read at once (8 MiB of them): 100,000 files' would be 800 MiB
TAIL_BATCH = 1024


def _footer_in_tail(storage: Storage, path: str, size: int, tail: bytes) -> bytes:
    """The footer ending ``tail`` (the file's last bytes), read whole when it is longer than them."""
    if len(tail) < 8 or tail[-4:] != _MAGIC:
        return b""
    footer_len = int.from_bytes(tail[-8:-4], "little")
    if footer_len > size - 12:
        return b""
    if footer_len + 8 <= len(tail):
        return tail[len(tail) - 8 - footer_len :]
    return storage.read_range(path, size - 8 - footer_len, footer_len + 8)


def footer_fingerprint(size: int, footer: bytes) -> str:
    # The Parquet footer holds every column chunk's offsets, sizes, row counts and min/max/null
    # statistics: a rewrite with different content almost always changes it, and hashing it (with
    # the file size) costs nothing more than the footer read the checks need anyway.
    return hashlib.blake2b(str(size).encode() + footer, digest_size=16).hexdigest()


def read_footer(path: str, footer: bytes) -> pq.FileMetaData:
    """The metadata of the footer ``footer`` (as :func:`read_footers_bytes` returns it) of the file ``path``."""
    try:
        if not footer:
            raise OSError("no Parquet footer at the end of the file")
        # parsed from the bytes already read (the leading magic makes them a Parquet "file"); not
        # with pyarrow's private parser of a serialized FileMetaData: faster, but a corrupt footer
        # aborts the process
        return pq.read_metadata(pa.BufferReader(_MAGIC + footer))
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # a corrupt column name is not UTF-8
        raise _unreadable(path, exc) from exc


def arrow_schema(path: str, md: pq.FileMetaData) -> pa.Schema:
    """The Arrow schema of a file's metadata (Parquet types and pyarrow's stored schema, as readers see them)."""
    try:
        return md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: str, exc: Exception) -> InputError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"{path}: not a readable Parquet file ({reason}); the file may be truncated or corrupt.")


def check_stop(stop: threading.Event | None, where: str) -> None:
    """Raise :class:`Stopped` when ``stop`` is set: the caller no longer needs the listing of ``where``."""
    if stop is not None and stop.is_set():
        raise Stopped(f"stopped at {where}: the flow ended before it needed this listing")


def read_footers_bytes(storage: Storage, entries: list[FileEntry], stop: threading.Event | None = None) -> list[bytes]:
    """Each file's Parquet footer with its length and magic (``b''`` when it has none), in order;
    the files' last bytes read at once (:meth:`Storage.read_tails`), :data:`TAIL_BATCH` files at a
    time, with ``stop`` (:func:`check_stop`) looked at before each."""
    footers = []
    for at in range(0, len(entries), TAIL_BATCH):
        check_stop(stop, entries[at].path)
        batch = entries[at : at + TAIL_BATCH]
        tails = storage.read_tails(batch, TAIL_BYTES)
        footers += [
            _footer_in_tail(storage, entry.path, entry.size, tail) for entry, tail in zip(batch, tails)
        ]  # a copy: the tail goes
    return footers


def read_file_footers(
    storage: Storage, entries: list[FileEntry], stop: threading.Event | None = None
) -> Iterator[tuple[pq.FileMetaData, str]]:
    """Each file's footer metadata and its fingerprint (see :func:`footer_fingerprint`), in order;
    ``stop`` is looked at before each :data:`TAIL_BATCH` files are read and parsed."""
    for i, (entry, footer) in enumerate(zip(entries, read_footers_bytes(storage, entries, stop))):
        if i % TAIL_BATCH == 0:
            check_stop(stop, entry.path)
        yield read_footer(entry.path, footer), footer_fingerprint(entry.size, footer)


def column_chunk_ranges(md: pq.FileMetaData, columns: list[str]) -> list[tuple[int, int]]:
    """``(start, length)`` of the column chunks of ``columns`` in every row group (dictionary page first)."""
    names = md.schema.names
    wanted = [names.index(c) for c in columns if c in names]
    ranges = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in wanted:
            col = rg.column(j)
            start = (
                col.dictionary_page_offset
                if col.has_dictionary_page and col.dictionary_page_offset
                else col.data_page_offset
            )
            ranges.append((int(start), int(col.total_compressed_size)))
    return ranges
