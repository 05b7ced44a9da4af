"""tasks/metrics/loss.py against scikit-learn's log_loss and hand formulas."""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from tasks.metrics.loss import (
    compute_bce,
    compute_bce_from_probabilities,
    row_losses_from_logits,
    row_losses_from_probabilities,
    sigmoid,
)

EPS = float(np.finfo(float).eps)


def sklearn_rounding_bound(loss: np.ndarray) -> np.ndarray:
    """How far sklearn's own log_loss(y, σ(z)) may be from the exact loss, per row.

    sklearn works in probability space: p̂ = σ(z) carries a relative rounding error of ~2 eps, and
    for a wrong-side row it then takes log(1 - p̂), whose relative error is eps / (1 - p̂) =
    eps·e^loss. (At z = 20, y = 0 that is already 5e-8 absolute: sklearn gives 19.99999997 where
    the exact loss is 20.000000002.) The bound is 4·eps·e^loss, plus the 1e-9 relative asked for.
    """
    return 1e-9 * loss + 4 * EPS * np.exp(loss)


@st.composite
def labels_and_logits(draw, zmax: float = 30.0, max_size: int = 200):
    n = draw(st.integers(min_value=1, max_value=max_size))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    z = draw(
        hnp.arrays(
            np.float64,
            n,
            elements=st.floats(-zmax, zmax, allow_nan=False, allow_infinity=False),
        )
    )
    return y, z


@st.composite
def labels_and_probabilities(draw, max_size: int = 200):
    n = draw(st.integers(min_value=1, max_value=max_size))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    p = draw(
        hnp.arrays(
            np.float64,
            n,
            elements=st.one_of(
                st.floats(0.0, 1.0, allow_nan=False),
                st.sampled_from([0.0, 1.0, EPS / 4, EPS, 1 - EPS, 1 - EPS / 2, 1e-300, 0.5]),
            ),
        )
    )
    return y, p


def _hand_loss(z: float, y: int) -> float:
    """-[y log σ(z) + (1-y) log(1-σ(z))] written out with log1p, independently of the module."""

    # log σ(z) = -log1p(e^{-z}) for z >= 0, z - log1p(e^{z}) for z < 0; log(1-σ(z)) = log σ(-z)
    def log_sigmoid(t: float) -> float:
        return -math.log1p(math.exp(-t)) if t >= 0 else t - math.log1p(math.exp(t))

    return -(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))


# --- logits vs sklearn ------------------------------------------------------------------------


def _exact_losses(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.array([_hand_loss(float(zi), int(yi)) for zi, yi in zip(z, y)])


@settings(max_examples=100, deadline=None)
@given(labels_and_logits(zmax=10.0))
def test_compute_bce_matches_sklearn_log_loss_to_1e9(data):
    """Where sklearn's own rounding is negligible (|z| <= 10), agreement to 1e-9 relative."""
    y, z = data
    expected = log_loss(y, expit(z), labels=[0, 1])
    assert compute_bce(y, z) == pytest.approx(expected, rel=1e-9, abs=0)


@settings(max_examples=100, deadline=None)
@given(labels_and_logits(zmax=30.0))
def test_compute_bce_matches_sklearn_log_loss_where_sklearn_does_not_clip(data):
    y, z = data
    p = expit(z)
    assert np.all((p >= EPS) & (p <= 1 - EPS))  # |z| <= 30: sklearn does not clip
    expected = log_loss(y, p, labels=[0, 1])
    tol = float(np.mean(sklearn_rounding_bound(_exact_losses(y, z))))
    assert abs(compute_bce(y, z) - expected) <= tol


@settings(max_examples=50, deadline=None)
@given(labels_and_logits(zmax=30.0, max_size=30))
def test_row_losses_from_logits_match_sklearn_per_row(data):
    y, z = data
    rows = row_losses_from_logits(y, z)
    assert rows.shape == y.shape
    assert np.all(rows >= 0)
    expected = np.array([log_loss([yi], [pi], labels=[0, 1]) for yi, pi in zip(y, expit(z))])
    assert np.all(np.abs(rows - expected) <= sklearn_rounding_bound(_exact_losses(y, z)))


def test_sklearn_itself_loses_precision_on_wrong_side_logits():
    """Why the bound above is needed: the exact loss at z=20, y=0 is 20 + log1p(e^-20)."""
    exact = 20.0 + math.log1p(math.exp(-20.0))
    sk = log_loss([0], [expit(20.0)], labels=[0, 1])
    assert abs(sk - exact) > 1e-8  # sklearn is off in the 8th digit
    assert compute_bce([0], [20.0]) == pytest.approx(exact, rel=1e-15)


@settings(max_examples=100, deadline=None)
@given(labels_and_logits(zmax=700.0, max_size=50))
def test_row_losses_from_logits_match_hand_formula_everywhere(data):
    y, z = data
    rows = row_losses_from_logits(y, z)
    expected = _exact_losses(y, z)
    np.testing.assert_allclose(rows, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "z, y, expected",
    [
        (-40.0, 1, 40.0 + math.log1p(math.exp(-40.0))),
        (40.0, 0, 40.0 + math.log1p(math.exp(-40.0))),
        (-300.0, 1, 300.0),
        (800.0, 0, 800.0),
        (40.0, 1, math.log1p(math.exp(-40.0))),
        (-800.0, 0, 0.0),
        (0.0, 1, math.log(2.0)),
        (0.0, 0, math.log(2.0)),
    ],
)
def test_extreme_logits_cost_their_true_loss(z, y, expected):
    got = row_losses_from_logits(np.array([y]), np.array([z]))
    assert got[0] == pytest.approx(expected, rel=1e-15, abs=1e-300)
    assert compute_bce([y], [z]) == pytest.approx(expected, rel=1e-15, abs=1e-300)


def test_confident_wrong_logit_is_not_capped_like_sklearn():
    sk = log_loss([1], [expit(-40.0)], labels=[0, 1])
    assert sk == pytest.approx(-math.log(EPS), rel=1e-12)  # sklearn clips: ~36.04
    assert sk == pytest.approx(36.04365338911715, rel=1e-12)
    assert compute_bce([1], [-40.0]) == pytest.approx(40.0 + math.log1p(math.exp(-40.0)), rel=1e-15)
    assert compute_bce([1], [-40.0]) > sk + 3.9


def test_compute_bce_is_the_mean_of_row_losses():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    z = rng.normal(scale=10, size=1000)
    rows = np.array([_hand_loss(float(a), int(b)) for a, b in zip(z, y)])
    assert compute_bce(y, z) == pytest.approx(rows.sum() / rows.size, rel=1e-13)


def test_boolean_and_float_labels_are_accepted():
    z = np.array([-1.0, 2.0, 0.5])
    assert compute_bce(np.array([True, False, True]), z) == pytest.approx(compute_bce(np.array([1, 0, 1]), z), rel=0)
    assert compute_bce(np.array([1.0, 0.0, 1.0]), z) == pytest.approx(
        log_loss([1, 0, 1], expit(z), labels=[0, 1]), rel=1e-12
    )


# --- probabilities vs sklearn -----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(labels_and_probabilities())
def test_probability_variant_equals_sklearn_log_loss(data):
    y, p = data
    expected = log_loss(y, p, labels=[0, 1])
    got = compute_bce_from_probabilities(y, p)
    # same clip to [eps, 1-eps]; the only difference is log1p(-p) vs sklearn's log(1 - p), which
    # differ by the rounding of 1 - p (<= eps/2 absolute)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


@settings(max_examples=50, deadline=None)
@given(labels_and_probabilities(max_size=20))
def test_probability_row_losses_equal_sklearn_per_row(data):
    y, p = data
    rows = row_losses_from_probabilities(y, p)
    expected = np.array([log_loss([yi], [pi], labels=[0, 1]) for yi, pi in zip(y, p)])
    np.testing.assert_allclose(rows, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "p, y",
    [(0.0, 1), (1.0, 0), (1e-300, 1), (1 - 1e-17, 0), (EPS / 2, 1)],
)
def test_probability_clipping_caps_at_minus_log_eps_like_sklearn(p, y):
    cap = -math.log(EPS)
    assert cap == pytest.approx(36.04365338911715, rel=1e-14)
    got = compute_bce_from_probabilities([y], [p])
    assert got == pytest.approx(cap, rel=1e-14)
    assert got == pytest.approx(log_loss([y], [p], labels=[0, 1]), rel=1e-14)


def test_probability_variant_hand_values():
    assert compute_bce_from_probabilities([1, 0], [0.8, 0.25]) == pytest.approx(
        (-math.log(0.8) - math.log(0.75)) / 2, rel=1e-15
    )
    # a perfect prediction costs -log(1 - eps) ≈ eps, not 0 (the clip)
    assert compute_bce_from_probabilities([1], [1.0]) == pytest.approx(-math.log1p(-EPS), rel=1e-12)


# --- one loss: every place that computes it gives the reference's bits ------------------------


def _one_row_partitions(tmp_path, y: np.ndarray, s: np.ndarray):
    """A hive dataset with one row per partition: a partition's Σ loss is then that row's loss."""
    from tasks.data.dataset import discover_dataset

    for i, (yi, si) in enumerate(zip(y, s)):
        folder = tmp_path / f"row={i:04d}"
        folder.mkdir(parents=True)
        pl.DataFrame({"label": [int(yi)], "score": [float(si)], "other": [float(-si)]}).write_parquet(
            folder / "part-0.parquet"
        )
    return discover_dataset(tmp_path, "label", [], extra_columns=["score", "other"])


@pytest.mark.parametrize("kind", ["logit", "probability"])
def test_the_pass_the_audit_and_the_comparison_give_the_reference_loss_bit_for_bit(kind, tmp_path):
    from tasks.judge.audit import audit_chunk
    from tasks.judge.paired import reduce_paired_chunk
    from tasks.metrics.loss import row_losses
    from tasks.metrics.reduce import reduce_chunk
    from tasks.models.scoring import stored_scorer

    rng = np.random.default_rng(11)
    n = 200
    y = (rng.random(n) < 0.5).astype(np.float64)
    if kind == "logit":  # ordinary, confident, saturated and exactly-zero logits
        s = np.concatenate([rng.normal(0, 3, n - 6), [0.0, -40.0, 40.0, 700.0, -700.0, 1e-12]])
    else:  # ordinary, and rounding to 0 or 1 (clipped)
        s = np.concatenate([rng.random(n - 4), [0.0, 1.0, 1e-300, 1 - 1e-17]])
    reference = row_losses(y, s, kind)
    dataset = _one_row_partitions(tmp_path, y, s)
    files = list(dataset.files)
    order = np.array([int(f.hive["row"]) for f in files])
    scorer = stored_scorer("score", kind)

    records, _ = reduce_chunk(dataset, scorer, files)
    by_row = dict(zip(records.get_column("row").cast(pl.Int64).to_list(), records.get_column("sum_loss").to_list()))
    audit = audit_chunk(dataset, scorer, files)[0]
    audited = dict(zip(audit.get_column("row").cast(pl.Int64).to_list(), audit.get_column("sum_loss").to_list()))
    paired = reduce_paired_chunk(dataset, scorer, stored_scorer("other", kind) if kind == "logit" else scorer, files)
    compared = dict(
        zip(paired.get_column("row").cast(pl.Int64).to_list(), paired.get_column("sum_loss_champion").to_list())
    )
    for where, got in (("the compiled pass", by_row), ("the audit", audited), ("the comparison", compared)):
        values = np.array([got[i] for i in order])
        assert values.tobytes() == reference[order].tobytes(), where


def test_sigmoid_matches_scipy_and_never_warns():
    z = np.array([-1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = sigmoid(z)
    np.testing.assert_allclose(s, expit(z), rtol=1e-15, atol=0)


# --- the seed's ten points ---------------------------------------------------------------------

SEED_X = [-2.2, -1.4, -0.8, 0.2, 0.4, 0.8, 1.2, 2.2, 2.9, 4.6]
SEED_Y = [0, 0, 1, 0, 1, 1, 1, 1, 1, 1]


def test_seed_points_logistic_regression():
    X = np.array(SEED_X).reshape(-1, 1)
    y = np.array(SEED_Y)
    model = LogisticRegression().fit(X, y)
    z = model.decision_function(X)
    proba = model.predict_proba(X)[:, 1]
    bce = compute_bce(y, z)
    assert round(bce, 4) == 0.3329
    assert bce == pytest.approx(log_loss(y, proba, labels=[0, 1]), rel=1e-12)
    assert np.round(proba, 2).tolist() == [0.19, 0.33, 0.47, 0.7, 0.74, 0.81, 0.86, 0.94, 0.97, 0.99]


def test_seed_points_file_matches_the_stated_points(seed_points):
    df = pl.read_parquet(seed_points)
    cols = df.columns
    num = [c for c in cols if df[c].dtype.is_float()]
    ints = [c for c in cols if df[c].dtype.is_integer() or df[c].dtype == pl.Boolean]
    assert num and ints, cols
    xs = sorted(df[num[0]].to_list())
    assert xs == pytest.approx(sorted(SEED_X))


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [row_losses_from_logits, compute_bce, row_losses_from_probabilities, compute_bce_from_probabilities]
)
def test_mismatched_lengths(fn):
    with pytest.raises(ValueError, match=r"y has 3 values but [zp] has 2"):
        fn([0, 1, 1], [0.1, 0.2])


@pytest.mark.parametrize("fn", [compute_bce, compute_bce_from_probabilities])
def test_empty(fn):
    with pytest.raises(ValueError, match="no rows"):
        fn([], [])


@pytest.mark.parametrize("bad", [2, -1, 0.5, float("nan")])
@pytest.mark.parametrize("fn", [compute_bce, compute_bce_from_probabilities])
def test_labels_outside_0_1(fn, bad):
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        fn([0, bad, 1], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits(bad):
    # numpy 2 spells the value np.float64(nan): accept either form, but the value must be named
    word = "nan" if bad != bad else ("-inf" if bad < 0 else "inf")
    with pytest.raises(ValueError, match=r"z must be finite, found (np\.float64\()?" + word):
        compute_bce([0, 1], [0.3, bad])


@pytest.mark.parametrize("bad", [1.0000001, -1e-12, 2.0])
def test_probabilities_outside_unit_interval(bad):
    with pytest.raises(
        ValueError, match=r"probabilities must lie in \[0, 1\], found (np\.float64\()?" + re.escape(repr(bad))
    ):
        compute_bce_from_probabilities([0, 1], [0.3, bad])


def test_non_finite_probability():
    with pytest.raises(ValueError, match="p must be finite"):
        compute_bce_from_probabilities([0, 1], [0.3, float("nan")])
