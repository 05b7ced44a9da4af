"""Parquet as other tools write it, through ``bce-eval evaluate`` (in this process, for speed).

Each case writes its data with the tool that writes it that way (pandas, pyarrow, Polars, or a
Spark/Hive-style tree built by hand), runs the CLI, and either checks the logged figures against
scikit-learn's ``log_loss`` of the logged model on the same rows read back independently with
pandas (overall, per partition, in ``bce_by_partition.json`` and the ``bce_by_partition/...``
metrics, to 1e-9), or checks that it stops with exit 2, one last line naming the file, the column
and the remedy, and no MLflow run.
"""

from __future__ import annotations

import decimal
import json
import re
import uuid
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli_in_process

FEATURES = ["a", "b", "c"]
EXPERIMENT = "layouts"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


# --- running the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli(prefect_server, mlflow_uri, monkeypatch, capsys):
    """``bce-eval evaluate DATA --label label --features a,b,c ARGS`` in this process:
    (exit code, stdout, non-empty stderr lines)."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)

    def run(root: Path, *args: str) -> tuple[int, str, list[str]]:
        return run_cli_in_process(
            [
                "evaluate",
                str(root),
                "--label",
                "label",
                "--features",
                ",".join(FEATURES),
                "--experiment",
                EXPERIMENT,
                *args,
            ],
            capsys,
        )

    return run


def frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """n rows of three float features and a 0/1 int64 label from a noisy logistic model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=shift, size=(n, 3))
    p = 1.0 / (1.0 + np.exp(-(X @ np.array([1.2, -0.8, 0.5]) + 0.1)))
    y = (rng.random(n) < p).astype(np.int64)
    return pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y})


def arrow(df: pd.DataFrame, **types: pa.DataType) -> pa.Table:
    """``df`` as an Arrow table, with the named columns cast to the given types."""
    t = pa.Table.from_pandas(df, preserve_index=False)
    return t.cast(pa.schema([pa.field(c, types.get(c, t.schema.field(c).type)) for c in t.column_names]))


# --- the reference: the files read back with pandas, scored by the logged model -------------------


def hive_keys_of(root: Path, path: Path) -> dict[str, str | None]:
    """``key=value`` folders between root and path (URL-decoded, the hive null folder as None)."""
    keys: dict[str, str | None] = {}
    for part in path.relative_to(root).parts[:-1]:
        if "=" in part:
            k, v = part.split("=", 1)
            keys[unquote(k)] = None if v == HIVE_NULL else unquote(v)
    return keys


def read_reference(root: Path, files: list[Path] | None = None) -> pd.DataFrame:
    """Every data file under ``root`` (default: all ``*.parquet`` not hidden), each with pd.read_parquet,
    with its hive keys from its path; concatenated (missing columns and other widths as pandas does)."""
    if files is None:
        files = sorted(
            p
            for p in root.rglob("*.parquet")
            if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        )
    frames = []
    for path in files:
        df = pd.read_parquet(path)
        for k, v in hive_keys_of(root, path).items():
            df[k] = pd.Series([v] * len(df), dtype=object, index=df.index)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _key(values) -> tuple:
    return tuple(None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in values)


def check_against_sklearn(out: str, ref: pd.DataFrame, keys: tuple[str, ...]) -> dict:
    """The run's overall and per-partition BCE equal log_loss of the logged model on ``ref`` (1e-9).

    Returns the logged ``bce_by_partition.json`` as ``{partition key tuple: row}`` and the run.
    """
    import mlflow
    import mlflow.sklearn
    from sklearn.metrics import log_loss

    from tasks.data.naming import metric_key_suffix

    run_id = out.split("MLflow run ")[1].split()[0]
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    model = mlflow.sklearn.load_model(f"runs:/{run_id}/model")
    X = ref[FEATURES].astype(np.float64).to_numpy()
    y = ref["label"].astype(np.int64).to_numpy()
    p = model.predict_proba(X)[:, 1]
    assert run.data.metrics["n_rows"] == len(ref)
    assert run.data.metrics["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9)

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bce_by_partition.json")
    logged = json.loads(Path(local).read_text())
    cols = logged["columns"]
    table = {}
    for values in logged["data"]:
        row = dict(zip(cols, values))
        table[_key(row[k] for k in keys) if keys else ("all",)] = row
    part_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("bce_by_partition/")}
    if not keys:
        assert set(table) == {("all",)} and not part_metrics
        return {"table": table, "run": run}
    scored = ref.assign(__p=p)
    expected = {}
    for values, group in scored.groupby(list(keys), dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        expected[_key(values)] = group
    assert set(table) == set(expected), (sorted(table, key=str), sorted(expected, key=str))
    assert len(part_metrics) == len(expected)
    for key, group in expected.items():
        row = table[key]
        want = log_loss(group["label"].astype(np.int64), group["__p"], labels=[0, 1])
        assert row["n_rows"] == len(group), key
        assert row["bce"] == pytest.approx(want, rel=1e-9), key
        metric = f"bce_by_partition/{metric_key_suffix(dict(zip(keys, key)))}"
        assert part_metrics[metric] == pytest.approx(want, rel=1e-9), (key, metric)
    return {"table": table, "run": run}


def assert_bad_input(code: int, err: list[str], file: Path, column: str, remedy: str) -> None:
    """Exit 2, and the last stderr line names the file, the column and what to do; no MLflow run."""
    import mlflow

    assert code == 2, err
    last = err[-1]
    assert last.startswith("bce-eval: error: "), err
    assert str(file) in last and f"'{column}'" in last, last
    assert re.search(remedy, last), last
    assert not any("Traceback" in line for line in err)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is None or not client.search_runs([exp.experiment_id]), "a run was created for bad input"


# --- schema evolution -------------------------------------------------------------------------------


def test_pyarrow_files_where_later_files_carry_extra_columns(cli, tmp_path):
    root = tmp_path / "events"
    root.mkdir()
    for i in range(3):
        df = frame(60 + 10 * i, i)
        if i >= 1:
            df["session_len"] = np.arange(len(df), dtype=np.int64)  # added on day 2
        if i == 2:
            df["channel"] = ["web", "app"] * (len(df) // 2)  # and another on day 3
        pq.write_table(arrow(df), root / f"part-{i}.parquet")
    code, out, err = cli(root)
    assert code == 0, "\n".join(err[-5:])
    check_against_sklearn(out, read_reference(root), ())


def test_polars_files_with_columns_in_another_order(cli, tmp_path):
    root = tmp_path / "hive"
    orders = [["a", "b", "c", "label"], ["label", "c", "b", "a"], ["c", "label", "a", "b"]]
    for i, (region, cols) in enumerate(zip(["north", "south", "east"], orders)):
        folder = root / f"region={region}"
        folder.mkdir(parents=True)
        pl.from_pandas(frame(50 + 20 * i, 10 + i)).select(cols).write_parquet(folder / "part-0.parquet")
    code, out, err = cli(root)
    assert code == 0, "\n".join(err[-5:])
    check_against_sklearn(out, read_reference(root), ("region",))


# --- numeric widths that differ between files -----------------------------------------------------


def _integer_a(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(a=np.round(df["a"] * 10).astype(np.int64))


WIDTHS = {
    # column: (type in the first day's file, type in the next day's)
    "int32 and int64 feature": (_integer_a, {"a": pa.int32()}, {"a": pa.int64()}),
    "float32 and float64 feature": (lambda df: df, {"b": pa.float32()}, {"b": pa.float64()}),
    "uint8 label then int64": (lambda df: df, {"label": pa.uint8()}, {"label": pa.int64()}),
}


@pytest.mark.parametrize("case", list(WIDTHS))
def test_widths_that_differ_between_days_are_widened(case, cli, tmp_path):
    prepare, first, second = WIDTHS[case]
    root = tmp_path / "days"
    for i, (day, types) in enumerate([("2024-01-01", first), ("2024-01-02", second), ("2024-01-03", first)]):
        folder = root / f"day={day}"
        folder.mkdir(parents=True)
        pq.write_table(arrow(prepare(frame(50 + 15 * i, 20 + i)), **types), folder / "part-0.parquet")
    assert {pq.read_schema(p).field(c).type for p in root.rglob("*.parquet") for c in first} == {
        *first.values(),
        *second.values(),
    }
    code, out, err = cli(root)
    assert code == 0, "\n".join(err[-5:])
    ref = read_reference(root)
    # pandas widens as the evaluation must: float32 values become the same float64 values
    assert all(ref[c].dtype.kind in "if" and ref[c].dtype.itemsize == 8 for c in [*FEATURES, "label"])
    check_against_sklearn(out, ref, ("day",))


# --- real conflicts: one line naming the file, the column and the remedy --------------------------


CONFLICTS = {
    "boolean label then int64": ("label", {"label": pa.bool_()}, {}, r"one type for this column"),
    "string feature where a number was": ("b", {}, {"b": pa.string()}, r"one type for this column"),
    "differing decimals": ("a", {"a": pa.decimal128(10, 2)}, {"a": pa.decimal128(12, 4)}, r"one type for this column"),
}


@pytest.mark.parametrize("case", list(CONFLICTS))
def test_a_real_type_conflict_stops_with_one_line_and_no_run(case, cli, tmp_path):
    column, first, second, remedy = CONFLICTS[case]
    root = tmp_path / "days"
    paths = []
    for i, types in enumerate([first, second]):
        df = frame(40, 30 + i).round(2)
        if types.get(column) == pa.string():
            df[column] = df[column].astype(str)
        folder = root / f"day=2024-01-0{i + 1}"
        folder.mkdir(parents=True)
        paths.append(folder / "part-0.parquet")
        pq.write_table(arrow(df, **types), paths[-1])
    code, out, err = cli(root)
    assert_bad_input(code, err, paths[1], column, remedy)
    assert str(paths[0]) in err[-1]  # and the file it disagrees with


def test_a_partition_column_of_text_in_one_file_and_numbers_in_another_is_a_conflict(cli, tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    pq.write_table(arrow(frame(40, 1).assign(shop=["x", "y"] * 20)), root / "part-0.parquet")
    pq.write_table(arrow(frame(40, 2).assign(shop=np.arange(40) % 2)), root / "part-1.parquet")
    code, out, err = cli(root, "--partition-by", "shop")
    assert_bad_input(code, err, root / "part-1.parquet", "shop", r"one type for this column")


# --- null hive partitions --------------------------------------------------------------------------


def _with_null_region(n: int = 90) -> pd.DataFrame:
    df = frame(n, 40)
    df["region"] = pd.Series(["north", "south", None] * (n // 3), dtype=object)
    df["shop"] = ["x", "y", "y"] * (n // 3)
    return df


def write_pandas(df: pd.DataFrame, root: Path) -> None:
    df.to_parquet(root, partition_cols=["region"])


def write_pyarrow(df: pd.DataFrame, root: Path) -> None:
    pads.write_dataset(
        pa.Table.from_pandas(df, preserve_index=False),
        root,
        format="parquet",
        partitioning=["region"],
        partitioning_flavor="hive",
    )


def write_polars(df: pd.DataFrame, root: Path) -> None:
    pl.from_pandas(df).write_parquet(root, partition_by="region")


@pytest.mark.parametrize("writer", [write_pandas, write_pyarrow, write_polars], ids=["pandas", "pyarrow", "polars"])
def test_null_hive_partition_is_a_real_null_whichever_way_it_is_chosen(writer, cli, tmp_path):
    root = tmp_path / "by_region"
    writer(_with_null_region(), root)
    assert (root / f"region={HIVE_NULL}").is_dir()
    ref = read_reference(root)
    assert ref["region"].isna().sum() == 30

    # 1. the hive keys by default, 2. chosen explicitly (from the cache of run 1), 3. mixed with a
    # file column (keys read per row by Polars): the null partition is null every time
    for args, keys in [
        ((), ("region",)),
        (("--partition-by", "region"), ("region",)),
        (("--partition-by", "region,shop"), ("region", "shop")),
    ]:
        code, out, err = cli(root, *args)
        assert code == 0, (args, err)
        logged = check_against_sklearn(out, ref, keys)
        null_rows = [row for key, row in logged["table"].items() if key[0] is None]
        assert null_rows and all(row["region"] is None for row in null_rows)  # JSON null, not "None"/"null"
        assert "region=null" in out  # the partition's label in the summary
        assert not any("None" in k for k in logged["run"].data.metrics)
        assert sum(k.startswith("bce_by_partition/region_null") for k in logged["run"].data.metrics) == len(null_rows)
        if args == ("--partition-by", "region"):
            assert logged["run"].data.metrics["partitions_reused"] == 3


# --- files without a .parquet suffix --------------------------------------------------------------


def test_hive_folder_of_files_without_suffix(cli, tmp_path):
    root = tmp_path / "warehouse" / "events"
    files = []
    for i, day in enumerate(["2024-01-01", "2024-01-02"]):
        folder = root / f"dt={day}"
        folder.mkdir(parents=True)
        for j in range(2):
            files.append(folder / f"00000{j}_0")
            pq.write_table(arrow(frame(35 + 10 * j, 50 + 2 * i + j)), files[-1])
    staging = root / ".hive-staging_hive_2024-01-03_00-00-00_000_1" / "-ext-10000"
    staging.mkdir(parents=True)
    pq.write_table(arrow(frame(17, 59)), staging / "000000_0")  # a query still writing: not data yet
    code, out, err = cli(root)
    assert code == 0, "\n".join(err[-5:])
    check_against_sklearn(out, read_reference(root, files), ("dt",))


def _spark_tree(root: Path) -> list[Path]:
    root.mkdir(parents=True)
    run = uuid.uuid4()
    data = [root / f"part-00000-{run}.c000.snappy.parquet", root / "part-00001"]
    pq.write_table(arrow(frame(70, 60)), data[0], compression="snappy")
    pq.write_table(arrow(frame(45, 61)), data[1], compression="snappy")
    (root / "_SUCCESS").write_bytes(b"")
    (root / f".part-00000-{run}.c000.snappy.parquet.crc").write_bytes(b"crc\x00\x00\x00\x01\x9a\x1f")
    (root / ".part-00001.crc").write_bytes(b"crc\x00\x00\x00\x01\x22\x07")
    (root / "README.txt").write_text("Exported by the nightly Spark job; see the wiki.\n")
    (root / "_temporary" / "0").mkdir(parents=True)
    pq.write_table(arrow(frame(13, 62)), root / "_temporary" / "0" / "part-00002.parquet")  # an unfinished task
    return data


def test_spark_style_tree_with_markers_checksums_and_a_readme(cli, tmp_path):
    root = tmp_path / "export"
    data = _spark_tree(root)
    code, out, err = cli(root)
    assert code == 0, "\n".join(err[-5:])
    check_against_sklearn(out, read_reference(root, data), ())


def test_truncated_file_without_suffix_is_reported_not_skipped(cli, tmp_path):
    root = tmp_path / "export"
    _spark_tree(root)
    whole = (root / "part-00001").read_bytes()
    (root / "part-00003").write_bytes(whole[: len(whole) // 2])  # starts like Parquet, footer cut off
    code, out, err = cli(root)
    assert code == 2, err
    assert err[-1].startswith(f"bce-eval: error: {root / 'part-00003'}: not a readable Parquet file"), err
    assert "truncated" in err[-1]


# --- layouts that keep working ----------------------------------------------------------------------


def test_url_encoded_hive_values_alone_and_mixed_with_a_column(cli, tmp_path):
    root = tmp_path / "cities"
    for i, city in enumerate(["New York", "São Paulo", "a/b?c=d", "50%"]):
        folder = root / f"city={quote(city, safe='')}"
        folder.mkdir(parents=True)
        pq.write_table(arrow(frame(40, 70 + i).assign(shop=["x", "y"] * 20)), folder / "part-0.parquet")
    assert (root / "city=New%20York").is_dir()
    ref = read_reference(root)
    assert set(ref["city"]) == {"New York", "São Paulo", "a/b?c=d", "50%"}
    for args, keys in [((), ("city",)), (("--partition-by", "city,shop"), ("city", "shop"))]:
        code, out, err = cli(root, *args)
        assert code == 0, "\n".join(err[-5:])
        logged = check_against_sklearn(out, ref, keys)
        assert {key[0] for key in logged["table"]} == set(ref["city"])


def write_pyarrow_two_level(df: pd.DataFrame, root: Path) -> None:
    pads.write_dataset(
        pa.Table.from_pandas(df, preserve_index=False),
        root,
        format="parquet",
        partitioning=["year", "month"],
        partitioning_flavor="hive",
    )


def test_two_level_hive_tree_with_a_null_month(cli, tmp_path):
    root = tmp_path / "ym"
    df = frame(120, 80)
    df["year"] = ["2024"] * 60 + ["2025"] * 60
    df["month"] = pd.Series((["01", "02", None] * 40), dtype=object)
    write_pyarrow_two_level(df, root)
    assert (root / "year=2024" / "month=01").is_dir() and (root / "year=2025" / f"month={HIVE_NULL}").is_dir()
    code, out, err = cli(root)
    assert code == 0, "\n".join(err[-5:])
    logged = check_against_sklearn(out, read_reference(root), ("year", "month"))
    assert ("2025", None) in logged["table"] and "year=2025/month=null" in out


def test_decimal_feature_and_dictionary_encoded_columns(cli, tmp_path):
    root = tmp_path / "typed"
    root.mkdir()
    for i in range(2):
        df = frame(60, 90 + i)
        df["shop"] = pd.Categorical(["x", "y", "z"] * 20)  # an Arrow dictionary column
        t = pa.Table.from_pandas(df, preserve_index=False)
        t = t.set_column(1, "b", pa.array([decimal.Decimal(f"{v:.3f}") for v in df["b"]], pa.decimal128(9, 3)))
        pq.write_table(t, root / f"part-{i}.parquet", use_dictionary=True)
    schema = pq.read_schema(root / "part-0.parquet")
    assert pa.types.is_decimal(schema.field("b").type) and pa.types.is_dictionary(schema.field("shop").type)
    assert "RLE_DICTIONARY" in str(pq.ParquetFile(root / "part-0.parquet").metadata.row_group(0).column(0).encodings)
    ref = read_reference(root)
    ref["b"] = ref["b"].astype(np.float64)  # Decimal('0.123') -> 0.123
    ref["shop"] = ref["shop"].astype(str)
    code, out, err = cli(root, "--partition-by", "shop")
    assert code == 0, "\n".join(err[-5:])
    check_against_sklearn(out, ref, ("shop",))


def test_an_empty_file_among_others(cli, tmp_path):
    root = tmp_path / "with_empty"
    for region, n in [("north", 70), ("south", 0), ("east", 55)]:
        folder = root / f"region={region}"
        folder.mkdir(parents=True)
        pl.from_pandas(frame(max(n, 1), 100 + n)).head(n).write_parquet(folder / "part-0.parquet")
    pl.from_pandas(frame(5, 7)).head(0).write_parquet(root / "region=north" / "part-1.parquet")
    # pandas writes an empty frame's columns with Arrow type null
    pd.DataFrame(columns=[*FEATURES, "label"]).to_parquet(root / "region=east" / "part-1.parquet")
    assert pq.read_schema(root / "region=east" / "part-1.parquet").field("a").type == pa.null()
    code, out, err = cli(root)
    assert code == 0, "\n".join(err[-5:])
    ref = read_reference(root)
    ref = ref[ref["label"].notna()]
    logged = check_against_sklearn(out, ref, ("region",))
    assert ("south",) not in logged["table"]  # no rows, no partition


def test_partition_column_widths_and_category_vs_text_differ_between_files(cli, tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    pq.write_table(
        arrow(frame(50, 110).assign(day=np.arange(50) % 3, shop=pd.Categorical(["x", "y"] * 25))),
        root / "part-0.parquet",
    )
    pq.write_table(
        arrow(frame(40, 111).assign(day=np.arange(40) % 2, shop=["y", "z"] * 20), day=pa.int32()),
        root / "part-1.parquet",
    )
    code, out, err = cli(root, "--partition-by", "day,shop")
    assert code == 0, "\n".join(err[-5:])
    ref = read_reference(root)
    ref["shop"] = ref["shop"].astype(str)
    check_against_sklearn(out, ref, ("day", "shop"))
