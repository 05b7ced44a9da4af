"""tasks/data/column_types.py: how a column's widths widen across files (checked against pyarrow's own
permissive schema unification, what pyarrow.dataset reads a dataset of such files with), which mixes
are refused, and which column types a feature, score or label may have."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tasks.data.column_types import check_columns, polars_type, unified_type
from tasks.data.dataset import discover_dataset, scan_files
from tasks.errors import InputError


def _pyarrow_widened(*types: pa.DataType) -> pa.DataType:
    """The type pyarrow unifies the column ``x`` of files of these types to (permissive promotion)."""
    schemas = [pa.schema([pa.field("x", t)]) for t in types]
    return pa.unify_schemas(schemas, promote_options="permissive").field("x").type


@pytest.mark.parametrize(
    "types",
    [
        (pa.int32(), pa.int64()),
        (pa.int8(), pa.uint32()),
        (pa.float32(), pa.float64()),
        (pa.int32(), pa.float32()),
        (pa.int64(), pa.float64()),
        (pa.null(), pa.int32()),
        (pa.null(), pa.float32()),
    ],
    ids=str,
)
def test_widths_widen_as_pyarrow_unifies_them(types):
    seen = {t: f"file-{i}.parquet" for i, t in enumerate(types)}
    assert unified_type("x", seen, "feature") == polars_type(_pyarrow_widened(*types))


def test_narrow_integers_widen_to_int64_which_holds_what_pyarrow_widens_them_to():
    seen = {pa.int8(): "a.parquet", pa.int16(): "b.parquet", pa.int32(): "c.parquet"}
    assert _pyarrow_widened(*seen) == pa.int32()
    assert unified_type("x", seen, "feature") == pl.Int64  # the docstring's rule: integers of any width to Int64


def test_one_type_in_every_file_needs_no_cast():
    assert unified_type("x", {pa.int32(): "a.parquet"}, "feature") is None
    assert unified_type("x", {pa.null(): "a.parquet"}, "feature") is None  # nothing to take the type of


def test_uint64_beside_signed_integers_is_read_as_float64_not_wrapped_into_int64():
    # pyarrow's permissive promotion gives int64, where 2**63 and above wrap; float64 keeps their magnitude
    assert _pyarrow_widened(pa.int64(), pa.uint64()) == pa.int64()
    assert unified_type("x", {pa.int64(): "a.parquet", pa.uint64(): "b.parquet"}, "feature") == pl.Float64


def test_text_partition_columns_of_any_string_type_are_read_as_text():
    seen = {
        pa.string(): "a.parquet",
        pa.large_string(): "b.parquet",
        pa.dictionary(pa.int32(), pa.string()): "c.parquet",
    }
    assert unified_type("region", seen, "partition") == pl.String
    with pytest.raises(InputError):  # the same mix of text types is not a number
        unified_type("region", seen, "feature")


@pytest.mark.parametrize(
    "first, second",
    [
        (pa.int64(), pa.string()),
        (pa.bool_(), pa.int64()),
        (pa.float64(), pa.decimal128(10, 2)),
        (pa.string(), pa.float64()),
    ],
    ids=str,
)
def test_a_real_conflict_names_both_files_and_the_column(first, second):
    seen = {first: "/data/day=1/a.parquet", second: "/data/day=2/b.parquet"}
    with pytest.raises(InputError) as err:
        unified_type("amount", seen, "feature")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("/data/day=2/b.parquet: feature column 'amount'")
    assert f"is {second} but /data/day=1/a.parquet has {first}" in message
    assert "Rewrite the files with one type" in message


def _write(path: Path, x: pa.Array, y: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": x, "label": pa.array(y, pa.int64())}), path)


@pytest.mark.parametrize(
    "first, second, polars_dtype",
    [
        (pa.int32(), pa.int64(), pl.Int64),
        (pa.float32(), pa.float64(), pl.Float64),
        (pa.int32(), pa.float64(), pl.Float64),
    ],
    ids=str,
)
def test_a_dataset_of_mixed_widths_reads_as_pyarrow_dataset_reads_it(tmp_path: Path, first, second, polars_dtype):
    rng = np.random.default_rng(3)
    big = 2**40 if pa.types.is_integer(second) else 1.5e300  # does not fit the first file's type
    x1 = rng.integers(-1000, 1000, 40).astype(first.to_pandas_dtype())
    x2 = np.append(rng.integers(-1000, 1000, 39), 0).astype(second.to_pandas_dtype())
    x2[-1] = big
    _write(tmp_path / "a.parquet", pa.array(x1, first), list(rng.integers(0, 2, 40)))
    _write(tmp_path / "b.parquet", pa.array(x2, second), list(rng.integers(0, 2, 40)))

    dataset = discover_dataset(tmp_path, "label", ["x"])
    got = scan_files(dataset).collect()

    files = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    schemas = [pq.read_schema(f) for f in files]
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    reference = pl.from_arrow(pads.dataset(files, schema=unified, format="parquet").to_table())
    assert got.schema["x"] == polars_dtype == reference.schema["x"]
    assert got.get_column("x").to_list() == reference.get_column("x").to_list()
    assert got.get_column("x").to_list()[-1] == big
    assert dict(dataset.scan_schema)["x"] == polars_dtype


def test_a_dataset_whose_files_disagree_names_both_files_in_one_line(tmp_path: Path):
    _write(tmp_path / "day=1" / "part-0.parquet", pa.array([1, 2], pa.int64()), [0, 1])
    _write(tmp_path / "day=2" / "part-0.parquet", pa.array(["1", "2"], pa.string()), [0, 1])
    with pytest.raises(InputError) as err:
        discover_dataset(tmp_path, "label", ["x"])
    message = str(err.value)
    assert "\n" not in message
    first, second = tmp_path / "day=1" / "part-0.parquet", tmp_path / "day=2" / "part-0.parquet"
    assert re.search(
        rf"^{re.escape(str(second))}: feature column 'x' is string but {re.escape(str(first))} has int64", message
    )


# --- check_columns: which types a feature, score and label may have ------------------------------

SCHEMA = pa.schema(
    [
        ("f", pa.float32()),
        ("n", pa.int16()),
        ("flag", pa.bool_()),
        ("name", pa.string()),
        ("label", pa.int8()),
        ("p", pa.float64()),
    ]
)


def test_numeric_and_boolean_features_pass_and_no_feature_is_text():
    assert check_columns("a.parquet", SCHEMA, (), "label", ("f", "n", "flag"), ("p",), ()) == ()


def test_text_where_a_number_is_expected_names_the_file_the_column_and_its_type():
    with pytest.raises(InputError) as err:
        check_columns("/d/a.parquet", SCHEMA, (), "label", ("f", "name"), (), ())
    assert str(err.value).startswith("/d/a.parquet: feature column 'name' has type string, not numeric;")
    with pytest.raises(InputError, match=r"^/d/a.parquet: feature column 'name' has type string, not numeric"):
        check_columns("/d/a.parquet", SCHEMA, (), "label", ("f",), ("name",), ())  # a score column too


def test_a_hive_key_is_text_and_cannot_be_a_numeric_feature():
    with pytest.raises(InputError, match=r"^'region' is a hive partition key \(text\)"):
        check_columns("a.parquet", SCHEMA, ("region",), "label", ("f", "region"), (), ())


def test_a_text_feature_passes_when_the_models_signature_takes_a_string_there():
    got = check_columns(
        "a.parquet",
        SCHEMA,
        ("region",),
        "label",
        ("f", "name", "region"),
        (),
        (),
        {"f": "double", "name": "string", "region": "string"},
        "m",
    )
    assert got == ("name", "region")
    with pytest.raises(
        InputError, match=r"^a.parquet: feature column 'name' has type string, but model m takes double there"
    ):
        check_columns("a.parquet", SCHEMA, (), "label", ("name",), (), (), {"name": "double"}, "m")


def test_a_float_column_for_an_integer_input_of_the_model_is_refused():
    check_columns("a.parquet", SCHEMA, (), "label", ("n",), (), (), {"n": "long"}, "m")  # int16 feeds long
    with pytest.raises(InputError, match=r"feature column 'f' has type float, but model m takes long there"):
        check_columns("a.parquet", SCHEMA, (), "label", ("f",), (), (), {"f": "long"}, "m")


def test_a_text_label_and_a_missing_column_are_refused():
    with pytest.raises(InputError, match=r"^a.parquet: label column 'name' has type string; labels must be 0/1"):
        check_columns("a.parquet", SCHEMA, (), "name", ("f",), (), ())
    with pytest.raises(InputError, match=r"^a.parquet: no feature column 'g' \(model m needs it\); columns are \["):
        check_columns("a.parquet", SCHEMA, (), "label", ("g",), (), (), None, "m")
    with pytest.raises(InputError, match=r"column 'label' is both the label and a feature"):
        check_columns("a.parquet", SCHEMA, (), "label", ("label",), (), ())
