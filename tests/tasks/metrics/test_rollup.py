"""tasks/metrics/rollup.py: each slicing's table, the partition table and the overall row, rolled up from
the finest cross's cells, against pandas groupby + scikit-learn on the same rows; chunks roll up as one."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from tasks.data.dataset import check_dataset, group_files, read_dataset_files
from tasks.data.slicing import finest_cross, parse_slicing
from tasks.metrics.rollup import SLICE_LABEL
from tests.tasks.metrics.test_cells import (
    AGE_EDGES,
    assert_figures,
    bin_label,
    dataset,
    groups,
    run_cells,
    sklearn_figures,
    table_rows,
    write_data,
)

#: a key, a cross, bins (on a float and on an integer column), filters (text, integer), a cross with a filter
SPECS = ("country", "country*device", "age:18,30,65", "device:2", "country=de", "device=2", "device*country=de")
#: the columns of a slicing's table, and how to get them from the rows
BINNED = {"age[18,30,65]": ("age", AGE_EDGES), "device[2]": ("device", (2.0,))}
FILTERS = {"country_de": {"country": "de"}, "device_2": {"device": 2}, "device_x_country_de": {"country": "de"}}


def reference_rows(rows: pl.DataFrame, weighted: bool) -> pl.DataFrame:
    """The rows as the reference sees them: each binned column's bin by hand; weight 1 when unweighted."""
    rows = rows.with_columns(
        pl.Series(name, [bin_label(None if v is None else float(v), edges) for v in rows[column].to_list()])
        for name, (column, edges) in BINNED.items()
    )
    return rows if weighted else rows.with_columns(pl.lit(1.0).alias("w"))


def _slice_label(columns: list[str], key: tuple) -> str:
    return " × ".join(f"{c}={'null' if v is None else v}" for c, v in zip(columns, key))


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
def test_every_slicing_table_equals_pandas_groupby_and_sklearn_per_group(tmp_path, weighted):
    rows = reference_rows(write_data(tmp_path / "data", "hive", seed=31), weighted)
    slicings = [parse_slicing(s) for s in SPECS]
    ds = dataset(tmp_path / "data", "hive", "probability", slicings, weight="w" if weighted else None)
    table, overall, tables = run_cells(ds, "probability", slicings)

    assert list(tables) == [s.key for s in slicings]
    for s in slicings:
        got = tables[s.key]
        columns = s.columns
        kept = rows.filter(*(pl.col(c) == v for c, v in FILTERS.get(s.key, {}).items()))
        expected = groups(kept, columns)
        by_key = table_rows(got, columns)
        assert set(by_key) == set(expected), s.spec
        assert got.height == len(expected)
        for key, sub in expected.items():
            assert by_key[key][SLICE_LABEL] == _slice_label(columns, key)
            assert_figures(by_key[key], sklearn_figures(sub, "probability"), f"{s.spec} {key}")

    # the overall row and the partition table from the same rows
    assert_figures(overall, sklearn_figures(rows, "probability"), "overall")
    by_region = table_rows(table, ["region"])
    for key, sub in groups(rows, ["region"]).items():
        assert_figures(by_region[key], sklearn_figures(sub, "probability"), f"region {key}")
    assert overall["n_partitions"] == table.height == 3


def test_slices_come_in_bin_order_and_values_in_sorted_order_nulls_last(tmp_path):
    write_data(tmp_path / "data", "hive", seed=32)
    slicings = [parse_slicing(s) for s in ("age:18,30,65", "country", "device*country")]
    _, _, tables = run_cells(dataset(tmp_path / "data", "hive", "logit", slicings), "logit", slicings)
    bins = tables["age_18_30_65_"]["age[18,30,65]"].cast(pl.String).to_list()
    assert bins == slicings[0].terms[0].cell.bin_labels()  # not as text ("< 18" < ">= 65" < "[18, 30)" < "null")
    assert bins != sorted(bins)  # the test can tell bin order from text order
    assert tables["country"]["country"].to_list() == ["de", "fr", "it", None]
    pairs = tables["device_x_country"].select("device", "country").rows()
    assert pairs == sorted(pairs, key=lambda r: tuple((v is None, v) for v in r))


@pytest.mark.parametrize("kind", ["probability", "logit"])
def test_records_of_several_chunks_roll_up_to_the_figures_of_one_chunk(tmp_path, kind):
    write_data(tmp_path / "data", "hive", seed=33)
    slicings = [parse_slicing(s) for s in SPECS]
    ds = dataset(tmp_path / "data", "hive", kind, slicings)
    chunks = group_files(ds, 800)
    assert len(chunks) == 3  # one region a chunk: several reduce_chunk calls
    one = run_cells(ds, kind, slicings)
    several = run_cells(ds, kind, slicings, chunks)

    def same(a: pl.DataFrame, b: pl.DataFrame, columns: list[str], where: str) -> None:
        ra, rb = table_rows(a, columns), table_rows(b, columns)
        assert set(ra) == set(rb), where
        for key, row in ra.items():
            for name, value in row.items():
                if isinstance(value, float):
                    assert rb[key][name] == pytest.approx(value, rel=1e-12, abs=1e-15), (where, key, name)
                else:
                    assert rb[key][name] == value, (where, key, name)

    same(one[0], several[0], ["region"], "partitions")
    assert several[1].keys() == one[1].keys()
    for name, value in one[1].items():  # None where a figure is undefined (the costs' without --costs)
        if isinstance(value, dict):  # the reliability diagram's points: lists by name
            assert several[1][name].keys() == value.keys(), name
            assert all(several[1][name][k] == pytest.approx(v, rel=1e-12) for k, v in value.items()), name
            continue
        assert several[1][name] == (value if value is None else pytest.approx(value, rel=1e-12, abs=1e-15)), name
    for s in slicings:
        same(one[2][s.key], several[2][s.key], s.columns, s.spec)


@pytest.mark.parametrize(("layout", "key"), [("hive", "region"), ("column", "shop")])
def test_a_slicing_by_the_partition_key_equals_pandas_per_partition(tmp_path, layout, key):
    """The key is in every record already (check_dataset leaves it out of the cells): its slicings roll up."""
    rows = write_data(tmp_path / "data", layout, seed=34)
    slicings = [parse_slicing(key), parse_slicing(f"{key}*country=de"), parse_slicing(f"{key}*age:30")]
    ds = dataset(tmp_path / "data", layout, "probability", slicings)
    table, _, tables = run_cells(ds, "probability", slicings)
    assert table_rows(tables[key], [key]).keys() == table_rows(table, [key]).keys()
    rows = rows.with_columns(pl.Series("age[30]", [bin_label(a, (30.0,)) for a in rows["age"].to_list()]))
    for s, kept in ((slicings[0], rows), (slicings[1], rows.filter(pl.col("country") == "de")), (slicings[2], rows)):
        got = table_rows(tables[s.key], s.columns)
        expected = groups(kept, s.columns)
        assert set(got) == set(expected), s.spec
        for k, sub in expected.items():
            assert_figures(got[k], sklearn_figures(sub, "probability"), f"{s.spec} {k}")


def _write_grades(root, weights: np.ndarray | None = None) -> pl.DataFrame:
    """Two hive partitions of rows with a float column ``grade`` of few values (0.0, 1.0, 2.0)."""
    rng = np.random.default_rng(35)
    frames = []
    for region in ("eu", "us"):
        n = 300
        p = rng.uniform(0.05, 0.95, n)
        df = pl.DataFrame(
            {
                "p": p,
                "label": (rng.random(n) < p).astype(np.int64),
                "grade": (np.arange(n) % 3).astype(np.float64),
                "w": rng.gamma(2.0, 1.0, n) if weights is None else np.resize(weights, n),
            }
        )
        (root / f"region={region}").mkdir(parents=True)
        df.write_parquet(root / f"region={region}" / "f.parquet")
        frames.append(df)
    return pl.concat(frames)


def _run_grades(root, specs: list[str], weight: str | None):
    slicings = [parse_slicing(s) for s in specs]
    ds = check_dataset(
        read_dataset_files(root), "label", [], extra_columns=["p"], cells=finest_cross(slicings), weight=weight
    )
    return run_cells(ds, "probability", slicings)


def test_a_filter_on_a_float_column_keeps_the_rows_of_that_value(tmp_path):
    rows = _write_grades(tmp_path / "data")
    _, _, tables = _run_grades(tmp_path / "data", ["grade=1"], "w")
    (row,) = tables["grade_1"].to_dicts()
    assert_figures(row, sklearn_figures(rows.filter(pl.col("grade") == 1.0), "probability"), "grade=1")


def test_a_slice_whose_rows_all_weigh_zero_has_no_figures_rather_than_nan(tmp_path):
    _write_grades(tmp_path / "data", weights=np.array([0.0, 1.0, 2.0]))  # grade 0.0 rows weigh 0
    _, overall, tables = _run_grades(tmp_path / "data", ["grade"], "w")
    assert math.isfinite(overall["bce"])  # the run as a whole weighs something
    (zero,) = tables["grade"].filter(pl.col("grade") == 0.0).to_dicts()
    assert zero["n_rows"] == 200  # its rows are counted
    for name in ("bce", "brier", "accuracy", "positive_rate", "mean_predicted"):
        assert zero[name] is None, f"{name} is {zero[name]!r}"
