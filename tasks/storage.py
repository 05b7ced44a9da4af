"""Where a dataset's files live: one small interface per storage backend (the data seam).

Discovery, fingerprints and the cache reach the bytes of a dataset only through a
:class:`Storage`: list the files under a root with their identity, read a byte range (a footer, a
file's magic), hash byte ranges (``--verify-cache``), and tell Polars how to open them. The local
file system is the first implementation; object stores add theirs behind the same methods.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Iterable, Protocol

from tasks.errors import InputError


@dataclass(frozen=True)
class FileEntry:
    """A file as listed: its path, size, and an identity that changes whenever its bytes may have."""

    path: str
    size: int
    identity: str


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

    def hash_ranges(self, path: str, ranges: Iterable[tuple[int, int]]) -> str:
        """A fast non-cryptographic hash (xxh3-128) of the bytes of ``(start, length)`` ranges."""

    def relative(self, root: str, path: str) -> str:
        """``path`` relative to ``root`` ('' parts are dropped)."""


def _hidden(name: str) -> bool:
    # Spark's _SUCCESS and _temporary, Hadoop's .crc files, editors' dot files
    return name.startswith((".", "_"))


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
        found: list[FileEntry] = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not _hidden(d)]
            for name in names:
                if _hidden(name):
                    continue
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # removed while listing
                found.append(_local_entry(path, st))
        found.sort(key=lambda e: e.path)
        return found

    def read_range(self, path: str, start: int, length: int) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read(length)

    def hash_ranges(self, path: str, ranges: Iterable[tuple[int, int]]) -> str:
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

    def relative(self, root: str, path: str) -> str:
        base = root if os.path.isdir(root) else os.path.dirname(root)
        return os.path.relpath(path, base)


def _local_entry(path: str, st: os.stat_result) -> FileEntry:
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    return FileEntry(path=path, size=st.st_size, identity=identity)


def storage_for(path: str) -> Storage:
    """The storage backend that holds ``path``."""
    scheme = path.split("://", 1)[0].lower() if "://" in path else ""
    if scheme in ("", "file"):
        return LocalStorage()
    raise InputError(f"{path}: {scheme}:// paths are not supported yet; copy the data to a local folder.")


def local_path(path: str) -> str:
    """``file:///x`` → ``/x``; other paths unchanged."""
    return path[len("file://") :] if path.lower().startswith("file://") else path
