"""Which of a dataset's files an evaluation reads: the partitions a ``--where`` selection and a date
window keep, from the hive keys of the files' paths."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tasks.data.file_entry import FileEntry
from tasks.data.parquet_files import parse_hive_keys
from tasks.errors import InputError


def select_partitions(
    root: str,
    entries: list[FileEntry],
    where: dict[str, list[str]] | None = None,
    date_key: str | None = None,
    window_days: int | None = None,
    reference: datetime | None = None,
) -> list[FileEntry]:
    """Keep the files whose hive keys match ``where`` and whose ``date_key`` falls in the window.

    The window is the ``window_days`` days up to ``reference`` (a scheduled run's start time), so
    each night's run evaluates the newest partitions. Hive values of ``date_key`` are ISO dates.
    """
    if not where and not date_key:
        return entries
    kept = []
    if date_key and window_days:
        ref = (reference or datetime.now(UTC)).date()
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
                raise InputError(
                    f"{entry.path}: hive key {date_key}={hive[date_key]!r} is not an ISO date (YYYY-MM-DD)."
                ) from None
            if not lo <= day <= hi:
                continue
        kept.append(entry)
    if not kept:
        window = f" and {date_key} in [{lo}, {hi}]" if date_key and window_days else ""
        raise InputError(f"{root}: no partition matches the selection {where or {}}{window}.")
    return kept
