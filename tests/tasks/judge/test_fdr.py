"""Benjamini–Hochberg across slices: the procedure against independent references, and the false discovery rate it
keeps on 300 healthy slices where per-slice tests raise several false alarms on every run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import false_discovery_control, norm

from tasks.errors import InputError
from tasks.judge.fdr import benjamini_hochberg, fdr_failures, one_sided_p_values
from tasks.metrics.schema import Z95


def _step_up_by_definition(p: np.ndarray, level: float) -> np.ndarray:
    """Benjamini & Hochberg (1995) as written: k = max{i : p(i) <= i·q/m}, reject H(1)..H(k); NaN is not a test."""
    tested = [i for i in range(p.size) if not math.isnan(p[i])]
    ranked = sorted(tested, key=lambda i: p[i])
    m = len(ranked)
    k = max((i for i in range(1, m + 1) if p[ranked[i - 1]] <= i * level / m), default=0)
    out = np.zeros(p.size, dtype=bool)
    out[ranked[:k]] = True
    return out


@pytest.mark.parametrize("seed", range(20))
def test_benjamini_hochberg_equals_scipys_adjusted_p_values_and_the_definition(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 400))
    # a mixture: uniform nulls and some small p-values from real effects, so that some but not all are rejected
    p = np.where(rng.random(m) < 0.2, rng.uniform(0, 1e-3, m), rng.random(m))
    level = float(rng.choice([0.01, 0.05, 0.1, 0.2]))

    rejected = benjamini_hochberg(p, level)

    # scipy's BH-adjusted p-values (statsmodels is not installed; scipy.stats is the reference at hand)
    np.testing.assert_array_equal(rejected, false_discovery_control(p, method="bh") <= level)
    np.testing.assert_array_equal(rejected, _step_up_by_definition(p, level))
    # NaN p-values (slices not tested) are never rejected and do not count in m
    with_nan = np.insert(p, rng.integers(0, m, 5), np.nan)
    np.testing.assert_array_equal(benjamini_hochberg(with_nan, level), _step_up_by_definition(with_nan, level))
    assert not benjamini_hochberg(with_nan, level)[np.isnan(with_nan)].any()


def test_benjamini_hochberg_on_the_papers_example():
    # Benjamini & Hochberg (1995), section 4.1: 15 p-values at q = 0.05; the procedure rejects the four smallest
    p = np.array(
        [0.0201, 0.7590, 0.0001, 0.0278, 0.0004, 0.6528, 0.0298, 1.0, 0.0344, 0.0019, 0.0459, 0.3240, 0.4262, 0.0095]
        + [0.5719]
    )
    rejected = benjamini_hochberg(p, 0.05)
    assert sorted(p[rejected]) == [0.0001, 0.0004, 0.0019, 0.0095]


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, math.nan, "0.05x"])
def test_level_outside_zero_one_is_refused(level):
    with pytest.raises(InputError, match=r"false discovery rate level .* strictly between 0 and 1"):
        benjamini_hochberg(np.array([0.01, 0.5]), level)


def test_one_sided_p_values_are_the_normal_tails_beyond_the_bound():
    value = np.array([0.50, 0.52, 0.47, 0.60, 0.5, 0.9, 0.9])
    se = np.array([0.01, 0.01, 0.02, 0.003, np.nan, 0.0, 0.015])
    bound = 0.5
    with np.errstate(divide="ignore"):
        z = (value - bound) / se

    above = one_sided_p_values(value, se, bound, "<=")  # H0: value <= bound; small p: surely above
    below = one_sided_p_values(value, se, bound, ">=")  # H0: value >= bound; small p: surely below

    np.testing.assert_allclose(above[:4], norm.sf(z[:4]), rtol=1e-13)
    np.testing.assert_allclose(below[:4], norm.cdf(z[:4]), rtol=1e-13)
    assert above[0] == below[0] == 0.5  # on the bound
    assert np.isnan(above[4:6]).all() and np.isnan(below[4:6]).all()  # no standard error: not tested
    # z = 26.7 and 33.3: 1 − Φ(z) is 0 in float64; the tail itself is tiny but exact (erfc: an independent formula)
    for p_value, zz in ((above[6], z[6]), (above[3], z[3])):
        assert p_value > 0
        assert p_value == pytest.approx(0.5 * math.erfc(zz / math.sqrt(2)), rel=1e-12)
    assert 1.0 - norm.cdf(z[3]) == 0.0  # what the cancellation would have given
    with pytest.raises(InputError, match="'<'"):
        one_sided_p_values(value, se, bound, "<")


def test_fdr_failures_leave_unjudged_slices_untested_and_not_failed():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0.5, 0.01, 50), [0.9, 0.9]])  # the last two far above 0.5
    ses = np.full(values.size, 0.01)
    judged = np.ones(values.size, dtype=bool)
    judged[-1] = False  # too small to judge

    failed, p, tested = fdr_failures(values, ses, 0.5, "<=", 0.05, judged)

    assert failed[-2] and not failed[-1]
    assert np.isnan(p[-1]) and not tested[-1] and tested[:-1].all()
    # m counts only the judged slices: the same as BH over them alone
    np.testing.assert_array_equal(
        failed[:-1], benjamini_hochberg(one_sided_p_values(values, ses, 0.5, "<=")[:-1], 0.05)
    )
    with pytest.raises(InputError, match="different shapes"):
        fdr_failures(values, ses, 0.5, "<=", 0.05, judged[:-1])


def _slice_probabilities(slices: int, rows: int) -> np.ndarray:
    """A fixed probability model: each slice's rows' true probabilities of label 1 (base rates ~8%..50%)."""
    rng = np.random.default_rng(2026)
    logit = rng.uniform(-2.5, 0.0, size=(slices, 1)) + rng.normal(0.0, 1.0, size=(slices, rows))
    return 1.0 / (1.0 + np.exp(-logit))


def test_fdr_keeps_false_alarms_rare_where_per_slice_tests_raise_several_yet_catches_a_worse_slice():
    healthy, rows, seeds, level = 300, 3000, 100, 0.05
    truth = _slice_probabilities(healthy + 1, rows)
    model = truth.copy()
    # the last slice's rows are scored by a worse model: its logits shifted by +1 (it over-predicts class 1)
    model[-1] = 1.0 / (1.0 + np.exp(-(np.log(truth[-1] / (1.0 - truth[-1])) + 1.0)))
    loss_if_1, loss_if_0 = -np.log(model), -np.log1p(-model)
    # each slice's bound is its TRUE expected BCE under the healthy model (the labels' entropy), analytically:
    # the healthy slices sit exactly on their bound (H0 true, at its edge: the hardest case for false alarms)
    bound = np.mean(-(truth * np.log(truth) + (1.0 - truth) * np.log1p(-truth)), axis=1)
    # the worse slice's expected BCE and its sampling sd, analytically: it is far beyond its bound
    expected = truth[-1] * loss_if_1[-1] + (1.0 - truth[-1]) * loss_if_0[-1]
    row_var = truth[-1] * loss_if_1[-1] ** 2 + (1.0 - truth[-1]) * loss_if_0[-1] ** 2 - expected**2
    z_worse = (expected.mean() - bound[-1]) / math.sqrt(row_var.mean() / rows)
    # BH fails it once its p is within level/m (z ≈ 3.6 at m = 301): at z > 8 a miss has probability < 1e-6 per seed,
    # so it must be caught in every seed
    assert z_worse > 8

    false_share, plain_false, caught = [], [], []
    for seed in range(seeds):
        labels = np.random.default_rng(seed).random(truth.shape) < truth
        loss = np.where(labels, loss_if_1, loss_if_0)
        bce, se = loss.mean(axis=1), loss.std(axis=1, ddof=1) / math.sqrt(rows)
        failed, _, tested = fdr_failures(bce, se, bound, "<=", level, np.ones(bce.size, dtype=bool))
        assert tested.all()
        false_share.append(failed[:healthy].sum() / max(failed.sum(), 1))
        plain_false.append(int(np.sum(bce[:healthy] - Z95 * se[:healthy] > bound[:healthy])))
        caught.append(bool(failed[-1]))

    assert np.mean(false_share) <= level  # the measured false discovery rate
    assert np.mean(plain_false) >= 3  # per-slice 2.5% tests: several healthy slices fail on every run
    assert all(caught)
