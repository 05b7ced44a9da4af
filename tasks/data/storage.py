"""Where a dataset's files live: one small interface per storage backend (the data seam).

Discovery, fingerprints and the cache reach the bytes of a dataset only through a
:class:`Storage`: list the files under a root with their identity, read a byte range (a footer, a
file's magic), hash byte ranges (``--verify-cache``), and tell Polars how to open them. The local
file system (:class:`LocalStorage`, here) and object stores
(:class:`tasks.data.object_storage.ObjectStorage`: ``s3://`` and the other schemes fsspec and Polars
both read) implement the same methods; :func:`storage_for` picks one.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from typing import Protocol

from tasks.data.file_entry import FileEntry, is_hidden
from tasks.data.object_storage import OBJECT_SCHEMES, ObjectStorage
from tasks.errors import InputError


class Storage(Protocol):
    """What the evaluation needs of a place that holds Parquet files."""

    #: passed to ``pl.scan_parquet(storage_options=...)`` (None for local files)
    storage_options: dict[str, str] | None

    def is_dir(self, path: str) -> bool:
        """True for a folder (or a prefix holding objects)."""

    def entry(self, path: str) -> FileEntry:
        """One file's entry; :class:`InputError` when there is no such file or folder."""

    def walk(self, root: str) -> list[FileEntry]:
        """Every visible file under ``root``, sorted by path (hidden and ``_`` names skipped)."""

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end of the file)."""

    def read_tails(self, entries: list[FileEntry], length: int) -> list[bytes]:
        """The last ``length`` bytes of each file (all of a shorter one), in order: the footers of a
        dataset, read at once (an object store's requests run concurrently, not one after another)."""

    def hash_files(self, items: list[tuple[str, list[tuple[int, int]]]]) -> list[str]:
        """For each ``(path, ranges)``: a fast non-cryptographic hash (xxh3-128) of the bytes of
        its ``(start, length)`` ranges, each preceded by its length."""

    def relative(self, root: str, paths: list[str]) -> list[str]:
        """Each of ``paths`` relative to ``root`` ('' parts are dropped)."""


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # as os.walk: an entry that cannot be looked at is not a folder
        return False


class LocalStorage:
    """Files on a local (or mounted) file system.

    A file's identity is its device, inode, size, modification time in nanoseconds and change time
    (ctime): a rewrite in place changes ctime even when it keeps the size and ``touch -r`` resets the
    mtime (no user process can set ctime back), and ``mv`` of another file over it changes the inode.
    """

    storage_options: dict[str, str] | None = None

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def entry(self, path: str) -> FileEntry:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file or directory; pass a Parquet file or a folder of them.") from None
        return _local_entry(path, st)

    def walk(self, root: str) -> list[FileEntry]:
        # os.scandir's entries, not os.walk's names then a stat of each joined path: 3.5 µs a file
        # less (a third of the listing). As os.walk does: unreadable folders are skipped, and
        # links to folders are not followed
        found: list[FileEntry] = []
        folders = [root]
        while folders:
            try:
                with os.scandir(folders.pop()) as listing:
                    entries = list(listing)
            except OSError:
                continue
            for entry in entries:
                if is_hidden(entry.name):
                    continue
                if _is_folder(entry):
                    if not entry.is_symlink():
                        folders.append(entry.path)
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # removed while listing
                found.append(_local_entry(entry.path, st))
        found.sort(key=lambda e: e.path)
        return found

    def read_range(self, path: str, start: int, length: int) -> bytes:
        # a descriptor and pread, not a buffered file object: half the cost of a footer's read
        fd = os.open(path, os.O_RDONLY)
        try:
            pieces = []
            while length > 0 and (piece := os.pread(fd, length, start)):  # short only at the end of the file
                pieces.append(piece)
                start, length = start + len(piece), length - len(piece)
            return b"".join(pieces)
        finally:
            os.close(fd)

    def read_tails(self, entries: list[FileEntry], length: int) -> list[bytes]:
        # one after another: from the page cache a read costs microseconds, and threads contending
        # for the GIL made 10,000 footers twice as slow here
        return [self.read_range(e.path, max(0, e.size - length), length) for e in entries]

    def hash_files(self, items: list[tuple[str, list[tuple[int, int]]]]) -> list[str]:
        return [self._hash_file(path, ranges) for path, ranges in items]

    def _hash_file(self, path: str, ranges: Iterable[tuple[int, int]]) -> str:
        import xxhash

        h = xxhash.xxh3_128()
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return h.hexdigest()
            # mapped, not read: the hash runs over the page cache without a copy
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    for start, length in ranges:
                        h.update(len(view[start : start + length]).to_bytes(8, "little"))
                        h.update(view[start : start + length])
                finally:
                    view.release()
        return h.hexdigest()

    def relative(self, root: str, paths: list[str]) -> list[str]:
        # one stat of the root, and a slice per listed path (relpath costs 15 µs a file): a
        # slice that is already normal is what relpath would return
        base = root if os.path.isdir(root) else os.path.dirname(root)
        stem = base.rstrip(os.sep)
        prefix = stem + os.sep if stem else ""
        out = []
        for path in paths:
            rel = path[len(prefix) :] if prefix and path.startswith(prefix) else ""
            same = rel and not rel.startswith(os.sep) and os.path.normpath(rel) == rel  # a root "d//": relpath's
            out.append(rel if same else os.path.relpath(path, base or os.curdir))
        return out


def _local_entry(path: str, st: os.stat_result) -> FileEntry:
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    return FileEntry(path=path, size=st.st_size, identity=identity)


def storage_for(path: str) -> Storage:
    """The storage backend that holds ``path``."""
    scheme = path.split("://", 1)[0].lower() if "://" in path else ""
    if scheme in ("", "file"):
        return LocalStorage()
    if scheme in OBJECT_SCHEMES:
        return ObjectStorage(scheme)
    raise InputError(f"{path}: {scheme}:// paths are not supported; pass a local path or an s3://, gs:// or az:// URL.")


def data_location(path: str) -> str:
    """Where the data is, for a run's params and a deployment: a URL as given (without any
    credentials in it), a local path made absolute."""
    from tasks.redact import redact_uri

    if "://" in path and not path.lower().startswith("file://"):
        return redact_uri(path)
    return os.path.abspath(local_path(path))


def local_path(path: str) -> str:
    """``file:///x`` → ``/x``; other paths unchanged."""
    return path[len("file://") :] if path.lower().startswith("file://") else path
