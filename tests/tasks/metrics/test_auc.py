"""tasks/metrics/auc.py: ROC AUC from score histograms (within its stated bound of
``sklearn.metrics.roc_auc_score``) and exactly from ranks, per partition, with ties."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from tasks.metrics.auc import (
    HIST_BINS,
    add_up_rows,
    auc_by_partition,
    auc_from_histogram,
    auc_from_sums,
    exact_auc_by_partition,
    merge_histograms,
)

BINS = 4096


def _histogram(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> pl.DataFrame:
    """Per-bin counts of rows and positives, bins of equal width over [0, 1] (written here with numpy)."""
    return _counts(np.minimum((p * bins).astype(np.int64), bins - 1), y)


def _counts(b: np.ndarray, y: np.ndarray) -> pl.DataFrame:
    n = np.bincount(b)
    n_pos = np.bincount(b, weights=y, minlength=len(n)).astype(np.int64)
    used = np.flatnonzero(n)
    return pl.DataFrame({"bin": used.astype(np.int32), "n": n[used], "n_pos": n_pos[used]})


def _sample(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * z))).astype(np.int64)
    p = 1 / (1 + np.exp(-z))
    return (np.round(p, decimals) if decimals is not None else p), y


def test_a_hand_worked_histogram():
    # bin 0: one negative; bin 1: one positive, one negative; bin 2: one positive.
    # Pairs (pos, neg): 4; the positive of bin 2 beats both negatives, the one of bin 1 beats the one
    # below and ties the other: AUC = (3 + ½·1)/4, the bound ½·1/4
    hist = pl.DataFrame({"bin": [2, 0, 1], "n": [1, 1, 2], "n_pos": [1, 0, 1]})  # order does not matter
    assert auc_from_histogram(hist) == (0.875, 0.125)


@pytest.mark.parametrize("n, seed, bins", [(50, 1, BINS), (2000, 2, BINS), (20000, 3, BINS), (3000, 4, 16)])
def test_binned_auc_is_within_its_bound_of_sklearn(n, seed, bins):
    p, y = _sample(n, seed)
    auc, bound = auc_from_histogram(_histogram(p, y, bins))
    true = roc_auc_score(y, p)
    assert abs(auc - true) <= bound + 1e-12
    assert 0 <= bound <= 0.5
    if bins == 16:
        assert bound > 0.01  # coarse bins: the bound is wide and says so


def test_scores_that_tie_in_sklearn_count_one_half_exactly_as_sklearn_counts_them():
    p, y = _sample(3000, 5, decimals=1)  # 11 distinct scores 0.0, 0.1, ..., 1.0: each in a bin of its own
    auc, _ = auc_from_histogram(_counts(np.round(p * 10).astype(np.int64), y))
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_one_class_only_has_no_auc():
    assert auc_from_histogram(pl.DataFrame({"bin": [1, 7], "n": [3, 2], "n_pos": [0, 0]})) == (None, None)
    assert auc_from_histogram(pl.DataFrame({"bin": [1, 7], "n": [3, 2], "n_pos": [3, 2]})) == (None, None)
    auc, bound = auc_from_sums(np.array([0.0, 2.0]), np.array([5.0, 2.0]), np.array([0.0, 3.0]), np.array([0.0, 1.0]))
    assert np.isnan(auc[0]) and np.isnan(bound[0]) and (auc[1], bound[1]) == (0.875, 0.125)


def test_merged_histograms_equal_the_histogram_of_all_rows():
    p, y = _sample(5000, 6)
    pieces = [_histogram(p[i::3], y[i::3]) for i in range(3)] + [
        pl.DataFrame(schema={"bin": pl.Int32, "n": pl.Int64, "n_pos": pl.Int64})
    ]
    merged = merge_histograms(pieces)
    whole = _histogram(p, y)
    assert merged.sort("bin").to_dicts() == whole.sort("bin").to_dicts()
    assert merge_histograms([]).height == 0


def test_rows_of_one_bin_add_up_in_their_order_to_the_bit_and_counts_stay_integers():
    rng = np.random.default_rng(8)
    keys = rng.integers(0, 50, 20_000) * HIST_BINS + rng.integers(0, 7, 20_000)
    sum_p, n = rng.random(20_000) * 10.0 ** rng.integers(-8, 3, 20_000), rng.integers(1, 4, 20_000)
    uniq, added = add_up_rows(keys, {"sum_p": sum_p, "n": n})
    assert np.array_equal(uniq, np.unique(keys)) and added["n"].dtype == np.int64
    for k in uniq[::25]:
        total = 0.0
        for v in sum_p[keys == k]:  # one running sum, in row order: the bits every run gives
            total += v
        assert added["sum_p"][np.searchsorted(uniq, k)] == total
        assert added["n"][np.searchsorted(uniq, k)] == n[keys == k].sum()


def test_auc_by_partition_from_pieces_equals_each_partitions_histogram_and_sklearn():
    rows = []
    frames = []
    for region, seed, n in (("north", 7, 1500), ("south", 8, 900), ("east", 9, 40)):
        p, y = _sample(n, seed)
        rows.append((region, p, y))
        for half in (slice(0, n // 2), slice(n // 2, n)):  # each partition's rows arrive in two chunks
            frames.append(_histogram(p[half], y[half]).with_columns(pl.lit(region).alias("region")))
    frames.append(pl.DataFrame({"region": ["west"], "bin": [3], "n": [4], "n_pos": [4]}))  # one class only
    got = {r["region"]: r for r in auc_by_partition(frames, ["region"]).to_dicts()}
    assert set(got) == {"north", "south", "east", "west"}
    for region, p, y in rows:
        auc, bound = auc_from_histogram(_histogram(p, y))
        assert got[region]["roc_auc"] == pytest.approx(auc, abs=1e-12)
        assert got[region]["roc_auc_bound"] == pytest.approx(bound, abs=1e-12)
        assert abs(got[region]["roc_auc"] - roc_auc_score(y, p)) <= bound + 1e-12
    assert got["west"]["roc_auc"] is None and got["west"]["roc_auc_bound"] is None


def test_overall_auc_without_keys():
    p, y = _sample(4000, 10)
    frames = [
        _histogram(p[:1000], y[:1000]).with_columns(pl.lit("all").alias("partition")),
        _histogram(p[1000:], y[1000:]).with_columns(pl.lit("all").alias("partition")),
    ]
    [row] = auc_by_partition(frames, []).to_dicts()
    assert abs(row["roc_auc"] - roc_auc_score(y, p)) <= row["roc_auc_bound"] + 1e-12
    assert auc_by_partition([], ["region"]).columns == ["region", "roc_auc", "roc_auc_bound"]


def test_exact_auc_by_ranks_equals_sklearn_with_and_without_ties():
    kept, expected = [], {}
    for part, (seed, n, decimals) in enumerate(((11, 3000, None), (12, 2000, 2), (13, 500, 1), (14, 7, 0))):
        p, y = _sample(n, seed, decimals)
        half = n // 2  # a partition's rows in two pieces, as chunks hand them in
        kept += [
            (np.full(half, part), p[:half], y[:half].astype(np.float64)),
            (np.full(n - half, part), p[half:], y[half:].astype(np.float64)),
        ]
        expected[part] = roc_auc_score(y, p) if 0 < y.sum() < n else None
    kept.append((np.full(5, 9), np.linspace(0, 1, 5), np.ones(5)))  # one class only: no AUC
    expected[9] = None
    got = dict(exact_auc_by_partition(kept).iter_rows())
    assert set(got) == set(expected)
    for part, auc in expected.items():
        if auc is None:
            assert got[part] is None
        else:
            assert abs(got[part] - auc) <= 1e-12, part
    empty = exact_auc_by_partition([])
    assert empty.height == 0 and empty.columns == ["__part", "roc_auc"]


def test_exact_auc_all_scores_tied_is_one_half():
    y = np.array([0, 1, 1, 0, 1], dtype=np.float64)
    got = exact_auc_by_partition([(np.zeros(5), np.full(5, 0.3), y)])
    assert got.get_column("roc_auc").to_list() == [0.5] == [roc_auc_score(y, np.full(5, 0.3))]
