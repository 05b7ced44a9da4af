"""tasks/data/parquet_files.py: hive keys (checked against pyarrow.dataset's own hive partitioning),
which files count as Parquet, and footers read from the files' last bytes (checked against
``pyarrow.parquet.read_metadata`` of the whole file)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tasks.data import parquet_files
from tasks.data.parquet_files import (
    HIVE_NULL,
    TAIL_BYTES,
    arrow_schema,
    check_stop,
    column_chunk_ranges,
    list_parquet_files,
    parse_hive_keys,
    read_file_footers,
    read_footer,
    read_footers_bytes,
)
from tasks.data.storage import LocalStorage
from tasks.errors import InputError, Stopped

# --- hive keys ------------------------------------------------------------------------------------


def test_hive_keys_equal_pyarrow_datasets_partition_keys_url_decoded_and_null(tmp_path: Path):
    values = ["plain", "a b", "x/y", "100%", "é=1", "2024-01-02 03:04:05", None]
    table = pa.table({"k": values, "v": list(range(len(values)))})
    hive = pads.partitioning(pa.schema([("k", pa.string())]), flavor="hive")
    pads.write_dataset(table, tmp_path / "d", format="parquet", partitioning=hive)
    fragments = list(pads.dataset(tmp_path / "d", format="parquet", partitioning=hive).get_fragments())
    assert len(fragments) == len(values)
    assert any(f"k={HIVE_NULL}" in f.path for f in fragments)  # pyarrow writes a null as this folder
    for fragment in fragments:
        expected = pads.get_partition_keys(fragment.partition_expression)
        assert parse_hive_keys(str(tmp_path / "d"), fragment.path) == expected
    got = sorted((parse_hive_keys(tmp_path / "d", f.path)["k"] for f in fragments), key=str)
    assert got == sorted(values, key=str)


def test_hive_keys_by_hand_nested_folders_and_encoded_key_names(tmp_path: Path):
    root = tmp_path / "root"
    file = root / "not-a-key" / "my%20key=v%3D1" / f"day={HIVE_NULL}" / "region=n%C3%B8rth" / "part-0.parquet"
    assert parse_hive_keys(root, file) == {"my key": "v=1", "day": None, "region": "nørth"}
    assert parse_hive_keys(str(root) + os.sep, str(file)) == {"my key": "v=1", "day": None, "region": "nørth"}
    assert parse_hive_keys(root, root / "k=1" / "a=b=c" / "f.parquet") == {"k": "1", "a": "b=c"}
    assert parse_hive_keys(root, root / "f.parquet") == {}


def test_hive_keys_of_a_relative_root_and_an_absolute_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "data" / "k=a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse_hive_keys("data", str(tmp_path / "data" / "k=a" / "f.parquet")) == {"k": "a"}
    assert parse_hive_keys("no-such-folder", str(tmp_path / "data" / "k=a" / "f.parquet")) == {}


# --- which files are Parquet ----------------------------------------------------------------------


def _parquet(path: Path, n: int = 3, columns: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({f"c{j}": list(range(j, j + n)) for j in range(columns)}), path)
    return path


def test_parquet_files_by_suffix_or_magic_bytes_hidden_and_underscore_names_skipped(tmp_path: Path):
    root = tmp_path / "d"
    kept = [
        _parquet(root / "a.parquet"),
        _parquet(root / "B.PQ"),
        _parquet(root / "k=1" / "c.parq"),
        _parquet(root / "k=1" / "part-00000"),  # no suffix: Parquet by its magic
        _parquet(root / "k=2" / "000000_0"),
    ]
    (root / "k=2" / "truncated").write_bytes(b"PAR1" + b"\0" * 10)  # starts as Parquet: kept, an error later
    kept.append(root / "k=2" / "truncated")
    (root / "README.md").write_text("PAR2 is not the magic")
    (root / "data.csv").write_text("a,b\n1,2\n")
    (root / "tiny").write_bytes(b"PA")  # shorter than the magic
    (root / "empty").write_bytes(b"")
    for skipped in (
        "_SUCCESS",
        ".hidden.parquet",
        "_tmp/x.parquet",
        ".spark/x.parquet",
        "k=1/.c.parq.crc",
        "k=1/_common_metadata",
    ):
        _parquet(root / skipped)
    got = list_parquet_files(root)
    assert [e.path for e in got] == sorted(str(p) for p in kept)
    assert [e.size for e in got] == [os.path.getsize(e.path) for e in got]


def test_a_single_file_is_parquet_by_suffix_or_magic_else_refused(tmp_path: Path):
    named = _parquet(tmp_path / "x.parquet")
    bare = _parquet(tmp_path / "export")
    assert [e.path for e in list_parquet_files(named)] == [str(named)]
    assert [e.path for e in list_parquet_files(bare)] == [str(bare)]
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'notes.txt'}: not a Parquet file \(no Parquet magic bytes\)"):
        list_parquet_files(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("nothing here")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'empty'}: no Parquet files found in this folder\.$"):
        list_parquet_files(tmp_path / "empty")


# --- footers --------------------------------------------------------------------------------------


def _footer_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[-8:-4], "little")


def test_footers_read_from_the_tails_equal_pyarrows_metadata_of_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    paths = [_parquet(tmp_path / f"small-{i}.parquet", n=5 + i) for i in range(4)]
    wide = _parquet(tmp_path / "wide.parquet", columns=400)  # a footer longer than the tail read at once
    assert _footer_length(wide) + 8 > TAIL_BYTES
    paths.insert(2, wide)
    monkeypatch.setattr(parquet_files, "TAIL_BATCH", 2)  # three batches, in order
    storage = LocalStorage()
    entries = [storage.entry(str(p)) for p in paths]
    results = list(read_file_footers(storage, entries))
    assert len(results) == len(paths)
    for path, (md, _) in zip(paths, results):
        reference = pq.read_metadata(path)
        assert md.equals(reference)
        assert md.num_rows == reference.num_rows and md.num_columns == reference.num_columns
        assert arrow_schema(str(path), md).equals(pq.read_schema(path))
    footers = read_footers_bytes(storage, entries)
    for path, footer in zip(paths, footers):
        assert footer == path.read_bytes()[-(_footer_length(path) + 8) :]


def test_the_fingerprint_follows_the_content_not_the_name(tmp_path: Path):
    a = _parquet(tmp_path / "a.parquet", n=10)
    copy = tmp_path / "copy.parquet"
    shutil.copyfile(a, copy)
    other = _parquet(tmp_path / "other.parquet", n=11)
    storage = LocalStorage()
    prints = [fp for _, fp in read_file_footers(storage, [storage.entry(str(p)) for p in (a, copy, other)])]
    assert prints[0] == prints[1] != prints[2]


@pytest.mark.parametrize("damage", ["cut", "bad_length", "garbage_footer"])
def test_a_damaged_file_is_one_line_naming_it(tmp_path: Path, damage: str):
    path = _parquet(tmp_path / "x.parquet", n=50)
    data = bytearray(path.read_bytes())
    if damage == "cut":
        data = data[:-10]
    elif damage == "bad_length":
        data[-8:-4] = (len(data) * 2).to_bytes(4, "little")
    else:
        n = _footer_length(path)
        data[-8 - n : -8] = b"\xff" * n
    path.write_bytes(bytes(data))
    storage = LocalStorage()
    [footer] = read_footers_bytes(storage, [storage.entry(str(path))])
    with pytest.raises(InputError) as err:
        read_footer(str(path), footer)
    message = str(err.value)
    assert message.startswith(f"{path}: not a readable Parquet file (")
    assert message.endswith("the file may be truncated or corrupt.") and "\n" not in message


def test_column_chunk_ranges_hold_the_columns_bytes(tmp_path: Path):
    path = tmp_path / "x.parquet"
    table = pa.table(
        {"a": list(range(1000)), "b": [str(i % 7) for i in range(1000)], "c": [i * 0.5 for i in range(1000)]}
    )
    pq.write_table(table, path, row_group_size=300)
    data = path.read_bytes()
    md = pq.read_metadata(path)
    footer_start = len(data) - 8 - _footer_length(path)
    # every chunk of every column, in file order, tiles the bytes between the leading magic and the footer
    chunks = sorted(column_chunk_ranges(md, ["a", "b", "c", "not-a-column"]))
    assert len(chunks) == 3 * md.num_row_groups == 12
    assert chunks[0][0] == 4 and chunks[-1][0] + chunks[-1][1] == footer_start
    assert all(s + n == chunks[i + 1][0] for i, (s, n) in enumerate(chunks[:-1]))
    # column b's ranges alone (the rest zeroed) still read as column b
    kept = bytearray(len(data))
    kept[:4], kept[footer_start:] = data[:4], data[footer_start:]
    for start, length in column_chunk_ranges(md, ["b"]):
        kept[start : start + length] = data[start : start + length]
    assert pq.read_table(pa.BufferReader(bytes(kept)), columns=["b"]).column("b").equals(table.column("b"))


def test_a_listing_told_to_stop_stops():
    check_stop(None, "anywhere")
    stop = threading.Event()
    check_stop(stop, "s3://b/k")
    stop.set()
    with pytest.raises(Stopped, match="stopped at s3://b/k"):
        check_stop(stop, "s3://b/k")
