"""tasks/data/partitions.py: the files a ``--where`` selection and a date window keep, checked against
the same selection made by pyarrow.dataset's own hive partitioning and filter."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

from tasks.data.parquet_files import list_parquet_files
from tasks.data.partitions import select_partitions
from tasks.errors import InputError


@pytest.fixture
def days_tree(tmp_path: Path) -> Path:
    """``day=2024-03-01 … 2024-03-06`` × ``region=north|south``, one file each."""
    for day in range(1, 7):
        for region in ("north", "south"):
            folder = tmp_path / "d" / f"day=2024-03-0{day}" / f"region={region}"
            folder.mkdir(parents=True)
            pl.DataFrame({"x": [day]}).write_parquet(folder / "part-0.parquet")
    return tmp_path / "d"


def _kept_by_pyarrow(root: Path, keep: pc.Expression) -> list[str]:
    schema = pa.schema([("day", pa.string()), ("region", pa.string())])
    dataset = pads.dataset(root, format="parquet", partitioning=pads.partitioning(schema, flavor="hive"))
    return sorted(fragment.path for fragment in dataset.get_fragments(filter=keep))


def _paths(entries) -> list[str]:
    return sorted(e.path for e in entries)


def test_a_selection_and_a_window_keep_what_pyarrows_filter_keeps(days_tree: Path):
    root = str(days_tree)
    entries = list_parquet_files(root)
    kept = select_partitions(root, entries, {"region": ["south"]}, "day", 3, datetime(2024, 3, 5, 12, tzinfo=UTC))
    # the window is the 3 days up to the reference's date: 03, 04 and 05 (ISO dates order as text)
    south = (pc.field("region") == "south") & (pc.field("day") >= "2024-03-03") & (pc.field("day") <= "2024-03-05")
    assert _paths(kept) == _kept_by_pyarrow(days_tree, south)
    assert len(kept) == 3
    both = select_partitions(root, entries, {"region": ["north", "south"]}, "day", 1, datetime(2024, 3, 6, tzinfo=UTC))
    assert _paths(both) == _kept_by_pyarrow(days_tree, pc.field("day") == "2024-03-06")
    assert select_partitions(root, entries) is entries  # no selection: every file


def test_a_key_the_paths_lack_a_date_that_is_not_one_and_an_empty_selection_are_one_clear_line(
    days_tree: Path, tmp_path: Path
):
    root = str(days_tree)
    entries = list_parquet_files(root)
    with pytest.raises(
        InputError, match=r"no hive key 'country' to select partitions by; keys are \['day', 'region'\]"
    ):
        select_partitions(root, entries, {"country": ["fr"]})
    with pytest.raises(
        InputError, match=re.escape(f"{root}: no partition matches the selection {{'region': ['west']}}.")
    ):
        select_partitions(root, entries, {"region": ["west"]})
    with pytest.raises(InputError, match=r"and day in \[2023-12-30, 2023-12-31\]\.$"):
        select_partitions(root, entries, None, "day", 2, datetime(2023, 12, 31, tzinfo=UTC))
    folder = tmp_path / "bad" / "day=yesterday"
    folder.mkdir(parents=True)
    pl.DataFrame({"x": [1]}).write_parquet(folder / "part-0.parquet")
    bad = str(tmp_path / "bad")
    with pytest.raises(InputError, match=r"day=yesterday/part-0.parquet: hive key day='yesterday' is not an ISO date"):
        select_partitions(bad, list_parquet_files(bad), None, "day", 2)
