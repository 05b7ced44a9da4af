"""Objects in a bucket as a :class:`tasks.data.storage.Storage`: ``s3://`` and the other schemes fsspec and
Polars both read; how an object store's failure is told from bad input.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from tasks.data.file_entry import FileEntry, is_hidden
from tasks.errors import InputError, StorageUnavailable
from tasks.extras import require_extra

#: per scheme: S3 connections at once (botocore's default of 10 capped the footer reads of
#: :meth:`ObjectStorage.read_tails` at 10 requests in flight)
_FSSPEC_OPTIONS: dict[str, dict[str, Any]] = {"s3": {"config_kwargs": {"max_pool_connections": 64}}}


class ObjectStorage:
    """Objects in a bucket (``s3://``, and the other schemes fsspec and Polars both reach: ``gs://``,
    ``az://``), through fsspec.

    Credentials, endpoint and region come from the standard environment and configuration
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``,
    ``AWS_REGION``); bce-eval never reads, prints or stores them. An object's identity is its ETag,
    version id, size and modification time: a rewritten object gets a new ETag (and, in a versioned
    bucket, a new version id), so the cache never serves figures of the bytes it replaced.
    """

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.storage_options = _polars_options(scheme)
        self._client: Any = None

    @property
    def _fs(self) -> Any:
        if self._client is None:
            import fsspec

            if self.scheme in ("s3", "s3a"):
                require_extra("s3", f"reading {self.scheme}:// data")

            # a client of its own, made from the environment as it is now (fsspec's shared
            # instances would keep an endpoint or credentials that have changed since)
            self._client = fsspec.filesystem(
                self.scheme, skip_instance_cache=True, **_FSSPEC_OPTIONS.get(self.scheme, {})
            )
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "storage_options": self.storage_options, "_client": None}

    def _url(self, key: str) -> str:
        return key if "://" in key else f"{self.scheme}://{key}"

    def is_dir(self, path: str) -> bool:
        return self._call(path, lambda: self._fs.isdir(path))

    def entry(self, path: str) -> FileEntry:
        info = self._call(path, lambda: self._fs.info(path))
        if info.get("type") == "directory":
            raise InputError(f"{path}: a folder, not an object.")
        return self._entry(info)

    def walk(self, root: str) -> list[FileEntry]:
        found = self._call(root, lambda: self._fs.find(root, detail=True))
        base = root.split("://", 1)[-1].rstrip("/")
        entries = []
        for key, info in found.items():
            rel = key[len(base) + 1 :] if key.startswith(base + "/") else key.rsplit("/", 1)[-1]
            if info.get("type") == "directory" or any(is_hidden(part) for part in rel.split("/")):
                continue
            entries.append(self._entry(info))
        entries.sort(key=lambda e: e.path)
        return entries

    def read_range(self, path: str, start: int, length: int) -> bytes:
        return self._call(path, lambda: self._fs.cat_file(path, start=start, end=start + length))

    def read_tails(self, entries: list[FileEntry], length: int) -> list[bytes]:
        paths = [e.path for e in entries]
        starts = [max(0, e.size - length) for e in entries]
        ends = [e.size for e in entries]
        # one call: fsspec sends the requests concurrently (in batches), where one request after
        # another cost 3 ms an object from a server on loopback, and a round trip each from a region
        return self._cat_ranges(paths, starts, ends)

    def hash_files(self, items: list[tuple[str, list[tuple[int, int]]]]) -> list[str]:
        import xxhash

        hashes = []
        # the ranges of many objects in one call (concurrent requests, as read_tails), in batches
        # of at most _HASH_BATCH_BYTES held in memory at once
        for batch in _batches(items, _HASH_BATCH_BYTES):
            paths = [path for path, ranges in batch for _ in ranges]
            starts = [start for _, ranges in batch for start, _ in ranges]
            ends = [start + length for _, ranges in batch for start, length in ranges]
            blocks = iter(self._cat_ranges(paths, starts, ends))
            for _, ranges in batch:
                h = xxhash.xxh3_128()
                for _ in ranges:
                    block = next(blocks)
                    h.update(len(block).to_bytes(8, "little"))
                    h.update(block)
                hashes.append(h.hexdigest())
        return hashes

    def _cat_ranges(self, paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
        """The bytes of each range, requested at once; the first failure raised as :meth:`_call` words it."""
        if not paths:
            return []
        blocks = self._call(paths[0], lambda: self._fs.cat_ranges(paths, starts, ends, on_error="return"))
        for path, block in zip(paths, blocks):
            if isinstance(block, BaseException):  # the first failure, as one read of that object reports it
                self._call(path, lambda block=block: _reraise(block))
        return blocks

    def relative(self, root: str, paths: list[str]) -> list[str]:
        base = root.rstrip("/")
        return [path[len(base) + 1 :] if path.startswith(base + "/") else path.rsplit("/", 1)[-1] for path in paths]

    def _entry(self, info: dict[str, Any]) -> FileEntry:
        etag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "").strip('"')
        version = str(info.get("VersionId") or info.get("generation") or info.get("version_id") or "")
        modified = str(info.get("LastModified") or info.get("last_modified") or info.get("mtime") or "")
        size = int(info.get("size") or info.get("Size") or 0)
        return FileEntry(path=self._url(info["name"]), size=size, identity=f"{etag}:{version}:{size}:{modified}")

    def _call(self, path: str, fn: Any) -> Any:
        try:
            return fn()
        except FileNotFoundError:
            raise InputError(
                f"{path}: no such object or prefix; pass the URL of a Parquet object or of a prefix holding them."
            ) from None
        except PermissionError as exc:
            raise InputError(
                f"{path}: access denied ({_first_line(exc)}); check the credentials in the environment."
            ) from exc
        except Exception as exc:
            if is_unreachable(exc):
                raise storage_unavailable(path, exc) from None
            raise


def _reraise(exc: BaseException) -> Any:
    raise exc


#: bytes one call of :meth:`ObjectStorage.hash_files` holds at most (one object's ranges always go together)
_HASH_BATCH_BYTES = 256 << 20


def _batches(
    items: list[tuple[str, list[tuple[int, int]]]], limit: int
) -> Iterator[list[tuple[str, list[tuple[int, int]]]]]:
    """``items`` in consecutive groups whose ranges add up to at most ``limit`` bytes (or one item)."""
    batch: list[tuple[str, list[tuple[int, int]]]] = []
    size = 0
    for path, ranges in items:
        n = sum(length for _, length in ranges)
        if batch and size + n > limit:
            yield batch
            batch, size = [], 0
        batch.append((path, ranges))
        size += n
    if batch:
        yield batch


_NETWORK_CLASSES = {
    "ConnectionError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "TimeoutError",
    "ClientConnectorError",
    "ServerDisconnectedError",
}
# how Polars' object-store reader words a network failure (after its own retries)
_NETWORK_WORDS = (
    "error sending request",
    "connection refused",
    "connection reset",
    "timed out",
    "dns error",
    "operation timed out",
)


def is_unreachable(exc: BaseException) -> bool:
    """The object store did not answer (network, server down), as opposed to a bad object or bad credentials."""
    if {c.__name__ for c in type(exc).__mro__} & _NETWORK_CLASSES:
        return True
    text = str(exc).lower()
    return any(w in text for w in _NETWORK_WORDS)


def storage_unavailable(path: str, exc: BaseException) -> StorageUnavailable:
    """One line naming the object; the endpoint (it comes from the environment) and credentials are left out."""
    import re

    retries = re.search(r"after (\d+) retries", str(exc))
    tried = (
        f"no answer after {retries.group(1)} retries with backoff"
        if retries
        else "no answer after the client's retries"
    )
    return StorageUnavailable(
        f"{path}: the object store did not answer ({tried}); check that the server in AWS_ENDPOINT_URL (or the "
        "cloud endpoint) is reachable, then rerun the same command"
    )


#: schemes read through fsspec (and by Polars' own object-store reader)
OBJECT_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _polars_options(scheme: str) -> dict[str, str] | None:
    """What Polars needs beyond the environment it reads itself (credentials, region): a custom
    S3 endpoint (an S3-compatible server), plain HTTP when that endpoint is on it."""
    if scheme not in ("s3", "s3a") or not _endpoint():
        return None
    url = _endpoint() or ""
    return {"aws_endpoint_url": url, **({"aws_allow_http": "true"} if url.startswith("http://") else {})}


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
