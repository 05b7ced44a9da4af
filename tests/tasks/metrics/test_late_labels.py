"""Rows whose label has not arrived: estimated from H(p), apart from the realized figures, against numpy and
scikit-learn per partition, per slice and overall, weighted and unweighted, on the plain and the sliced pass; the
estimate's interval covers the realized BCE of a calibrated model's rows about 95% of the time; a null label among
labelled rows is one error naming the file unless late labels are declared."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import log_loss

from flows.api import evaluate
from tasks.errors import InputError
from tasks.metrics.schema import Z95


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def _rows(n_parts: int, rows: int, seed: int) -> pd.DataFrame:
    """A calibrated model's logits ``z`` and labels drawn from them, in partitions ``part``, weights and a group."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n_parts * rows)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z))).astype(float)
    return pd.DataFrame(
        {
            "z": z,
            "y": y,
            "part": np.repeat([f"p{i:03d}" for i in range(n_parts)], rows),
            "w": rng.exponential(1.0, z.size),
            "g": rng.choice(["a", "b"], z.size),
        }
    )


def _estimate(g: pd.DataFrame, weighted: bool) -> tuple[float, float]:
    """The estimate and its standard error by numpy, over rows without a label: Σw·H(p)/Σw, √(Σw²·p(1−p)·z²)/Σw."""
    p = 1 / (1 + np.exp(-g["z"].to_numpy()))
    w = g["w"].to_numpy() if weighted else np.ones(len(g))
    var = p * (1 - p) * g["z"].to_numpy() ** 2
    return float(np.sum(w * _entropy(p)) / w.sum()), float(np.sqrt(np.sum(w**2 * var)) / w.sum())


def _check_group(got: dict, g: pd.DataFrame, weighted: bool) -> None:
    labelled, late = g[g["y"].notna()], g[g["y"].isna()]
    assert got["n_rows"] == len(labelled) and got["n_unlabelled"] == len(late)
    if len(labelled):
        p = 1 / (1 + np.exp(-labelled["z"].to_numpy()))
        w = labelled["w"].to_numpy() if weighted else None
        assert got["bce"] == pytest.approx(log_loss(labelled["y"], p, sample_weight=w, labels=[0, 1]), rel=1e-12)
    else:
        assert got["bce"] is None and got["note"] == "estimated: no label yet"
    if len(late):
        est, se = _estimate(late, weighted)
        assert got["estimated_bce"] == pytest.approx(est, rel=1e-12)
        assert got["estimated_bce_se"] == pytest.approx(se, rel=1e-12)
        assert got["estimated_bce_high"] - got["estimated_bce_low"] == pytest.approx(2 * Z95 * se, rel=1e-9)
    else:
        assert got["estimated_bce"] is None


@pytest.mark.parametrize(("weighted", "slices"), [(False, ()), (True, ()), (False, ("g",))], ids=["plain", "w", "g"])
def test_estimated_and_realized_figures_equal_numpy_per_partition_slice_and_overall(weighted, slices):
    rows = _rows(4, 3000, seed=3)
    rows.loc[rows["part"] == "p003", "y"] = np.nan  # a night whose labels have not arrived
    rows.loc[(rows["part"] == "p001") & (np.arange(len(rows)) % 7 == 0), "y"] = np.nan  # some late in another
    data = pl.from_pandas(rows).with_columns(pl.col("y").fill_nan(None).cast(pl.Int8))
    r = evaluate(
        data,
        label="y",
        model="z",
        score_kind="logit",
        partition_by=["part"],
        slices=list(slices),
        weights="w" if weighted else None,
        late_labels=True,
    )
    for part, g in rows.groupby("part"):
        _check_group(r.table.filter(pl.col("part") == part).row(0, named=True), g, weighted)
    assert r.table.filter(pl.col("part") == "p001").item(0, "note").startswith("partly estimated: ")
    for name, table in r.slices.items():
        for value, g in rows.groupby(name):
            _check_group(table.filter(pl.col(name) == value).row(0, named=True), g, weighted)
    overall = {**r.overall, "note": ""}
    _check_group(overall, rows, weighted)


def test_a_partition_without_any_label_is_estimated_without_declaring_late_labels():
    rows = _rows(2, 2000, seed=4)
    rows.loc[rows["part"] == "p001", "y"] = np.nan
    data = pl.from_pandas(rows).with_columns(pl.col("y").fill_nan(None).cast(pl.Int8))
    r = evaluate(data, label="y", model="z", score_kind="logit", partition_by=["part"])
    est = r.table.filter(pl.col("part") == "p001").row(0, named=True)
    assert est["bce"] is None and est["n_rows"] == 0 and est["n_unlabelled"] == 2000
    assert est["estimated_bce"] == pytest.approx(_estimate(rows[rows["part"] == "p001"], False)[0], rel=1e-12)
    # the realized overall figure covers the labelled partition only: nothing estimated is mixed into it
    done = rows[rows["part"] == "p000"]
    p = 1 / (1 + np.exp(-done["z"].to_numpy()))
    assert r.overall["bce"] == pytest.approx(log_loss(done["y"], p), rel=1e-12)


def test_a_null_label_among_labelled_rows_is_one_error_naming_the_file_unless_late_labels(tmp_path):
    rows = _rows(2, 500, seed=5)
    data = pl.from_pandas(rows).with_columns(
        pl.when(pl.int_range(pl.len()) == 10).then(None).otherwise(pl.col("y")).cast(pl.Int8).alias("y")
    )
    path = tmp_path / "nightly.parquet"
    data.write_parquet(path)
    with pytest.raises(InputError) as caught:
        evaluate(str(path), label="y", model="z", score_kind="logit", partition_by=["part"])
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: label column 'y' has 1 null value(s) in partition part=p000")
    assert "--late-labels" in text
    r = evaluate(str(path), label="y", model="z", score_kind="logit", partition_by=["part"], late_labels=True)
    assert r.table.filter(pl.col("part") == "p000").select("n_rows", "n_unlabelled").row(0) == (499, 1)


@pytest.mark.parametrize("weights", [None, "w"], ids=["runs", "cells"])
@pytest.mark.parametrize("late", [False, True], ids=["alone", "beside-a-null"])
def test_a_minus_inf_label_is_a_bad_label_not_a_late_one(tmp_path, weights, late):
    rows = _rows(1, 200, seed=6)
    rows.loc[3, "y"] = -np.inf
    if late:
        rows.loc[5, "y"] = np.nan  # written as a null below: a label not arrived, in the same batch
    path = tmp_path / "bad.parquet"
    pl.from_pandas(rows).with_columns(pl.col("y").fill_nan(None)).write_parquet(path)
    with pytest.raises(InputError, match=re.escape(str(path)) + r": label column 'y' has value -inf"):
        evaluate(str(path), label="y", model="z", score_kind="logit", weights=weights, late_labels=True)


def test_the_estimate_covers_a_calibrated_models_realized_bce_about_95_percent_of_the_time():
    # each partition scored before its labels arrive (estimated), then again once they have (realized): for a
    # calibrated model the realized BCE lies inside the estimate's interval in about 95% of partitions
    rows = _rows(300, 400, seed=7)
    labelled = pl.from_pandas(rows)
    later = labelled.with_columns(pl.lit(None, pl.Float64).alias("y"))
    before = evaluate(later, label="y", model="z", score_kind="logit", partition_by=["part"])
    after = evaluate(labelled, label="y", model="z", score_kind="logit", partition_by=["part"])
    joined = before.table.select("part", "estimated_bce_low", "estimated_bce_high").join(
        after.table.select("part", "bce"), on="part"
    )
    assert joined.height == 300 and before.table.get_column("bce").null_count() == 300
    inside = joined.select(pl.col("bce").is_between("estimated_bce_low", "estimated_bce_high").mean()).item()
    assert 0.9 <= inside <= 0.99, inside
    # a model that is over-confident (logits × 2) realizes more than it expects: the estimate is caught short
    doubled = evaluate(
        later.with_columns(pl.col("z") * 2), label="y", model="z", score_kind="logit", partition_by=["part"]
    ).table.select("part", "estimated_bce_high")
    short = doubled.join(
        evaluate(
            labelled.with_columns(pl.col("z") * 2), label="y", model="z", score_kind="logit", partition_by=["part"]
        ).table.select("part", "bce"),
        on="part",
    )
    assert short.select((pl.col("bce") > pl.col("estimated_bce_high")).mean()).item() > 0.9


def test_an_empty_file_between_two_partitions_keeps_every_row_in_its_own(tmp_path):
    # a batch spans files: an empty one (as Spark writes them) is an empty run between two partitions' rows
    rows = _rows(2, 10, seed=8)
    frames = {
        "1": pl.from_pandas(rows[rows["part"] == "p000"]),
        "2": pl.from_pandas(rows[rows["part"] == "p000"]).head(0),
        "3": pl.from_pandas(rows[rows["part"] == "p001"]),
    }
    frames["3"] = frames["3"].with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("y")).alias("y")
    )
    for day, df in frames.items():
        (tmp_path / f"day={day}").mkdir()
        df.select("z", "y").write_parquet(tmp_path / f"day={day}" / "part-0.parquet")
    r = evaluate(str(tmp_path), label="y", model="z", score_kind="logit", partition_by=["day"], late_labels=True)
    got = r.table.filter(pl.col("day") == "3").row(0, named=True)
    labelled = frames["3"].filter(pl.col("y").is_not_null())
    p = 1 / (1 + np.exp(-labelled["z"].to_numpy()))
    assert (got["n_rows"], got["n_unlabelled"]) == (9, 1)
    assert got["bce"] == pytest.approx(log_loss(labelled["y"].to_numpy(), p, labels=[0, 1]), rel=1e-12)
