"""tasks/data/dataset.py: discovery, footer checks, InputError messages, grouping and scanning."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.data.dataset import discover_dataset, group_files, scan_files
from tasks.data.training_data import collect_training_data
from tasks.errors import InputError
from tests.conftest import REPO, make_frame, write_hive

FEATURES = ["a", "b", "c"]


def esc(p: object) -> str:
    return re.escape(str(p))


# --- discovery ---------------------------------------------------------------------------------


def test_single_file(tmp_path: Path):
    df = make_frame(50, 0)
    f = tmp_path / "one.parquet"
    df.write_parquet(f)
    ds = discover_dataset(f, "label", FEATURES)
    assert [Path(x.path) for x in ds.files] == [f]
    assert ds.num_rows == 50 == ds.files[0].num_rows
    assert ds.files[0].size == f.stat().st_size
    assert ds.hive_keys == () and ds.partition_by == ()
    assert ds.features == tuple(FEATURES) and ds.label == "label"
    assert ds.columns == ["a", "b", "c", "label"]


def test_flat_folder(tmp_path: Path):
    frames = [make_frame(n, s) for n, s in ((30, 1), (20, 2), (10, 3))]
    for i, df in enumerate(frames):
        df.write_parquet(tmp_path / f"part-{i}.parquet")
    (tmp_path / "README.txt").write_text("not data")  # other files are ignored
    (tmp_path / "_SUCCESS").write_text("")
    ds = discover_dataset(tmp_path, "label", FEATURES)
    assert sorted(Path(f.path).name for f in ds.files) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert ds.num_rows == 60
    assert ds.hive_keys == () and ds.partition_by == ()
    assert all(f.hive == {} for f in ds.files)


def test_hive_tree_keys_become_partition_by(hive_data: Path):
    ds = discover_dataset(hive_data, "label", FEATURES)
    assert ds.hive_keys == ("region",)
    assert ds.partition_by == ("region",)
    assert {f.hive["region"] for f in ds.files} == {"north", "south", "east", "west"}
    for f in ds.files:
        assert Path(f.path).parent.name == f"region={f.hive['region']}"
    expected_rows = sum(pl.read_parquet(p).height for p in hive_data.rglob("*.parquet"))
    assert ds.num_rows == expected_rows == 750
    assert ds.columns == ["a", "b", "c", "label", "region"]


def test_explicit_partition_by_overrides_hive_keys(tmp_path: Path):
    parts = {}
    for i, region in enumerate(["north", "south"]):
        df = make_frame(40, i)
        parts[region] = df.with_columns(pl.Series("shop", ["x", "y"] * 20))
    root = write_hive(tmp_path / "d", parts)
    ds = discover_dataset(root, "label", FEATURES, partition_by=["shop"])
    assert ds.hive_keys == ("region",)
    assert ds.partition_by == ("shop",)
    assert "region" not in ds.columns and "shop" in ds.columns
    grouped = scan_files(ds).group_by("shop").len().sort("shop")
    assert grouped.collect().to_dict(as_series=False) == {"shop": ["x", "y"], "len": [40, 40]}


def test_fingerprint_changes_with_content(tmp_path: Path):
    f = tmp_path / "one.parquet"
    make_frame(50, 0).write_parquet(f)
    fp1 = discover_dataset(f, "label", FEATURES).fingerprint
    assert discover_dataset(f, "label", FEATURES).fingerprint == fp1
    make_frame(50, 1).write_parquet(f)
    assert discover_dataset(f, "label", FEATURES).fingerprint != fp1


# --- InputError messages ----------------------------------------------------------------------


def test_missing_path(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match=esc(missing) + ".*no such file or directory"):
        discover_dataset(missing, "label", FEATURES)


def test_non_parquet_file(tmp_path: Path):
    f = tmp_path / "data.csv"
    make_frame(5, 0).write_csv(f)
    with pytest.raises(InputError, match=esc(f) + ".*not a Parquet file"):
        discover_dataset(f, "label", FEATURES)


def test_folder_without_parquet(tmp_path: Path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=esc(tmp_path) + ".*no Parquet files"):
        discover_dataset(tmp_path, "label", FEATURES)


def test_truncated_parquet_in_hive_tree(hive_data: Path):
    victim = hive_data / "region=south" / "part-0.parquet"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=esc(victim) + ".*not a readable Parquet file.*truncated or corrupt"):
        discover_dataset(hive_data, "label", FEATURES)


def test_footer_with_a_column_name_that_is_not_utf8(tmp_path: Path):
    # a footer that parses but names a column in bytes that are not UTF-8 (pyarrow raises
    # UnicodeDecodeError there, not an Arrow error): one line naming the file, not a traceback
    f = tmp_path / "x.parquet"
    make_frame(20, 0).rename({"b": "bq"}).write_parquet(f)
    data = f.read_bytes()
    tail = len(data) - 8 - int.from_bytes(data[-8:-4], "little")  # the footer's first byte
    assert data[tail:].count(b"bq") == 2  # in the schema and the column chunk (pyarrow's stored schema is base64)
    f.write_bytes(data[:tail] + data[tail:].replace(b"bq", b"\xce("))
    with pytest.raises(InputError, match=esc(f) + ".*not a readable Parquet file"):
        discover_dataset(f, "label", ["a", "c"])


def test_a_column_moved_into_a_struct_is_missing_even_with_the_same_parquet_leaves(tmp_path: Path):
    # x at the top, then x inside a required struct: the same Parquet leaf (name, type, levels), no
    # stored Arrow schema. Discovery still converts the second footer and names the file
    import pyarrow as pa
    import pyarrow.parquet as pq

    top = pa.table(
        {"label": pa.array([0, 1], pa.int64()), "x": pa.array([1, 2], pa.int64())},
        schema=pa.schema([pa.field("label", pa.int64()), pa.field("x", pa.int64(), nullable=False)]),
    )
    struct = pa.StructArray.from_arrays(
        [pa.array([1, 2], pa.int64())], fields=[pa.field("x", pa.int64(), nullable=False)]
    )
    nested = pa.table(
        {"label": pa.array([0, 1], pa.int64()), "g": struct},
        schema=pa.schema([pa.field("label", pa.int64()), pa.field("g", struct.type, nullable=False)]),
    )
    pq.write_table(top, tmp_path / "a.parquet", store_schema=False)
    pq.write_table(nested, tmp_path / "b.parquet", store_schema=False)
    assert pq.read_metadata(tmp_path / "b.parquet").schema.equals(pq.read_metadata(tmp_path / "a.parquet").schema)
    with pytest.raises(InputError, match=esc(tmp_path / "b.parquet") + ".*column 'x' is missing here but present in"):
        discover_dataset(tmp_path, "label", ["x"])


def test_each_other_schema_is_kept_once_with_its_first_file(tmp_path: Path):
    # the first file int32, the others int64: one variant, not one per file (10,000 files would
    # otherwise keep 9,999 schemas)
    from tasks.data.dataset import read_dataset_files

    for i in range(5):
        make_frame(10, i).with_columns(pl.col("a").cast(pl.Int32 if i == 0 else pl.Int64)).write_parquet(
            tmp_path / f"p{i}.parquet"
        )
    listing = read_dataset_files(tmp_path)
    assert [Path(p).name for p, _ in listing.variants] == ["p1.parquet"]
    assert discover_dataset(tmp_path, "label", ["a"]).scan_schema  # read widened, as before


def test_garbage_named_parquet(tmp_path: Path):
    f = tmp_path / "x.parquet"
    f.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(InputError, match=esc(f) + ".*not a readable Parquet file"):
        discover_dataset(f, "label", FEATURES)


def test_missing_label_column(hive_data: Path):
    with pytest.raises(InputError, match=r"no label column 'target'; columns are \[.*'a'.*'region'"):
        discover_dataset(hive_data, "target", FEATURES)


def test_missing_feature_column(hive_data: Path):
    with pytest.raises(InputError, match=r"region=\w+.part-0\.parquet: no feature column 'zz'"):
        discover_dataset(hive_data, "label", ["a", "zz"])


def test_missing_partition_column(hive_data: Path):
    with pytest.raises(InputError, match=r"no partition column 'shop'"):
        discover_dataset(hive_data, "label", FEATURES, partition_by=["shop"])


def test_non_numeric_feature(tmp_path: Path):
    f = tmp_path / "d.parquet"
    make_frame(10, 0).with_columns(pl.lit("txt").alias("name")).write_parquet(f)
    with pytest.raises(
        InputError, match=esc(f) + r": feature column 'name' has type (string|large_string).*not numeric"
    ):
        discover_dataset(f, "label", ["a", "name"])


def test_string_label_rejected(tmp_path: Path):
    f = tmp_path / "d.parquet"
    make_frame(10, 0).with_columns(pl.col("label").cast(pl.String)).write_parquet(f)
    with pytest.raises(InputError, match=r"label column 'label' has type .*string"):
        discover_dataset(f, "label", FEATURES)


def test_hive_key_as_feature_rejected(hive_data: Path):
    with pytest.raises(InputError, match=r"'region' is a hive partition key"):
        discover_dataset(hive_data, "label", ["a", "region"])


def test_label_also_a_feature_rejected(hive_data: Path):
    with pytest.raises(InputError, match=r"'label' is both the label and a feature"):
        discover_dataset(hive_data, "label", ["a", "label"])


def test_schemas_disagree(tmp_path: Path):
    good = make_frame(10, 0)
    bad = good.with_columns(pl.col("b").cast(pl.String))
    good.write_parquet(tmp_path / "part-0.parquet")
    bad.write_parquet(tmp_path / "part-1.parquet")
    second = tmp_path / "part-1.parquet"
    with pytest.raises(
        InputError,
        match=esc(second)
        + r": feature column 'b' is (string|large_string) but .*part-0\.parquet has double; the files' schemas "
        r"disagree\. Rewrite",
    ):
        discover_dataset(tmp_path, "label", FEATURES)


def test_int_and_float_feature_widen_to_float(tmp_path: Path):
    df = make_frame(10, 0)
    df.write_parquet(tmp_path / "part-0.parquet")
    ints = df.with_columns(pl.col("a").round(0).cast(pl.Int64))
    ints.write_parquet(tmp_path / "part-1.parquet")
    # as pyarrow.dataset would: an int64 column beside a double one is read as double
    ds = discover_dataset(tmp_path, "label", FEATURES)
    assert dict(ds.scan_schema)["a"] == pl.Float64
    got = scan_files(ds).collect()
    assert got.get_column("a").dtype == pl.Float64
    expected = pl.concat([df.get_column("a"), ints.get_column("a").cast(pl.Float64)])
    assert got.get_column("a").to_list() == expected.to_list()


def test_column_missing_in_one_file(tmp_path: Path):
    make_frame(10, 0).write_parquet(tmp_path / "part-0.parquet")
    make_frame(10, 1).drop("c").write_parquet(tmp_path / "part-1.parquet")
    with pytest.raises(InputError, match=esc(tmp_path / "part-1.parquet") + r": column 'c' is missing here"):
        discover_dataset(tmp_path, "label", FEATURES)


def test_zero_rows(tmp_path: Path):
    f = tmp_path / "empty.parquet"
    make_frame(10, 0).head(0).write_parquet(f)
    with pytest.raises(InputError, match=esc(f) + r": the dataset has no rows"):
        discover_dataset(f, "label", FEATURES)


def test_zero_rows_hive_tree(tmp_path: Path):
    root = write_hive(tmp_path / "d", {"north": make_frame(10, 0).head(0), "south": make_frame(10, 1).head(0)})
    with pytest.raises(InputError, match=esc(root) + r": the dataset has no rows"):
        discover_dataset(root, "label", FEATURES)


def test_hive_keys_differ(tmp_path: Path):
    write_hive(tmp_path, {"north": make_frame(10, 0)}, key="region")
    write_hive(tmp_path, {"x": make_frame(10, 1)}, key="shop")
    with pytest.raises(InputError, match=r"hive keys \['(shop|region)'\] differ"):
        discover_dataset(tmp_path, "label", FEATURES)


def test_no_features():
    with pytest.raises(InputError, match="no feature columns given"):
        discover_dataset(REPO / "data" / "seed_points.parquet", "y", [])


# --- collect_training_data ---------------------------------------------------------------------


def _one_file(tmp_path: Path, df: pl.DataFrame) -> Path:
    f = tmp_path / "train.parquet"
    df.write_parquet(f)
    return f


def test_collect_training_data_matches_the_file(hive_data: Path):
    ds = discover_dataset(hive_data, "label", FEATURES)
    X, y = collect_training_data(ds)
    frames = [pl.read_parquet(f.path) for f in ds.files]
    expected = pl.concat(frames)
    assert X.dtype == np.float64 and X.shape == (750, 3)
    assert set(np.unique(y)) == {0, 1}
    # same multiset of rows, whatever the file order
    got = np.column_stack([X, y])
    want = expected.select([*FEATURES, "label"]).to_numpy().astype(np.float64)
    assert np.array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])


def test_a_row_whose_label_has_not_arrived_is_no_training_example(tmp_path: Path):
    df = make_frame(20, 0).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("label")).alias("label")
    )
    f = _one_file(tmp_path, df)
    X, y = collect_training_data(discover_dataset(f, "label", FEATURES))
    labelled = df.filter(pl.col("label").is_not_null())
    assert np.array_equal(X, labelled.select(FEATURES).cast(pl.Float64).to_numpy())
    assert np.array_equal(y, labelled.get_column("label").to_numpy())
    (tmp_path / "none").mkdir()
    none = _one_file(tmp_path / "none", df.with_columns(pl.lit(None, pl.Int64).alias("label")))
    with pytest.raises(InputError, match=esc(none) + r": no row has a label yet \('label' is null throughout\)"):
        collect_training_data(discover_dataset(none, "label", FEATURES))


def test_collect_label_value_2(tmp_path: Path):
    df = make_frame(20, 0).with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(2).otherwise(pl.col("label")).alias("label")
    )
    f = _one_file(tmp_path, df)
    ds = discover_dataset(f, "label", FEATURES)
    with pytest.raises(InputError, match=esc(f) + r": label column 'label' has value 2; labels must be 0 or 1"):
        collect_training_data(ds)


def test_collect_label_error_names_the_file(tmp_path: Path):
    parts = {"north": make_frame(30, 0), "south": make_frame(30, 1)}
    parts["south"] = parts["south"].with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(2).otherwise(pl.col("label")).alias("label")
    )
    root = write_hive(tmp_path / "d", parts)
    ds = discover_dataset(root, "label", FEATURES)
    victim = root / "region=south" / "part-0.parquet"
    with pytest.raises(InputError, match=esc(victim) + r": label column 'label' has value 2"):
        collect_training_data(ds)


FLOAT_LABEL_BUG = (
    "BUG: tasks/data/dataset.py check_label_values: labels.is_in([0, 1]) on a Float64/Float32 label "
    "column raises polars InvalidOperationError under Polars 2 (no implicit Float64 vs List(Int64) "
    "coercion), so collect_training_data crashes on float labels instead of accepting 0.0/1.0 or "
    "raising InputError"
)


def test_collect_float_labels_accepted(tmp_path: Path):
    df = make_frame(40, 0)
    f = _one_file(tmp_path, df.with_columns(pl.col("label").cast(pl.Float64)))
    ds = discover_dataset(f, "label", FEATURES)
    X, y = collect_training_data(ds)
    assert np.array_equal(y, df["label"].to_numpy())


def test_collect_float_label_half(tmp_path: Path):
    df = make_frame(20, 0).with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(0.5).otherwise(pl.col("label").cast(pl.Float64)).alias("label")
    )
    f = _one_file(tmp_path, df)
    ds = discover_dataset(f, "label", FEATURES)
    with pytest.raises(InputError, match=esc(f) + r": label column 'label' has value 0\.5"):
        collect_training_data(ds)


def test_collect_nan_label(tmp_path: Path):
    # NaN is caught by the is_finite check, before the is_in that fails on floats
    df = make_frame(20, 0).with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(float("nan"))
        .otherwise(pl.col("label").cast(pl.Float64))
        .alias("label")
    )
    f = _one_file(tmp_path, df)
    ds = discover_dataset(f, "label", FEATURES)
    with pytest.raises(InputError, match=esc(f) + r": label column 'label' has value nan"):
        collect_training_data(ds)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_collect_non_finite_feature_names_file_and_column(tmp_path: Path, bad):
    # a hive tree: the bad rows are in one file, which the message must name
    parts = {"north": make_frame(30, 0), "south": make_frame(30, 1), "west": make_frame(30, 2)}
    parts["south"] = parts["south"].with_columns(
        pl.when(pl.int_range(pl.len()).is_in([3, 7])).then(bad).otherwise(pl.col("b")).alias("b")
    )
    root = write_hive(tmp_path / "d", parts)
    ds = discover_dataset(root, "label", FEATURES)
    victim = root / "region=south" / "part-0.parquet"
    with pytest.raises(InputError, match=esc(victim) + r": feature column 'b' has 2 null or non-finite value\(s\)"):
        collect_training_data(ds)


@pytest.mark.parametrize("cls", [0, 1])
def test_collect_single_class(tmp_path: Path, cls):
    df = make_frame(20, 0).with_columns(pl.lit(cls, dtype=pl.Int64).alias("label"))
    ds = discover_dataset(_one_file(tmp_path, df), "label", FEATURES)
    with pytest.raises(InputError, match=rf"single class \(all labels are {cls}\)"):
        collect_training_data(ds)


def test_boolean_labels_accepted(tmp_path: Path):
    df = make_frame(40, 0)
    f = _one_file(tmp_path, df.with_columns(pl.col("label").cast(pl.Boolean)))
    ds = discover_dataset(f, "label", FEATURES)
    X, y = collect_training_data(ds)
    assert np.array_equal(y, df["label"].to_numpy())
    assert np.array_equal(X, df.select(FEATURES).to_numpy())


def test_integer_features_are_cast_to_float(tmp_path: Path):
    df = make_frame(40, 0).with_columns((pl.col("a") * 10).round(0).cast(pl.Int32))
    ds = discover_dataset(_one_file(tmp_path, df), "label", FEATURES)
    X, _ = collect_training_data(ds)
    assert X.dtype == np.float64
    assert np.array_equal(X[:, 0], df["a"].cast(pl.Float64).to_numpy())


# --- group_files ---------------------------------------------------------------------------------


def _multi_file_hive(root: Path) -> Path:
    sizes = {"a": [30, 20], "b": [50], "c": [10, 10, 10], "d": [70], "e": [5]}
    seed = 0
    for region, ns in sizes.items():
        folder = root / f"region={region}"
        folder.mkdir(parents=True)
        for i, n in enumerate(ns):
            make_frame(n, seed).write_parquet(folder / f"part-{i}.parquet")
            seed += 1
    return root


@pytest.mark.parametrize("target", [1, 40, 60, 100, 10_000])
def test_group_files_keeps_partitions_together(tmp_path: Path, target: int):
    ds = discover_dataset(_multi_file_hive(tmp_path / "d"), "label", FEATURES)
    chunks = group_files(ds, target_rows=target)
    # every file exactly once
    listed = [f.path for chunk in chunks for f in chunk]
    assert sorted(listed) == sorted(f.path for f in ds.files)
    # a partition never straddles two chunks
    owner: dict[str, int] = {}
    for i, chunk in enumerate(chunks):
        for f in chunk:
            assert owner.setdefault(f.hive["region"], i) == i
    # each chunk holds at most target_rows, unless it is a single partition that alone is larger
    for chunk in chunks:
        rows = sum(f.num_rows for f in chunk)
        regions = {f.hive["region"] for f in chunk}
        assert rows <= target or len(regions) == 1
    # greedy: a chunk is only closed when the next partition would not fit
    part_rows = {}
    for f in ds.files:
        part_rows[f.hive["region"]] = part_rows.get(f.hive["region"], 0) + f.num_rows
    for chunk, nxt in zip(chunks, chunks[1:]):
        rows = sum(f.num_rows for f in chunk)
        assert rows + part_rows[nxt[0].hive["region"]] > target
    if target >= ds.num_rows:
        assert len(chunks) == 1
    if target == 1:
        assert len(chunks) == 5


def test_group_files_single_file(tmp_path: Path):
    f = tmp_path / "one.parquet"
    make_frame(100, 0).write_parquet(f)
    ds = discover_dataset(f, "label", FEATURES)
    assert [[x.path for x in c] for c in group_files(ds, 10)] == [[str(f)]]


# --- scan_files -------------------------------------------------------------------------------


def test_scan_files_reads_only_needed_columns(tmp_path: Path):
    parts = {
        r: make_frame(20, i).with_columns(pl.lit("junk").alias("notes"), pl.lit(1.0).alias("unused"))
        for i, r in enumerate(["x", "y"])
    }
    root = write_hive(tmp_path / "d", parts)
    ds = discover_dataset(root, "label", ["a", "c"])
    lf = scan_files(ds)
    assert lf.collect_schema().names() == ["a", "c", "label", "region"]
    plan = lf.explain()
    assert "notes" not in plan and "unused" not in plan and '"b"' not in plan
    df = lf.collect()
    assert df.schema["region"] == pl.String
    assert df.height == 40
    expected = pl.concat([p.select("a", "c", "label") for p in parts.values()])
    assert df.select("a", "c", "label").sort("a").equals(expected.sort("a"))
    # a subset of files
    only = [f for f in ds.files if f.hive["region"] == "y"]
    sub = scan_files(ds, only).collect()
    assert sub["region"].unique().to_list() == ["y"] and sub.height == 20


def test_relative_paths_are_what_relpath_gives(tmp_path, monkeypatch):
    """Cache keys and the dataset fingerprint hold paths relative to the root: the slice taken for
    speed must equal ``os.path.relpath`` for roots written with ./, .., // or a trailing /."""
    import os

    from tasks.data.storage import LocalStorage

    (tmp_path / "d" / "region=a").mkdir(parents=True)
    (tmp_path / "d" / "region=a" / "f.parquet").write_bytes(b"")
    (tmp_path / "g.parquet").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for root in (
        "d",
        "d/",
        "d//",
        "./d/.",
        "d/../d",
        str(tmp_path / "d") + "//",
        ".",
        ".//",
        "g.parquet",
        ".//g.parquet",
    ):
        listed = (
            [os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names]
            if os.path.isdir(root)
            else [root]
        )
        base = root if os.path.isdir(root) else os.path.dirname(root) or os.curdir
        assert LocalStorage().relative(root, listed) == [os.path.relpath(p, base) for p in listed], root


def test_local_listing_follows_os_walk(tmp_path):
    """The listing is os.walk's, with each file's stat: hidden and ``_`` entries skipped, a link to
    a file listed, a link to a folder not followed (it would list files twice or loop), sorted."""
    import os

    from tasks.data.storage import LocalStorage

    root = tmp_path / "data"
    for rel in [
        "k=1/a.parquet",
        "k=1/b.parquet",
        "k=2/deep/c.parquet",
        "k=2/.hidden",
        "_temporary/x.parquet",
        ".cache/y",
        "top",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode() * 3)
    (root / "k=3").symlink_to(root / "k=1", target_is_directory=True)
    (root / "k=2" / "link.parquet").symlink_to(root / "k=1" / "a.parquet")
    expected = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        expected += [os.path.join(folder, n) for n in names if not n.startswith((".", "_"))]
    listed = LocalStorage().walk(str(root))
    assert [e.path for e in listed] == sorted(expected)
    assert len(listed) == 5 and not any("k=3" in e.path for e in listed)
    assert [e.size for e in listed] == [os.stat(p).st_size for p in sorted(expected)]
    head = LocalStorage().read_range(str(root / "top"), 2, 100)  # past the end: what there is
    assert head == (b"top" * 3)[2:]


# --- a listing the flow no longer needs -------------------------------------------------------


def _count_tail_reads(monkeypatch: pytest.MonkeyPatch, after_first=None, pause: float = 0.0) -> list[int]:
    """Count the files whose footers are read (batches of 2, each ``pause`` s long); ``after_first()`` runs after the
    first batch."""
    import time

    from tasks.data import parquet_files
    from tasks.data.storage import LocalStorage

    monkeypatch.setattr(parquet_files, "TAIL_BATCH", 2)
    read_tails, counted = LocalStorage.read_tails, []

    def counting(self, entries, length):
        counted.append(len(entries))
        if after_first is not None and len(counted) == 1:
            after_first()
        time.sleep(pause)
        return read_tails(self, entries, length)

    monkeypatch.setattr(LocalStorage, "read_tails", counting)
    return counted


def test_a_listing_told_to_stop_ends_at_its_next_batch_of_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import threading

    from tasks.data.dataset import read_dataset_files
    from tasks.errors import Stopped

    for i in range(5):
        make_frame(10, i).write_parquet(tmp_path / f"p{i}.parquet")
    stop = threading.Event()
    counted = _count_tail_reads(monkeypatch, after_first=stop.set)
    with pytest.raises(Stopped, match=esc(tmp_path / "p2.parquet") + ".*the flow ended before it needed this listing"):
        read_dataset_files(tmp_path, stop=stop)
    assert counted == [2]  # the first batch only: the other three footers were never read

    counted.clear()
    listing = read_dataset_files(tmp_path, stop=threading.Event())  # never set: the whole listing
    assert counted == [2, 2, 1] and len(listing.files) == 5


def test_the_flows_listing_is_cancelled_when_the_model_fails_first(
    prefect_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import threading

    from flows.listing import listing_in_background

    for i in range(40):
        make_frame(10, i).write_parquet(tmp_path / f"p{i:02}.parquet")
    started = threading.Event()
    # 20 batches of 0.1 s: 2 s for the whole listing, against the moment it takes to stop it
    counted = _count_tail_reads(monkeypatch, after_first=started.set, pause=0.1)
    with pytest.raises(InputError, match="the model does not load"):
        with listing_in_background({"data": str(tmp_path)}) as listing:
            assert started.wait(60)  # the listing is reading footers, as it is while a model loads
            raise InputError("the model does not load")
    listing.wait()  # then .state is its final state, not what the server has heard of so far
    state = listing.state
    assert state.is_cancelled(), state
    assert "the flow ended before it needed this listing" in state.message
    assert sum(counted) < 40  # stopped before it had read every footer

    counted.clear()
    with listing_in_background({"data": str(tmp_path)}) as listing:  # nothing fails: the whole listing
        assert len(listing.result().files) == 40
    assert sum(counted) == 40
