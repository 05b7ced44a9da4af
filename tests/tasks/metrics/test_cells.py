"""tasks/metrics/cells.py and cell_kernel.py: cell numbers stable across batches, weighted figures per
cell, slice and overall against scikit-learn with sample weights, thread counts, bad weights and too many
cells."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.special import expit
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    d2_brier_score,
    d2_log_loss_score,
    log_loss,
    roc_auc_score,
)

from tasks.data.dataset import Dataset, check_dataset, read_dataset_files
from tasks.data.slicing import CellColumn, Slicing, finest_cross, parse_slicing
from tasks.errors import InputError
from tasks.metrics import cells as cells_module
from tasks.metrics import schema as metrics_schema
from tasks.metrics.cell_kernel import histogram_rows, sum_cells
from tasks.metrics.cells import MAX_CELLS, CellIndex
from tasks.metrics.kernels import HIST_BINS, STATS
from tasks.metrics.lanes import terms
from tasks.metrics.reduce import reduce_chunk, summarize_records
from tasks.metrics.rollup import summarize_cells
from tasks.models.scoring import stored_scorer
from tests.conftest import REPO

#: rows of each file of each hive partition (several files of different sizes)
FILE_ROWS = {"eu": (700, 300), "us": (500, 450), "apac": (260,)}
SHOPS = ["a", "b", "c", "d"]
COUNTRIES = ["de", "fr", "it", None]
AGE_EDGES = (18.0, 30.0, 65.0)


# --- data and an independent reference -------------------------------------------------------------


def random_rows(rng: np.random.Generator, n: int, weights: str = "gamma") -> pl.DataFrame:
    """n rows: a logit z and its probability p, a label drawn from p, a weight w, and slice columns (country
    with nulls; age with NaN and nulls; device an integer with nulls; shop a partition column in the file)."""
    z = rng.normal(size=n) * 2.0
    p = expit(z)
    age = rng.uniform(0.0, 90.0, n).tolist()
    for i in np.flatnonzero(rng.random(n) < 0.15):
        age[i] = None if i % 2 else float("nan")
    device = [None if r < 0.1 else int(d) for r, d in zip(rng.random(n), rng.integers(1, 4, n))]
    if weights == "gamma":  # some rows weigh nothing
        w = np.where(rng.random(n) < 0.1, 0.0, rng.gamma(2.0, 1.0, n))
    elif weights == "ones":
        w = np.ones(n)
    else:  # 0 or 1
        w = (rng.random(n) < 0.7).astype(np.float64)
    return pl.DataFrame(
        {
            "z": z,
            "p": p,
            "label": (rng.random(n) < p).astype(np.int64),
            "w": w,
            "country": [COUNTRIES[k] for k in rng.integers(0, len(COUNTRIES), n)],
            "age": pl.Series(age, dtype=pl.Float64),
            "device": pl.Series(device, dtype=pl.Int64),
            "shop": [SHOPS[k] for k in rng.integers(0, len(SHOPS), n)],
        }
    )


def write_data(root: Path, layout: str, seed: int, weights: str = "gamma") -> pl.DataFrame:
    """Write the files (hive folders ``region=…``, or flat files holding the ``shop`` partition column) and
    return every row as written, with its partition column."""
    rng = np.random.default_rng(seed)
    frames = []
    for region, sizes in FILE_ROWS.items():
        for i, n in enumerate(sizes):
            df = random_rows(rng, n, weights)
            if layout == "hive":
                folder = root / f"region={region}"
                folder.mkdir(parents=True, exist_ok=True)
                df.write_parquet(folder / f"part-{i}.parquet")
                frames.append(df.with_columns(pl.lit(region).alias("region")))
            else:
                root.mkdir(parents=True, exist_ok=True)
                df.write_parquet(root / f"{region}-{i}.parquet")
                frames.append(df)
    return pl.concat(frames)


def dataset(
    root: Path,
    layout: str,
    kind: str,
    slicings: list[Slicing] | tuple[Slicing, ...] = (),
    weight: str | None = "w",
) -> Dataset:
    """The dataset as the flows build it: partitions by hive folder or by the ``shop`` column."""
    score = "p" if kind == "probability" else "z"
    return check_dataset(
        read_dataset_files(root),
        "label",
        [],
        partition_by=["shop"] if layout == "column" else None,
        extra_columns=[score],
        cells=finest_cross(slicings),
        weight=weight,
    )


def scorer_for(kind: str):
    return stored_scorer("p" if kind == "probability" else "z", kind)


def run_cells(ds: Dataset, kind: str, slicings, chunks: list | None = None):
    """reduce_chunk over ``chunks`` (default: one) and summarize_cells: (partition table, overall, tables)."""
    records, hists = zip(*(reduce_chunk(ds, scorer_for(kind), c) for c in (chunks or [list(ds.files)])))
    return summarize_cells(list(records), list(hists), ds.partition_by, slicings)


def bin_label(x: float | None, edges: tuple[float, ...]) -> str:
    """The bin of x by hand: left-closed bins between the edges, NaN and null in the null bin."""
    if x is None or math.isnan(x):
        return "null"
    below = sum(1 for e in edges if x >= e)
    if below == 0:
        return f"< {edges[0]:g}"
    if below == len(edges):
        return f">= {edges[-1]:g}"
    return f"[{edges[below - 1]:g}, {edges[below]:g})"


def probabilities(rows: pl.DataFrame, kind: str) -> np.ndarray:
    """The predicted probability of class 1 (scipy's expit of the logit for logit scores)."""
    return rows["p"].to_numpy() if kind == "probability" else expit(rows["z"].to_numpy())


def row_losses(rows: pl.DataFrame, kind: str) -> np.ndarray:
    """Each row's loss, by hand (math.log / log1p row by row)."""
    y = rows["label"].to_list()
    if kind == "logit":
        return np.array([max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z))) for z, t in zip(rows["z"].to_list(), y)])
    eps = np.finfo(np.float64).eps
    p = [min(max(v, eps), 1.0 - eps) for v in rows["p"].to_list()]
    return np.array([-math.log(v) if t == 1 else -math.log1p(-v) for v, t in zip(p, y)])


def sklearn_figures(rows: pl.DataFrame, kind: str) -> dict[str, float]:
    """Every figure of ``rows`` from scikit-learn with sample weights (and the weighted base rate by hand)."""
    y, w, p = rows["label"].to_numpy(), rows["w"].to_numpy(), probabilities(rows, kind)
    base = float(np.sum(w * y) / np.sum(w))
    entropy = -base * math.log(base) - (1 - base) * math.log(1 - base)
    bce = log_loss(y, p, sample_weight=w, labels=[0, 1])
    out = {
        "n_rows": len(y),
        "n_pos": int(y.sum()),
        "bce": bce,
        "brier": brier_score_loss(y, p, sample_weight=w, labels=[0, 1]),
        "accuracy": accuracy_score(y, (p > 0.5).astype(np.int64), sample_weight=w),
        "positive_rate": base,
        "normalized_entropy": bce / entropy,
        "mean_predicted": float(np.sum(w * p) / np.sum(w)),
    }
    if 0 < y.sum() < len(y):
        out["d2_log_loss"] = d2_log_loss_score(y, p, sample_weight=w)
        out["d2_brier"] = d2_brier_score(y, p, sample_weight=w)
        out["roc_auc"] = roc_auc_score(y, p, sample_weight=w)
    return out


def assert_figures(got: dict, want: dict[str, float], where: str, rel: float = 1e-12) -> None:
    """Each figure within ``rel`` (relative) of the reference; ROC AUC within its stated bound."""
    for name, value in want.items():
        if name == "roc_auc":
            assert got["roc_auc_bound"] < 0.01, where
            assert abs(got["roc_auc"] - value) <= got["roc_auc_bound"] + 1e-12, f"{where}: roc_auc"
        elif name.startswith("n_"):
            assert got[name] == value, f"{where}: {name}"
        else:
            assert got[name] == pytest.approx(value, rel=rel, abs=1e-15), f"{where}: {name}"


def groups(rows: pl.DataFrame, columns: list[str]) -> dict[tuple, pl.DataFrame]:
    """The rows of each combination of values of ``columns`` (pandas groupby, nulls a group of their own)."""
    frame = rows.with_row_index("__i").to_pandas()
    out = {}
    for _, sub in frame.groupby(columns, dropna=False, sort=False):
        group = rows[sub["__i"].to_numpy()]
        out[tuple(group[c][0] for c in columns)] = group  # the values as written (pandas makes a nullable int float)
    return out


def table_rows(table: pl.DataFrame, columns: list[str]) -> dict[tuple, dict]:
    """A table's rows by their key columns (Enum bins as text)."""
    out = {}
    for row in table.with_columns(pl.col(c).cast(pl.String) for c in columns if table.schema[c] == pl.Enum).to_dicts():
        out[tuple(row[c] for c in columns)] = row
    return out


# --- CellIndex: numbers stable across batches ---------------------------------------------------------

_CROSS = (CellColumn("country"), CellColumn("device"), CellColumn("flag"), CellColumn("age", AGE_EDGES))


def _index_batches(seed: int) -> list[tuple[np.ndarray, pl.DataFrame]]:
    """Batches whose values come in different orders; nulls, new values and the null bin appear late."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(6):
        n = int(rng.integers(40, 120))
        countries = ["de", "fr"] + (["it"] if b >= 2 else []) + ([None] if b >= 3 else []) + (["zz"] if b == 5 else [])
        devices = [3, 1] + ([None] if b >= 1 else []) + ([99] if b >= 4 else [])
        flags = [True] + ([False] if b >= 1 else []) + ([None] if b >= 4 else [])
        age = rng.uniform(0.0, 90.0, n).tolist()
        age[: n // 5] = [None, float("nan"), 18.0, 30.0, 65.0, float("inf"), -float("inf")] * (n // 35) + [None] * (
            n // 5 - 7 * (n // 35)
        )
        if b < 2:  # no null bin at first
            age = [a if a is not None and not math.isnan(a) else 40.0 for a in age]
        frame = pl.DataFrame(
            {
                "country": pl.Series([countries[k] for k in rng.integers(0, len(countries), n)], dtype=pl.String),
                "device": pl.Series([devices[k] for k in rng.integers(0, len(devices), n)], dtype=pl.Int64),
                "flag": pl.Series([flags[k] for k in rng.integers(0, len(flags), n)], dtype=pl.Boolean),
                "age": pl.Series(age, dtype=pl.Float64),
            }
        ).sample(fraction=1.0, shuffle=True, seed=b)
        out.append((rng.integers(0, 3 + b, n).astype(np.int64), frame))  # partitions too appear late
    return out


def _check_numbering(index: CellIndex, batches, ids: list[np.ndarray], cross: tuple[CellColumn, ...]) -> None:
    """One number per (partition, values), one (partition, values) per number; the index's frame says which."""
    key_of: dict[int, tuple] = {}
    id_of: dict[tuple, int] = {}
    for (parts, frame), numbers in zip(batches, ids):
        for part, row, n in zip(parts.tolist(), frame.iter_rows(named=True), numbers.tolist()):
            values = tuple(bin_label(row[c.column], c.edges) if c.edges else row[c.column] for c in cross)
            key = (part, *values)
            assert key_of.setdefault(n, key) == key, f"cell {n} holds {key_of[n]} and {key}"
            assert id_of.setdefault(key, n) == n, f"{key} has numbers {id_of[key]} and {n}"
    assert len(index) == len(id_of) == len(key_of)
    frame = index.frame().with_columns(pl.col(c.name).cast(pl.String) for c in cross if c.edges)
    for n, row in enumerate(frame.iter_rows()):
        assert row == key_of[n]


def test_the_same_partition_and_values_get_the_same_number_in_every_batch():
    batches = _index_batches(seed=5)
    index = CellIndex(_CROSS)
    ids = [index.ids(parts, frame) for parts, frame in batches]
    _check_numbering(index, batches, ids, _CROSS)
    # the late values did reach the index (the test saw them)
    values = index.frame()
    assert {"zz", None} <= set(values["country"].to_list())
    assert {99, None} <= set(values["device"].to_list()) and None in values["flag"].to_list()
    assert set(values["age[18,30,65]"].cast(pl.String).to_list()) == {"< 18", "[18, 30)", "[30, 65)", ">= 65", "null"}


def test_a_batch_seen_again_gets_the_numbers_it_got_first():
    batches = _index_batches(seed=8)
    index = CellIndex(_CROSS)
    first = [index.ids(parts, frame) for parts, frame in batches]
    cells = len(index)
    again = [index.ids(parts, frame) for parts, frame in reversed(batches)]
    assert len(index) == cells
    assert all(np.array_equal(a, b) for a, b in zip(first, reversed(again)))


def _wide_batches() -> list[tuple[np.ndarray, pl.DataFrame]]:
    """Few partitions and values first (a small packed key), then 300 partitions × 1,100 values."""
    rng = np.random.default_rng(11)
    out = []
    for parts, values, n in ((4, 10, 300), (300, 1_100, 4_000), (300, 1_100, 4_000)):
        frame = pl.DataFrame({"item": [f"v{k}" for k in rng.integers(0, values, n)], "age": rng.uniform(0, 90, n)})
        out.append((rng.integers(0, parts, n).astype(np.int64), frame))
    return out


def test_wide_keys_take_the_sort_and_agree_with_the_lookup_table(monkeypatch):
    cross = (CellColumn("item"), CellColumn("age", AGE_EDGES))
    batches = _wide_batches()
    wide = CellIndex(cross)
    wide_ids = [wide.ids(parts, frame) for parts, frame in batches]
    # 300 partitions (9 bits) × 1,100 values (11 bits) × 5 bins (3 bits): 23 bits, more than _TABLE_BITS
    assert wide._table.size == 0, "the test meant to take the np.unique path"
    _check_numbering(wide, batches, wide_ids, cross)
    monkeypatch.setattr(cells_module, "_TABLE_BITS", 23)  # the same keys through a lookup table (64 MB)
    table = CellIndex(cross)
    table_ids = [table.ids(parts, frame) for parts, frame in batches]
    assert table._table.size > 0
    assert all(np.array_equal(a, b) for a, b in zip(wide_ids, table_ids))
    assert table.cells == wide.cells


def test_small_keys_through_the_sort_number_cells_as_the_table_does(monkeypatch):
    batches = _index_batches(seed=3)
    table = CellIndex(_CROSS)
    table_ids = [table.ids(parts, frame) for parts, frame in batches]
    monkeypatch.setattr(cells_module, "_TABLE_BITS", 0)
    wide = CellIndex(_CROSS)
    wide_ids = [wide.ids(parts, frame) for parts, frame in batches]
    assert wide._table.size == 0
    assert all(np.array_equal(a, b) for a, b in zip(table_ids, wide_ids))
    _check_numbering(wide, batches, wide_ids, _CROSS)


def test_a_float_column_by_value_with_nan_gets_one_cell_for_nan_across_batches():
    index = CellIndex((CellColumn("score"),))
    batch = pl.DataFrame({"score": [1.0, float("nan"), None, 0.5]})
    first = index.ids(np.zeros(4, np.int64), batch)
    second = index.ids(np.zeros(4, np.int64), batch)
    assert np.array_equal(first, second) and len(index) == len(set(first.tolist()))


# --- the compiled loop, against numpy ---------------------------------------------------------------


@pytest.mark.parametrize("logit", [True, False], ids=["logit", "probability"])
def test_sum_cells_and_histogram_rows_equal_numpy_per_cell(logit):
    rng = np.random.default_rng(40)
    n, n_cells = 5_000, 7
    z = rng.normal(size=n) * 3.0
    s = z if logit else expit(z)
    y = (rng.random(n) < expit(z)).astype(np.float64)
    w = np.where(rng.random(n) < 0.1, 0.0, rng.gamma(2.0, 1.0, n))
    cell = rng.integers(0, n_cells, n).astype(np.int64)
    a, b = np.empty_like(s), np.empty_like(s)
    terms(s, a, b, logit)
    acc, hist = np.zeros((n_cells, len(STATS))), np.zeros((n_cells, HIST_BINS, 3))
    assert sum_cells(s, a, b, y, w, cell, logit, acc, hist, np.empty(0, np.int32), np.empty(0)) == 0.0
    hist_n, hist_pos, hist_p = hist[:, :, 0], hist[:, :, 1], hist[:, :, 2]

    p = expit(z)
    frame = pl.DataFrame({"label": y.astype(np.int64), "z": z, "p": p, "w": w})
    loss = row_losses(frame, "logit" if logit else "probability")
    correct = ((z > 0) if logit else (p > 0.5)) == (y == 1)
    by_bin = np.minimum((p * HIST_BINS).astype(np.int64), HIST_BINS - 1)
    for c in range(n_cells):
        m = cell == c
        row = dict(zip(STATS, acc[c]))
        wc, yc = w[m], y[m]
        assert (row["n_rows"], row["n_pos"], row["n_neg"]) == (m.sum(), yc.sum(), m.sum() - yc.sum())
        for name, want in (
            ("sum_w", wc),
            ("sum_w_sq", wc * wc),
            ("sum_w_pos", wc * yc),
            ("sum_loss", wc * loss[m]),
            ("sum_loss_sq", wc * loss[m] ** 2),
            ("sum_loss_pos", wc * loss[m] * yc),
            ("sum_correct", wc * correct[m]),
            ("sum_brier", wc * (p[m] - yc) ** 2),
            ("sum_p", wc * p[m]),
        ):
            assert row[name] == pytest.approx(math.fsum(want.tolist()), rel=1e-12), (c, name)
        assert np.allclose(hist_n[c], np.bincount(by_bin[m], wc, HIST_BINS), rtol=1e-12, atol=0)
        assert np.allclose(hist_pos[c], np.bincount(by_bin[m], wc * yc, HIST_BINS), rtol=1e-12, atol=0)
        assert np.allclose(hist_p[c], np.bincount(by_bin[m], wc * p[m], HIST_BINS), rtol=1e-12, atol=0)

    size = int(np.count_nonzero(hist_n))
    rows = np.empty(size, np.int32), np.empty(size, np.int32), np.empty(size), np.empty(size), np.empty(size)
    sums = np.zeros((n_cells, 4))
    n_out = histogram_rows(hist, n_cells, *rows, sums)
    out = np.column_stack(rows)
    assert n_out == np.count_nonzero(hist_n) and np.array_equal(out[:, :2], np.argwhere(hist_n != 0))
    for c in range(n_cells):
        n_p, n_n, above, ties = sums[c]
        m = cell == c
        assert n_p == pytest.approx(np.sum(w[m] * y[m]), rel=1e-12)
        assert n_n == pytest.approx(np.sum(w[m] * (1 - y[m])), rel=1e-12)
        bound = 0.5 * ties / (n_p * n_n)
        auc = (above + 0.5 * ties) / (n_p * n_n)
        assert 0 <= bound < 0.01 and abs(auc - roc_auc_score(y[m], p[m], sample_weight=w[m])) <= bound + 1e-12


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("weighted", [False, True], ids=["counts", "weights"])
def test_many_cells_kept_as_rows_give_the_dense_histograms_numpy_adds(weighted, threads):
    # batches of a few cells first (dense histograms per thread), then of many (each batch's rows kept sorted by
    # cell): every cell's histogram rows and AUC sums equal numpy's bincount of its rows, counts to the bit
    rng = np.random.default_rng(41)
    sizes, caps = [900, 1100, 700, 1300, 1000, 800, 1200, 600, 1000, 500], [3, 5, 5, 9, 300, 300, 150, 400, 80, 400]
    reducer = cells_module.CellReducer(threads, rows=sum(sizes))
    every = []
    for n, cap in zip(sizes, caps):
        z = rng.normal(size=n) * 2.0
        y = (rng.random(n) < expit(z)).astype(np.float64)
        w = rng.gamma(2.0, 1.0, n) if weighted else np.ones(n)
        cell = rng.integers(0, cap, n).astype(np.int64)
        reducer.add(z, y, w, cell, True, cap)
        every.append((expit(z), y, w, cell))
    n_cells = max(caps)
    assert reducer.keyed  # the rounds of many cells kept their rows, every one in the chunk's buffer, end to end
    assert reducer._handed > 0 and reducer._used == reducer._handed
    stats, rows, sums = reducer.finish(n_cells)
    assert reducer.keyed == [] and stats.shape == (n_cells, len(STATS))
    p, y, w, cell = (np.concatenate(col) for col in zip(*every))
    flat = cell * HIST_BINS + np.minimum((p * HIST_BINS).astype(np.int64), HIST_BINS - 1)
    want_n = np.bincount(flat, w, n_cells * HIST_BINS).reshape(n_cells, HIST_BINS)
    want_pos = np.bincount(flat, w * y, n_cells * HIST_BINS).reshape(n_cells, HIST_BINS)
    want_p = np.bincount(flat, w * p, n_cells * HIST_BINS).reshape(n_cells, HIST_BINS)
    got_cell, got_bin, got_n, got_pos, got_p = rows
    assert np.array_equal(np.column_stack([got_cell, got_bin]), np.argwhere(want_n != 0))
    tol = 1e-12 if weighted else 0.0
    assert np.allclose(got_n, want_n[want_n != 0], rtol=tol, atol=0)
    assert np.allclose(got_pos, want_pos[want_n != 0], rtol=tol, atol=0)
    assert np.allclose(got_p, want_p[want_n != 0], rtol=1e-12, atol=0)  # Σ w·p: a float sum either way
    assert np.array_equal(stats[:, STATS.index("n_rows")], np.bincount(cell, minlength=n_cells))
    for c in range(n_cells):
        m = cell == c
        if m.sum() < 2 or len(set(y[m])) < 2:
            continue
        n_p, n_n, above, ties = sums[c]
        auc = (above + 0.5 * ties) / (n_p * n_n)
        assert abs(auc - roc_auc_score(y[m], p[m], sample_weight=w[m])) <= 0.5 * ties / (n_p * n_n) + 1e-12


def test_sum_cells_counts_each_bad_score_label_and_weight_in_its_cell():
    s = np.array([0.2, 1.5, 0.7, 0.4, 0.9, -0.1, 0.3])
    y = np.array([1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 0.0])
    w = np.array([1.0, 1.0, 1.0, -1.0, np.nan, 1.0, np.inf])
    cell = np.array([0, 1, 1, 2, 2, 0, 0], np.int64)
    a, b = np.empty_like(s), np.empty_like(s)
    terms(s, a, b, False)
    acc = np.zeros((3, len(STATS)))
    bad = sum_cells(s, a, b, y, w, cell, False, acc, np.zeros((3, HIST_BINS, 3)), np.empty(0, np.int32), np.empty(0))
    got = {name: acc[:, STATS.index(name)].tolist() for name in ("bad_score", "bad_label", "bad_weight")}
    assert got == {"bad_score": [1.0, 1.0, 0.0], "bad_label": [0.0, 1.0, 0.0], "bad_weight": [1.0, 0.0, 2.0]}
    assert bad == 6.0


# --- weighted figures against scikit-learn -------------------------------------------------------------

SLICINGS = ("country*age:18,30,65", "device", "country=de")


@pytest.mark.parametrize("kind", ["probability", "logit"])
@pytest.mark.parametrize("layout", ["hive", "column"])
def test_weighted_figures_equal_sklearn_overall_per_partition_and_per_slice(tmp_path, layout, kind):
    rows = write_data(tmp_path / "data", layout, seed=21)
    slicings = [parse_slicing(s) for s in SLICINGS]
    ds = dataset(tmp_path / "data", layout, kind, slicings)
    table, overall, tables = run_cells(ds, kind, slicings)

    assert_figures(overall, sklearn_figures(rows, kind), "overall")
    assert overall["n_partitions"] == (3 if layout == "hive" else 4)
    key = "region" if layout == "hive" else "shop"
    by_part = groups(rows, [key])
    assert sorted(table[key].to_list()) == sorted(k[0] for k in by_part)
    for (value,), sub in by_part.items():
        assert_figures(table.filter(pl.col(key) == value).row(0, named=True), sklearn_figures(sub, kind), value)

    binned = rows.with_columns(
        pl.Series("age_bin", [bin_label(a, AGE_EDGES) for a in rows["age"].to_list()], dtype=pl.String)
    )
    cross = table_rows(tables["country_x_age_18_30_65_"], ["country", "age[18,30,65]"])
    expected = groups(binned, ["country", "age_bin"])
    assert set(cross) == set(expected) and len(expected) == 20  # 4 countries (null too) × 5 bins
    for k, sub in expected.items():
        assert_figures(cross[k], sklearn_figures(sub, kind), f"country×age {k}")
    device = table_rows(tables["device"], ["device"])
    assert set(device) == {(1,), (2,), (3,), (None,)}
    for k, sub in groups(rows, ["device"]).items():
        assert_figures(device[k], sklearn_figures(sub, kind), f"device {k}")
    (de,) = tables["country_de"].to_dicts()
    assert_figures(de, sklearn_figures(rows.filter(pl.col("country") == "de"), kind), "country=de")


def test_weighted_standard_error_is_the_reliability_weighted_variance_over_the_effective_n(tmp_path):
    rows = write_data(tmp_path / "data", "hive", seed=4)
    slicings = [parse_slicing("country")]
    _, overall, tables = run_cells(dataset(tmp_path / "data", "hive", "logit", slicings), "logit", slicings)
    by_country = table_rows(tables["country"], ["country"])
    for where, sub, got in [
        ("overall", rows, overall),
        *((f"country {k}", g, by_country[k]) for k, g in groups(rows, ["country"]).items()),
    ]:
        loss, w = row_losses(sub, "logit"), sub["w"].to_numpy()
        mean = math.fsum((w * loss).tolist()) / math.fsum(w.tolist())
        v1, v2 = math.fsum(w.tolist()), math.fsum((w * w).tolist())
        s2 = math.fsum((w * (loss - mean) ** 2).tolist()) / (v1 - v2 / v1)  # unbiased, reliability weights
        n_eff = v1 * v1 / v2
        se = math.sqrt(s2 / n_eff)
        assert got["bce"] == pytest.approx(mean, rel=1e-12), where
        assert got["bce_se"] == pytest.approx(se, rel=1e-10), where  # Σwx² − (Σwx)²/Σw loses a digit or two
        assert got["bce_low"] == pytest.approx(mean - 1.959963984540054 * se, rel=1e-10), where
        assert got["bce_se"] > math.sqrt(np.var(loss, ddof=1) / len(loss)) * 1.01, where  # n_eff < n: wider


@pytest.mark.parametrize("kind", ["probability", "logit"])
def test_weights_of_one_give_the_plain_runs_figures(tmp_path, kind):
    write_data(tmp_path / "data", "hive", seed=9, weights="ones")
    slicings = [parse_slicing("country*age:18,30,65")]
    plain_ds = dataset(tmp_path / "data", "hive", kind, weight=None)
    r, h = reduce_chunk(plain_ds, scorer_for(kind), list(plain_ds.files))
    plain_table, plain = summarize_records([r], [h], list(plain_ds.partition_by))
    table, overall, _ = run_cells(dataset(tmp_path / "data", "hive", kind, slicings), kind, slicings)

    # the figures (not the decision's settings, threshold and FPR, which the overall row also states)
    names = [n for n, v in plain.items() if isinstance(v, float) and n in metrics_schema.overall_metric_names()]
    assert "bce_se" in names and "d2_log_loss" in names and "roc_auc" in names
    for name in names:
        assert overall[name] == pytest.approx(plain[name], rel=1e-12, abs=1e-15), name
    assert {k: overall[k] for k in ("n_rows", "n_pos", "n_saturated", "n_partitions")} == {
        k: plain[k] for k in ("n_rows", "n_pos", "n_saturated", "n_partitions")
    }
    plain_rows, cell_rows = table_rows(plain_table, ["region"]), table_rows(table, ["region"])
    assert set(plain_rows) == set(cell_rows)
    for k, row in plain_rows.items():
        for name in names:
            assert cell_rows[k][name] == pytest.approx(row[name], rel=1e-12, abs=1e-15), (k, name)
    # and the plain standard error: the sample standard deviation over √n
    losses = row_losses(pl.concat(pl.read_parquet(f.path) for f in plain_ds.files), kind)
    assert overall["bce_se"] == pytest.approx(np.std(losses, ddof=1) / math.sqrt(len(losses)), rel=1e-10)


def test_weights_of_zero_or_one_equal_a_plain_run_on_the_rows_that_weigh_one(tmp_path):
    rows = write_data(tmp_path / "data", "hive", seed=13, weights="binary")
    _, overall, _ = run_cells(dataset(tmp_path / "data", "hive", "logit"), "logit", [])
    kept = rows.filter(pl.col("w") == 1.0)
    loss = row_losses(kept, "logit")
    assert overall["n_rows"] == rows.height > kept.height  # counts are of rows; figures of weight
    assert overall["bce"] == pytest.approx(loss.mean(), rel=1e-12)
    assert overall["bce_se"] == pytest.approx(np.std(loss, ddof=1) / math.sqrt(len(loss)), rel=1e-10)
    assert overall["accuracy"] == pytest.approx(
        accuracy_score(kept["label"].to_numpy(), (kept["z"].to_numpy() > 0).astype(np.int64)), rel=1e-12
    )


# --- bad weights and too many cells ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.5, float("nan"), None, float("inf")], ids=["negative", "nan", "null", "inf"])
def test_a_bad_weight_is_one_input_error_naming_the_file_and_column(tmp_path, bad):
    write_data(tmp_path / "data", "hive", seed=2)
    culprit = tmp_path / "data" / "region=us" / "part-1.parquet"
    df = pl.read_parquet(culprit)
    df.with_columns(
        pl.Series("w", [*df["w"].to_list()[:7], bad, *df["w"].to_list()[8:]], dtype=pl.Float64)
    ).write_parquet(culprit)
    slicings = [parse_slicing("country")]
    ds = dataset(tmp_path / "data", "hive", "probability", slicings)
    with pytest.raises(InputError) as caught:
        reduce_chunk(ds, scorer_for("probability"), list(ds.files))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{culprit}: weight column 'w' has 1 "), message
    assert ">= 0" in message


def test_weights_that_are_all_zero_are_an_input_error_from_the_summary(tmp_path):
    write_data(tmp_path / "data", "hive", seed=2)
    for f in (tmp_path / "data").glob("*/*.parquet"):
        pl.read_parquet(f).with_columns(pl.lit(0.0).alias("w")).write_parquet(f)
    slicings = [parse_slicing("country")]
    ds = dataset(tmp_path / "data", "hive", "probability", slicings)
    records, hist = reduce_chunk(ds, scorer_for("probability"), list(ds.files))  # a valid chunk: weights may be 0
    assert records["sum_w"].sum() == 0 and records["n_rows"].sum() == ds.num_rows
    with pytest.raises(InputError, match="weighs 0") as caught:
        summarize_cells([records], [hist], ds.partition_by, slicings)
    assert "\n" not in str(caught.value) and "--weight-col" in str(caught.value)


def test_a_slice_column_of_more_than_max_cells_values_is_one_line_suggesting_bins(tmp_path):
    n = MAX_CELLS + 10
    (tmp_path / "data").mkdir()
    frame = pl.DataFrame({"p": np.full(n, 0.3), "label": np.arange(n) % 2, "uid": [f"u{i}" for i in range(n)]})
    frame.write_parquet(tmp_path / "data" / "f.parquet")
    slicings = [parse_slicing("uid")]
    ds = check_dataset(
        read_dataset_files(tmp_path / "data"), "label", [], extra_columns=["p"], cells=finest_cross(slicings)
    )
    with pytest.raises(InputError) as caught:
        reduce_chunk(ds, stored_scorer("p", "probability"), list(ds.files))
    message = str(caught.value)
    assert "\n" not in message and "uid" in message and f"{MAX_CELLS:,}" in message
    assert "few values" in message and "bins" not in message  # text: bins would be refused


def test_partitions_times_values_of_more_than_max_cells_is_one_line(tmp_path):
    half = MAX_CELLS // 2 + 100  # fewer values than MAX_CELLS, but two partitions of them are more cells
    for region in ("eu", "us"):
        (tmp_path / "data" / f"region={region}").mkdir(parents=True)
        pl.DataFrame(
            {"p": np.full(half, 0.3), "label": np.arange(half) % 2, "uid": [f"u{i}" for i in range(half)]}
        ).write_parquet(tmp_path / "data" / f"region={region}" / "f.parquet")
    slicings = [parse_slicing("uid")]
    ds = check_dataset(
        read_dataset_files(tmp_path / "data"), "label", [], extra_columns=["p"], cells=finest_cross(slicings)
    )
    with pytest.raises(InputError) as caught:
        reduce_chunk(ds, stored_scorer("p", "probability"), list(ds.files))
    message = str(caught.value)
    assert "\n" not in message and "uid" in message and f"{MAX_CELLS:,} cells" in message
    assert "bins" in message


def test_bins_on_a_hive_key_that_is_not_a_number_are_one_input_error_line(tmp_path):
    write_data(tmp_path / "data", "hive", seed=2)
    with pytest.raises(InputError) as caught:  # from the checks of the dataset, or from the pass
        ds = dataset(tmp_path / "data", "hive", "probability", [parse_slicing("region:1,2")])
        reduce_chunk(ds, scorer_for("probability"), list(ds.files))
    assert "\n" not in str(caught.value) and "region" in str(caught.value)


# --- the same sums at every thread count (fresh processes) ---------------------------------------------

_IN_FRESH_PROCESS = """
import json, sys
import polars as pl
from tasks.data.dataset import check_dataset, read_dataset_files
from tasks.data.slicing import finest_cross, parse_slicing
from tasks.metrics.reduce import reduce_chunk, SUM_COLUMNS
from tasks.metrics.rollup import summarize_cells
from tasks.models.scoring import stored_scorer
slicings = [parse_slicing("country*age:18,30,65"), parse_slicing("device")]
out = {"threads": pl.thread_pool_size()}
for weight in (None, "w"):
    ds = check_dataset(read_dataset_files(sys.argv[1]), "label", [], extra_columns=["z"],
                       cells=finest_cross(slicings), weight=weight)
    records, hist = reduce_chunk(ds, stored_scorer("z", "logit"), list(ds.files))
    keys = [c for c in records.columns if c not in SUM_COLUMNS and not c.startswith("roc_auc")]
    table, overall, tables = summarize_cells([records], [hist], ds.partition_by, slicings)
    cells = records.with_columns(pl.col(c).cast(pl.String) for c in keys).sort(keys, nulls_last=True)
    out[str(weight)] = {
        "sums": [[float(v).hex() for v in row] for row in cells.select(SUM_COLUMNS).rows()],
        "auc": cells["roc_auc"].to_list(),
        "overall": {k: v for k, v in overall.items() if isinstance(v, float)},
        "slices": [v.hex() for v in tables["country_x_age_18_30_65_"]["bce"].to_list()],
    }
print(json.dumps(out))
"""


@pytest.mark.system  # fresh processes
def test_sums_do_not_depend_on_the_number_of_threads(tmp_path):
    rng = np.random.default_rng(17)
    for i, n in enumerate((150_000, 90_000, 200_000)):
        folder = tmp_path / "data" / f"region=r{i}"
        folder.mkdir(parents=True)
        random_rows(rng, n).write_parquet(folder / "f.parquet")
    results = []
    for threads in (1, 2, 3):
        out = subprocess.run(
            [sys.executable, "-c", _IN_FRESH_PROCESS, str(tmp_path / "data")],
            env={**os.environ, "POLARS_MAX_THREADS": str(threads)},
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [r["threads"] for r in results] == [1, 2, 3]
    one = results[0]
    assert len(one["None"]["sums"]) == 3 * 4 * 5 * 4  # regions × countries × age bins × devices: every cell
    for other in results[1:]:
        # unweighted: every sum and every histogram count to the last bit
        assert other["None"] == one["None"]
        # weighted: the sums to the last bit (added in batch order); the histograms' weights may differ
        # in their last bits (summed per thread), so ROC AUC to 1e-12
        assert other["w"]["sums"] == one["w"]["sums"]
        assert other["w"]["slices"] == one["w"]["slices"]
        assert other["w"]["auc"] == pytest.approx(one["w"]["auc"], rel=1e-12)
        assert other["w"]["overall"] == pytest.approx(one["w"]["overall"], rel=1e-12)
