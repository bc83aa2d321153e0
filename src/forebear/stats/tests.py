"""Tests that compare one pairing of items with every other pairing, and their combination.

Every test here asks one question of an ``m × m`` score matrix ``S`` whose
rows are items of model B and columns items of model A (hidden units,
usually): is the **observed pairing** (row ``i`` with column ``i``) better
than a uniformly random pairing? The statistic is ``T = Σ_i S[i, i]``; under
a uniformly random permutation ``σ`` of the columns, ``T_σ = Σ_i S[i, σ(i)]``
has mean ``Σ S / m`` and variance ``Σ d² / (m − 1)`` with ``d`` the doubly
centred matrix (Hoeffding's combinatorial central limit theorem).

Two p-values, by what the caller can argue about the null:

- ``null="exact"``: the pairing is uniformly random under H0 (B's units are
  exchangeable and independent of A's). The p-value is then **Chatterjee's
  concentration bound** for permutation sums (Chatterjee 2007, Prop. 1.1:
  with entries in [0, 1], ``P(|T − E T| ≥ t) ≤ 2 exp(−t² / (4 E T + 2t))``),
  applied to ``S`` rescaled affinely to [0, 1] — never smaller than the exact
  permutation p-value, so it is valid without asymptotics.
- ``null="approximate"``: the pairing was chosen from other data of the same
  models and is random under H0 only approximately; the p-value is the normal
  tail of the Hoeffding z-score, and its calibration is checked on
  independent pairs by ``forebear bench``.

Convention (as ``scipy.stats``' ``alternative="greater"``): one-sided, large
``T`` is evidence of derivation; ``log10_p`` is the base-10 logarithm of the
p-value (0 = p of 1), so p-values far below float64's range stay exact.
This module owns the arithmetic; it knows nothing of models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special, stats

from forebear.formats.base import Array

__all__ = [
    "NullKind",
    "TestResult",
    "assignment_test",
    "bonferroni",
    "fisher",
    "holm",
    "holm_adjusted",
    "log10_normal_sf",
    "order_statistic",
]

NullKind = Literal["exact", "approximate"]
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class TestResult:
    """One test. ``log10_p``: log10 of the one-sided p-value (alternative: derived)."""

    name: str
    statistic: float  # observed T
    expected: float  # E T under the null
    z: float  # (T − E T) / sd under the null
    log10_p: float
    null: NullKind
    method: str
    n: int  # items paired

    @property
    def p_value(self) -> float:
        return float(10.0**self.log10_p)


def log10_normal_sf(z: float) -> float:
    """log10 P(N(0, 1) ≥ z), accurate far into the tail."""
    return float(stats.norm.logsf(z)) / _LN10


def _chatterjee_log10(
    total: float, expected: float, scale_low: float, scale_high: float, m: int
) -> float:
    """log10 of Chatterjee's bound after mapping scores affinely onto [0, 1]."""
    span = scale_high - scale_low
    if span <= 0.0:
        return 0.0
    observed = (total - m * scale_low) / span
    mean = (expected - m * scale_low) / span
    excess = observed - mean
    if excess <= 0.0:
        return 0.0
    log_bound = math.log(2.0) - excess * excess / (4.0 * mean + 2.0 * excess)
    return min(0.0, log_bound / _LN10)


def assignment_test(scores: Array, name: str, null: NullKind, method: str) -> TestResult:
    """Test the diagonal pairing of a square ``scores`` matrix against random pairings."""
    matrix = np.asarray(scores, dtype=np.float64)
    m = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != m:
        raise ValueError(f"scores must be square, got shape {matrix.shape}")
    if m < 2 or not np.all(np.isfinite(matrix)):
        return TestResult(name, math.nan, math.nan, 0.0, 0.0, null, method, m)
    total = float(np.trace(matrix))
    expected = float(matrix.sum()) / m
    centred = (
        matrix - matrix.mean(axis=1, keepdims=True) - matrix.mean(axis=0, keepdims=True)
        + matrix.mean()
    )  # fmt: skip
    variance = float((centred * centred).sum()) / (m - 1)
    z = (total - expected) / math.sqrt(variance) if variance > 0.0 else 0.0
    if null == "exact":
        log10_p = _chatterjee_log10(total, expected, float(matrix.min()), float(matrix.max()), m)
    else:
        log10_p = log10_normal_sf(z) if variance > 0.0 else 0.0
    return TestResult(name, total, expected, z, log10_p, null, method, m)


def fisher(log10_ps: Sequence[float]) -> float:
    """log10 of Fisher's combined p-value of independent p-values (given as log10).

    Valid also for conservative (super-uniform) independent p-values.
    """
    if not log10_ps:
        return 0.0
    statistic = -2.0 * _LN10 * float(sum(log10_ps))
    # P(χ²(2k) ≥ s) = Q(k, s / 2): regularised upper incomplete gamma, in log space.
    k = len(log10_ps)
    return _log10_gammaincc(float(k), statistic / 2.0)


def _log10_gammaincc(a: float, x: float) -> float:
    value = float(special.gammaincc(a, x))
    if value > 1e-300:
        return math.log10(value)
    # Far tail: for a ≥ 1 and x > a − 1, Γ(a, x) ≤ x^(a−1) e^(−x) / (1 − (a − 1) / x), an
    # upper bound, so the p-value reported is never smaller than the true one.
    log_q = (a - 1.0) * math.log(x) - x - math.lgamma(a) - math.log1p(-(a - 1.0) / x)
    return min(0.0, log_q / _LN10)


def bonferroni(log10_ps: Sequence[float]) -> float:
    """log10 of the Bonferroni-adjusted minimum: valid under any dependence."""
    if not log10_ps:
        return 0.0
    return min(0.0, min(log10_ps) + math.log10(len(log10_ps)))


def holm_adjusted(log10_ps: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values (log10): hypothesis ``i`` is rejected at level α, with
    family-wise error ≤ α under any dependence, exactly when its value ≤ log10 α."""
    order = sorted(range(len(log10_ps)), key=lambda i: log10_ps[i])
    count = len(log10_ps)
    adjusted = [0.0] * count
    running = -math.inf
    for rank, index in enumerate(order):
        running = max(running, min(0.0, log10_ps[index] + math.log10(count - rank)))
        adjusted[index] = running
    return adjusted


def holm(log10_ps: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections at family-wise level ``alpha``."""
    return [value <= math.log10(alpha) for value in holm_adjusted(log10_ps)]


def order_statistic(log10_ps: Sequence[float], r: int) -> float:
    """log10 of Rüger's combined p-value ``(n / r) · p_(r)``, the ``r``-th smallest of ``n``.

    Valid under any dependence (Rüger 1978; Morgenstern 1980): under the joint null,
    ``P(p_(r) ≤ t) ≤ n t / r``. ``r = 1`` is Bonferroni. A larger ``r`` asks for evidence
    in ``r`` places at once, so one p-value from a heavier-than-assumed tail cannot decide.
    """
    if not log10_ps:
        return 0.0
    n = len(log10_ps)
    if not 1 <= r <= n:
        raise ValueError(f"r must lie in 1..{n}, not {r}")
    return min(0.0, sorted(log10_ps)[r - 1] + math.log10(n / r))
