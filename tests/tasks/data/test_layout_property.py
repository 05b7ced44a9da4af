"""Property: whatever the layout, the widths and the clutter, per-partition and overall BCE equal
scikit-learn's ``log_loss`` on the same rows read back independently with pandas (to 1e-9).

Each example writes a small dataset with pyarrow (a flat folder, a hive tree or a two-level hive
tree; files with or without a ``.parquet`` suffix beside ``_SUCCESS``/``.crc``/README clutter;
per-file widths int8/uint8/int32/int64 or boolean labels, int32/int64/uint8 and float32/float64
features, float32/float64 stored probabilities, a text column as string, large_string or pandas'
category; null hive folders; extra columns, shuffled column order, 0-row files, pandas' null-typed
empty files), then evaluates it through the public functions
(``discover_dataset``, ``group_files``, ``reduce_chunk``, ``summarize_records``) twice: with a stored
probability column (``--score-col``) and with a fixed logistic regression (the Polars expression
path).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from tasks.data.dataset import discover_dataset, group_files
from tasks.metrics.reduce import reduce_chunk, summarize_records
from tasks.models.scoring import make_scorer, stored_scorer
from tasks.review.results import with_partition_label

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
FEATURES = ("x", "z")
LABEL_INTS = [pa.int8(), pa.uint8(), pa.int32(), pa.int64()]


def _model() -> LogisticRegression:
    rng = np.random.default_rng(7)
    X = np.column_stack([rng.integers(0, 10, 400), rng.normal(size=400)])
    y = (rng.random(400) < 1 / (1 + np.exp(-(0.3 * X[:, 0] - 1.2 + 0.8 * X[:, 1])))).astype(int)
    return LogisticRegression().fit(X, y)


MODEL = _model()


# --- what a dataset looks like ----------------------------------------------------------------------


@st.composite
def datasets(draw):
    layout = draw(st.sampled_from(["flat", "hive", "hive2"]))
    if layout == "flat":
        partitions = [{}]
    elif layout == "hive":
        values = draw(
            st.lists(st.sampled_from(["north", "south", "New York", "50%", None]), min_size=1, max_size=4, unique=True)
        )
        partitions = [{"region": v} for v in values]
    else:
        combos = [(y, m) for y in ("2024", "2025") for m in ("01", "12", None)]
        chosen = draw(st.lists(st.sampled_from(combos), min_size=1, max_size=4, unique=True))
        partitions = [{"year": y, "month": m} for y, m in chosen]
    bool_labels = draw(st.booleans())
    files = []
    for keys in partitions:
        for _ in range(draw(st.integers(1, 2))):
            empty = bool(files) and draw(st.integers(0, 3)) == 0  # a 0-row file (never the only one)
            files.append(
                dict(
                    keys=keys,
                    rows=0 if empty else draw(st.integers(1, 30)),
                    seed=draw(st.integers(0, 2**31 - 1)),
                    label=pa.bool_() if bool_labels else draw(st.sampled_from(LABEL_INTS)),
                    x=draw(st.sampled_from([pa.uint8(), pa.int32(), pa.int64()])),
                    z=draw(st.sampled_from([pa.float32(), pa.float64()])),
                    p=draw(st.sampled_from([pa.float32(), pa.float64()])),
                    shop=draw(
                        st.sampled_from([pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())])
                    ),
                    extra=draw(st.booleans()),
                    order=draw(st.permutations(["x", "z", "p", "label", "shop"])),
                    pandas_empty=draw(st.booleans()),
                )
            )
    suffix = draw(st.booleans())
    clutter = draw(st.booleans())
    hive_keys = tuple(partitions[0])
    by = draw(st.sampled_from(["default", "shop", "mixed"] if hive_keys else ["default", "shop"]))
    partition_by = {"default": None, "shop": ["shop"], "mixed": [*hive_keys, "shop"]}[by]
    target_rows = draw(st.integers(1, 80))
    return dict(
        files=files,
        suffix=suffix,
        clutter=clutter,
        partition_by=partition_by,
        target_rows=target_rows,
        hive_keys=hive_keys,
    )


def _folder(root: Path, keys: dict) -> Path:
    folder = root
    for k, v in keys.items():
        folder = folder / f"{k}={HIVE_NULL if v is None else quote(v, safe='')}"
    return folder


def write(spec: dict, root: Path) -> list[Path]:
    """Write the dataset; returns the data files (not the clutter)."""
    paths = []
    for i, f in enumerate(spec["files"]):
        folder = _folder(root, f["keys"])
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{i:05d}.parquet" if spec["suffix"] else (f"{i:06d}_0" if f["keys"] else f"part-{i:05d}")
        path = folder / name
        paths.append(path)
        if f["rows"] == 0 and f["pandas_empty"]:
            # what pandas writes for an empty frame: every column of Arrow type null
            pd.DataFrame(columns=list(f["order"])).to_parquet(path)
            continue
        rng = np.random.default_rng(f["seed"])
        n = f["rows"]
        columns = {
            "x": pa.array(rng.integers(0, 10, n)).cast(f["x"]),
            "z": pa.array(rng.normal(size=n)).cast(f["z"]),
            "p": pa.array(rng.uniform(0.01, 0.99, n)).cast(f["p"]),  # kept away from 0/1: no clipping
            "label": pa.array(rng.integers(0, 2, n)).cast(f["label"]),
            "shop": pa.array(rng.choice(["x", "y"], n).astype(object), pa.string()).cast(f["shop"]),
        }
        table = pa.table({c: columns[c] for c in f["order"]})
        if f["extra"]:
            table = table.append_column(f"added_{i}", pa.array(np.arange(n, dtype=np.int64)))
        pq.write_table(table, path)
    if spec["clutter"]:
        (root / "_SUCCESS").write_bytes(b"")
        (root / ".part-00000.crc").write_bytes(b"crc\x00\x01")
        (root / "README.txt").write_text("exported nightly\n")
    return paths


def reference(root: Path, paths: list[Path]) -> pd.DataFrame:
    """The data files read with pandas, hive keys parsed from their paths, widened by concatenation."""
    frames = []
    for path in paths:
        df = pd.read_parquet(path)
        for part in path.relative_to(root).parts[:-1]:
            k, v = part.split("=", 1)
            df[k] = pd.Series([None if v == HIVE_NULL else unquote(v)] * len(df), index=df.index, dtype=object)
        frames.append(df)
    ref = pd.concat(frames, ignore_index=True)
    return ref[ref["label"].notna()]


def _key(values) -> tuple:
    return tuple(None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in values)


# --- the property --------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(datasets())
def test_bce_per_partition_and_overall_equals_sklearn_on_any_layout(spec):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        paths = write(spec, root)
        ref = reference(root, paths)
        ds = discover_dataset(root, "label", list(FEATURES), spec["partition_by"], extra_columns=["p"])
        assert sorted(f.path for f in ds.files) == sorted(map(str, paths))
        assert ds.hive_keys == spec["hive_keys"]
        keys = list(ds.partition_by)
        y = ref["label"].astype(np.int64).to_numpy()
        X = ref[list(FEATURES)].astype(np.float64).to_numpy()
        probabilities = {
            "stored": (stored_scorer("p", "probability"), ref["p"].astype(np.float64).to_numpy()),
            "model": (make_scorer(MODEL, FEATURES), MODEL.predict_proba(X)[:, 1]),
        }
        for name, (scorer, p) in probabilities.items():
            records, hists = [], []
            for chunk in group_files(ds, spec["target_rows"]):
                rec, hist = reduce_chunk(ds, scorer, chunk)
                records.append(rec)
                hists.append(hist)
            table, overall = summarize_records(records, hists, keys)

            assert overall["n_rows"] == len(ref), name
            assert overall["bce"] == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-9), name
            if not keys:
                assert table.height == 1
                continue
            got = {_key(row[:-2]): row[-2:] for row in table.select([*keys, "n_rows", "bce"]).iter_rows()}
            expected = {}
            for values, group in ref.assign(__p=p).groupby(keys, dropna=False, sort=False):
                values = values if isinstance(values, tuple) else (values,)
                expected[_key(values)] = (
                    len(group),
                    log_loss(group["label"].astype(np.int64), group["__p"], labels=[0, 1]),
                )
            assert set(got) == set(expected), (name, sorted(got, key=str), sorted(expected, key=str))
            for key, (n, bce) in expected.items():
                assert got[key][0] == n, (name, key)
                assert got[key][1] == pytest.approx(bce, rel=1e-9), (name, key)
            # a null hive value is a real null in the table, labelled key=null
            labelled = with_partition_label(table, tuple(keys))
            for row in labelled.select([*keys, "partition"]).iter_rows():
                for k, v in zip(keys, row[:-1]):
                    if v is None:
                        assert f"{k}=null" in row[-1].split("/")
