"""A file as a storage backend lists it, and the names every backend's listing skips."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileEntry:
    """A file as listed: its path, size, and an identity that changes whenever its bytes may have."""

    path: str
    size: int
    identity: str


def is_hidden(name: str) -> bool:
    """A name a listing skips: Spark's _SUCCESS and _temporary, Hadoop's .crc files, editors' dot files."""
    return name.startswith((".", "_"))
