"""Benchmark metrics on hand-made score lists whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from forebear.bench.metrics import (
    auroc,
    binomial_tail,
    calibration,
    false_positives,
    top1_parent,
    tpr_at_fpr,
)

# ---------------------------------------------------------------- AUROC


def test_auroc_perfect_reversed_and_ties() -> None:
    assert auroc([0.9, 0.8, 0.7], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [0.9, 0.8, 0.7]) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5, 0.5]) == 0.5


def test_auroc_worked_example_with_ties() -> None:
    # Positive 1 beats the 0 and loses to both 2s: 1. Positive 2 beats the 0 and ties
    # both 2s: 1 + ½ + ½ = 2. Positive 3 beats all three: 3. U = 6 of 9 comparisons.
    assert auroc([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)


def test_auroc_ranks_infinities() -> None:
    assert auroc([math.inf, 1.0], [-math.inf, -math.inf]) == 1.0
    assert auroc([-math.inf], [-math.inf]) == 0.5


@settings(max_examples=60)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=20),
    st.lists(st.integers(0, 5), min_size=1, max_size=20),
)
def test_auroc_is_mann_whitney_u(pos: list[int], neg: list[int]) -> None:
    u = stats.mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic
    assert auroc(pos, neg) == pytest.approx(u / (len(pos) * len(neg)))


def test_auroc_refuses_nan_and_empty() -> None:
    with pytest.raises(ValueError, match="positive scores contain NaN"):
        auroc([1.0, math.nan], [0.0])
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        auroc([], [0.0])


# ---------------------------------------------------------------- TPR at FPR


def _negatives() -> list[float]:
    # 99 negatives below 0.5 and one hard negative at 0.75.
    return [*np.linspace(0.0, 0.49, 99).tolist(), 0.75]


def test_tpr_at_one_percent_allows_one_false_positive() -> None:
    found = tpr_at_fpr([0.9, 0.8, 0.7, 0.3], _negatives(), 0.01)
    assert (found.tpr, found.fpr, found.threshold) == (0.75, 0.01, 0.7)
    assert (found.resolution, found.below_resolution) == (0.01, False)


def test_tpr_below_resolution_is_reported_at_zero_fpr() -> None:
    # 0.1 % of 100 negatives is less than one: the only admissible FPR is 0.
    found = tpr_at_fpr([0.9, 0.8, 0.7, 0.3], _negatives(), 0.001)
    assert (found.tpr, found.fpr, found.threshold) == (0.5, 0.0, 0.8)
    assert found.below_resolution and found.resolution == 0.01
    assert (found.n_positive, found.n_negative) == (4, 100)


def test_tpr_threshold_never_lands_on_a_tied_negative() -> None:
    # One false positive allowed, but two negatives tie at 0.5: a threshold at 0.5
    # would make two, so only the positive above 0.5 counts.
    found = tpr_at_fpr([0.5, 0.6], [0.5, 0.5, 0.1], 0.34)
    assert (found.tpr, found.fpr, found.threshold) == (0.5, 0.0, 0.6)


def test_tpr_with_no_positive_above_every_negative() -> None:
    found = tpr_at_fpr([0.1], [0.2, 0.3], 0.0)
    assert (found.tpr, found.fpr, found.threshold) == (0.0, 0.0, None)


def test_tpr_at_full_fpr_is_one() -> None:
    assert tpr_at_fpr([0.1], [0.2, 0.3], 1.0).tpr == 1.0


def test_tpr_refuses_bad_level() -> None:
    with pytest.raises(ValueError, match=r"max_fpr must lie in \[0, 1\]"):
        tpr_at_fpr([1.0], [0.0], 1.5)


# ---------------------------------------------------------------- false positives


def test_false_positives_count_ties_as_derived() -> None:
    found = false_positives([0.1, 0.5, 0.7, 0.2], 0.5)
    assert (found.count, found.total, found.rate) == (2, 4, 0.5)
    assert false_positives([], 0.5).rate is None


# ---------------------------------------------------------------- calibration


def test_binomial_tail_matches_scipy() -> None:
    for k, n, p in [(0, 10, 0.05), (2, 20, 0.05), (7, 100, 0.05), (3, 1000, 0.001), (21, 20, 0.5)]:
        assert binomial_tail(k, n, p) == pytest.approx(stats.binom.sf(k - 1, n, p), rel=1e-9)


def test_uniform_p_values_are_not_flagged() -> None:
    uniform = (np.arange(1000) + 0.5) / 1000
    found = calibration(uniform)
    assert [row.count for row in found.rows] == [50, 10, 1]
    assert [row.fraction for row in found.rows] == [0.05, 0.01, 0.001]
    assert not any(row.exceeds_raw or row.exceeds for row in found.rows)
    assert found.calibrated


def test_small_sample_noise_is_raw_excess_but_not_flagged() -> None:
    # 2 of 20 below 0.05 is 10 %, but a calibrated test does that 26 % of the time.
    found = calibration([0.01, 0.03, *([0.5] * 18)], alphas=(0.05,))
    (row,) = found.rows
    assert (row.count, row.fraction, row.exceeds_raw) == (2, 0.1, True)
    assert row.binomial_p == pytest.approx(1 - 0.95**20 - 20 * 0.05 * 0.95**19)
    assert not row.exceeds


def test_small_p_values_are_flagged() -> None:
    found = calibration([1e-4] * 30 + [0.5] * 70)
    assert all(row.exceeds and row.exceeds_raw for row in found.rows)
    assert not found.calibrated


def test_calibration_refuses_invalid_p_values() -> None:
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        calibration([0.5, 1.5])
    with pytest.raises(ValueError, match="p-values contain NaN"):
        calibration([math.nan])


# ---------------------------------------------------------------- attribution


def test_top1_with_a_miss_and_a_tie() -> None:
    scores = {
        ("d1", "b1"): 0.9,
        ("d1", "b2"): 0.1,
        ("d2", "b1"): 0.8,
        ("d2", "b2"): 0.3,
        ("d3", "b1"): 0.5,
        ("d3", "b2"): 0.5,
    }
    found = top1_parent(scores, {"d1": "b1", "d2": "b2", "d3": "b1", "d4": {"b1", "b2"}})
    assert (found.hits, found.total, found.rate) == (1, 4, 0.25)
    misses = {m.derived: m for m in found.misses}
    assert (misses["d2"].chosen, misses["d2"].truth_score) == (("b1",), 0.3)
    assert misses["d3"].chosen == ("b1", "b2")  # a tie for first singles out nobody
    assert (misses["d4"].chosen, misses["d4"].truth_score) == ((), None)


def test_top1_accepts_a_set_of_true_bases() -> None:
    scores = {("m", "b1"): 0.2, ("m", "b2"): 0.7, ("m", "b3"): 0.4}
    assert top1_parent(scores, {"m": {"b1", "b2"}}).hits == 1


def test_calibration_counts_distinct_groups_below_alpha() -> None:
    found = calibration(
        [0.001, 0.002, 0.003, 0.5, 0.04], alphas=(0.01, 0.05), groups=["x", "x", "x", "y", "z"]
    )
    assert [(r.count, r.groups_hit, r.groups) for r in found.rows] == [(3, 1, 3), (4, 2, 3)]
    assert calibration([0.5]).rows[0].groups is None
    with pytest.raises(ValueError, match="2 group labels for 1 p-values"):
        calibration([0.5], groups=["a", "b"])
