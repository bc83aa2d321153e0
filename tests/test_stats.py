"""The statistics behind ``forebear compare``: null moments, valid bounds, combination."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from forebear.stats import assignment_test, bonferroni, fisher, log10_normal_sf, order_statistic


def _permutation_sums(matrix: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    m = matrix.shape[0]
    orders = np.argsort(rng.random((draws, m)), axis=1)
    return matrix[np.arange(m)[None, :], orders].sum(axis=1)


def test_null_moments_are_those_of_random_pairings() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(12, 12)) + rng.normal(size=(12, 1)) + rng.normal(size=(1, 12))
    sums = _permutation_sums(matrix, 100_000, rng)
    result = assignment_test(matrix, "t", "approximate", "m")
    assert result.expected == pytest.approx(sums.mean(), abs=0.05)
    spread = (result.statistic - result.expected) / result.z
    assert spread == pytest.approx(sums.std(), rel=0.02)


@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(3, 12),
    planted=st.floats(0.0, 3.0),
)
def test_exact_bound_is_never_below_the_permutation_p_value(
    seed: int, size: int, planted: float
) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(size, size))
    matrix[np.arange(size), np.arange(size)] += planted
    result = assignment_test(matrix, "t", "exact", "m")
    sums = _permutation_sums(matrix, 4000, rng)
    monte_carlo = (1 + np.sum(sums >= result.statistic - 1e-12)) / (1 + len(sums))
    # The bound holds for the exact p-value; allow the Monte Carlo estimate its error.
    slack = 4 * math.sqrt(monte_carlo * (1 - monte_carlo) / len(sums)) + 1 / len(sums)
    assert result.p_value >= monte_carlo - slack


def test_exact_p_values_of_random_pairings_are_valid() -> None:
    rng = np.random.default_rng(1)
    p_values = []
    for _ in range(300):
        matrix = rng.normal(size=(30, 30))
        p_values.append(assignment_test(matrix, "t", "exact", "m").p_value)
    for alpha in (0.05, 0.2, 0.5):
        assert np.mean(np.array(p_values) <= alpha) <= alpha


def test_approximate_p_values_of_random_pairings_are_near_uniform() -> None:
    rng = np.random.default_rng(2)
    p_values = np.array(
        [assignment_test(rng.normal(size=(60, 60)), "t", "approximate", "m").p_value
         for _ in range(400)]
    )  # fmt: skip
    # Binomial(400, α): the counts must stay within about 3 standard deviations of 400 α.
    for alpha in (0.01, 0.05, 0.2):
        assert np.sum(p_values < alpha) <= 400 * alpha + 3 * math.sqrt(400 * alpha) + 1


def test_a_planted_pairing_is_overwhelming_and_degenerate_inputs_are_p_one() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(0, 0.1, (128, 128)) + 0.9 * np.eye(128)
    exact = assignment_test(matrix, "t", "exact", "m")
    approximate = assignment_test(matrix, "t", "approximate", "m")
    assert exact.log10_p < -6 and approximate.log10_p < exact.log10_p
    assert assignment_test(np.ones((5, 5)), "t", "exact", "m").log10_p == 0.0
    assert assignment_test(np.zeros((1, 1)), "t", "exact", "m").log10_p == 0.0
    with pytest.raises(ValueError, match="square"):
        assignment_test(np.zeros((2, 3)), "t", "exact", "m")


def test_fisher_matches_chi_square_and_stays_conservative_in_the_far_tail() -> None:
    for logs in ([-1.0, -2.0], [-0.3] * 10, [-5.0, 0.0, -3.0]):
        statistic = -2 * math.log(10) * sum(logs)
        expected = math.log10(stats.chi2.sf(statistic, 2 * len(logs)))
        assert fisher(logs) == pytest.approx(expected, abs=1e-9)
    far = fisher([-400.0] * 4)
    k, half = 4, 2 * math.log(10) * 1600 / 2
    leading = ((k - 1) * math.log(half) - half - math.lgamma(k)) / math.log(10)
    assert leading <= far <= leading + math.log10(2)
    assert fisher([]) == 0.0


def test_bonferroni_and_normal_tail() -> None:
    assert bonferroni([-3.0, -1.0]) == pytest.approx(-3.0 + math.log10(2))
    assert bonferroni([-0.1, -0.2]) == 0.0 and bonferroni([]) == 0.0
    assert log10_normal_sf(0.0) == pytest.approx(math.log10(0.5))
    assert log10_normal_sf(30.0) == pytest.approx(math.log10(stats.norm.sf(30.0)), rel=1e-9)
    mills = -(40.0**2) / 2 - math.log(40.0 * math.sqrt(2 * math.pi))  # φ(z) / z, far tail
    assert log10_normal_sf(40.0) == pytest.approx(mills / math.log(10), abs=1e-3)


def test_order_statistic_is_bonferroni_at_one_and_valid_under_dependence() -> None:
    values = [-5.0, -3.0, -1.0, -0.5]
    assert order_statistic(values, 1) == pytest.approx(bonferroni(values))
    assert order_statistic(values, 2) == pytest.approx(-3.0 + math.log10(2))
    assert order_statistic([], 1) == 0.0
    with pytest.raises(ValueError, match=r"r must lie in 1\.\.4"):
        order_statistic(values, 5)
    # One p-value from a fat tail cannot decide at r = half; most of them can.
    assert order_statistic([-12.0, -0.3, -0.2, -0.1], 2) > -1.0
    assert order_statistic([-12.0, -11.0, -10.0, -0.1], 2) < -10.0
    # Valid under the worst dependence for it: n copies of one uniform p-value, and
    # independent ones (Monte Carlo, 20,000 draws each).
    rng = np.random.default_rng(7)
    for draws in (np.repeat(rng.random((20000, 1)), 6, axis=1), rng.random((20000, 6))):
        combined = np.array([order_statistic(list(np.log10(row)), 3) for row in draws])
        for alpha in (0.05, 0.01):
            assert np.mean(combined < math.log10(alpha)) <= alpha * 1.1
