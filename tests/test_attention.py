"""The attention test: same-position value rows, head by head, Monte Carlo permutations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forebear.compare.attention import PERMUTATIONS, ValueHeads, _head_log10_p, attention_log10_p
from forebear.stats import fisher


def _heads(rows: np.ndarray, head_dim: int, heads: int | None = None) -> ValueHeads:
    count = rows.shape[0] // head_dim if heads is None else heads
    return ValueHeads(np.arange(count), head_dim, rows.astype(np.float32))


def test_the_permutation_p_value_matches_the_exact_one_for_a_small_head() -> None:
    # Identity scores over 3 rows: only the identity among the 6 permutations reaches T = 3.
    found = 10 ** _head_log10_p(np.eye(3), np.random.default_rng(0))
    assert found == pytest.approx(1 / 6, abs=0.01)


def test_a_copied_head_gives_the_smallest_p_each_head_can_give() -> None:
    rows = np.random.default_rng(1).standard_normal((4 * 16, 32))
    log10_p = attention_log10_p(_heads(rows, 16), _heads(rows + 0.01, 16))
    floor = math.log10(1 / (1 + PERMUTATIONS))
    assert log10_p == pytest.approx(fisher([floor] * 4))  # Fisher of four heads at the floor


def test_rows_permuted_within_a_head_lose_power_not_validity() -> None:
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((2 * 16, 32))
    shuffled = np.concatenate([rows[:16][rng.permutation(16)], rows[16:][rng.permutation(16)]])
    log10_p = attention_log10_p(_heads(rows, 16), _heads(shuffled, 16))
    assert log10_p is not None and log10_p > -2.0


def test_independent_heads_give_uniform_p_values() -> None:
    rng = np.random.default_rng(3)
    ps = []
    for _ in range(200):
        a, b = rng.standard_normal((2, 2 * 8, 16))
        log10_p = attention_log10_p(_heads(a, 8), _heads(b, 8))
        assert log10_p is not None
        ps.append(10**log10_p)
    ps_array = np.array(ps)
    # Valid: no more small p-values than the level allows (binomial slack for 200 draws).
    assert np.mean(ps_array < 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)
    assert np.mean(ps_array < 0.5) == pytest.approx(0.5, abs=0.15)


def test_other_head_layouts_are_not_tested() -> None:
    rows = np.random.default_rng(4).standard_normal((32, 16))
    assert attention_log10_p(_heads(rows, 16), _heads(rows, 8)) is None
    assert attention_log10_p(None, _heads(rows, 16)) is None
    assert attention_log10_p(_heads(rows, 16), _heads(rows[:, :8], 16)) is None
