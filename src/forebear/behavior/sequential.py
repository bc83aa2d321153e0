"""Anytime-valid tests of a Bernoulli rate: mixture e-values and their p-values.

A probe looks at its evidence after every batch of prompts and stops when it is
decisive, so a fixed-sample p-value would be invalid (looking again until it is small
inflates the error). Each test here is a **mixture martingale** instead: for the
one-sided null ``H0: q ≤ q0`` (``alternative="greater"``) on a sequence of 0/1
outcomes with ``s`` ones and ``f`` zeros so far,

    E = (1 / (1 − q0)) ∫_{q0}^{1} (q / q0)^s ((1 − q) / (1 − q0))^f dq,

a uniform mixture over the alternatives of the likelihood ratio against the boundary
``q0``. Under every rate of the null, E is a non-negative supermartingale with
E₀ = 1, so by Ville's inequality ``P(sup_t E_t ≥ 1/α) ≤ α``: the running maximum may be
watched after every batch and ``p = min(1, 1 / max_t E_t)`` is valid at any stopping
time. ``alternative="less"`` mirrors it (``H0: q ≥ q0``, mixture over ``[0, q0]``).
It needs no tuning and costs about ``½ log n`` of evidence against a test that knew
the true rate.

Convention: ``log10_e`` is the base-10 logarithm of the e-value (0 = no evidence);
a p-value is carried as ``log10_p`` (0 = p of 1). This module owns the arithmetic; it
knows nothing of prompts or models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special, stats

__all__ = [
    "Alternative",
    "RateEvidence",
    "exact_binomial_log10_p",
    "mixture_log10_e",
]

Alternative = Literal["greater", "less"]
_LN10 = math.log(10.0)


def mixture_log10_e(successes: int, failures: int, q0: float, alternative: Alternative) -> float:
    """log10 of the mixture e-value against ``q ≤ q0`` (greater) or ``q ≥ q0`` (less)."""
    if not 0.0 < q0 < 1.0:
        raise ValueError(f"the null rate q0 must lie strictly between 0 and 1 (got {q0})")
    if successes < 0 or failures < 0:
        raise ValueError("counts cannot be negative")
    a, b = successes + 1.0, failures + 1.0
    below, above = _log_beta_tails(q0, successes, failures)
    if alternative == "greater":
        tail, width = above, math.log1p(-q0)  # ln P(Beta(a, b) > q0)
    else:
        tail, width = below, math.log(q0)
    if not math.isfinite(tail):
        return -math.inf
    log_e = (
        float(special.betaln(a, b))
        + tail
        - width
        - successes * math.log(q0)
        - failures * math.log1p(-q0)
    )
    return log_e / _LN10


def _log_beta_tails(q0: float, successes: int, failures: int) -> tuple[float, float]:
    """(ln P(Beta(s + 1, f + 1) ≤ q0), ln P(… > q0)), exact in log space through the
    binomial identity P(Beta(a, b) ≤ x) = P(Bin(a + b − 1, x) ≥ a) for whole a, b:
    scipy's beta.logcdf takes the log of a cdf that underflows (0.05^245 is subnormal)."""
    log_pmf = stats.binom.logpmf(np.arange(successes + failures + 2), successes + failures + 1, q0)
    return (float(special.logsumexp(log_pmf[successes + 1 :])),
            float(special.logsumexp(log_pmf[: successes + 1])))  # fmt: skip


def exact_binomial_log10_p(successes: int, trials: int, q0: float) -> float:
    """log10 of the fixed-sample one-sided p-value ``P(Bin(trials, q0) ≥ successes)``."""
    if trials == 0 or successes <= 0:
        return 0.0
    return min(0.0, float(stats.binom.logsf(successes - 1, trials, q0)) / _LN10)


@dataclass(frozen=True)
class RateEvidence:
    """One sequential test of a rate, after the outcomes seen so far.

    ``log10_e_max``: the running maximum over every look of log10 E (never decreases);
    ``log10_p`` = −max(0, log10_e_max), the anytime-valid p-value (Ville)."""

    q0: float
    alternative: Alternative
    successes: int = 0
    failures: int = 0
    log10_e: float = 0.0  # at the last look
    log10_e_max: float = 0.0
    looks: int = 0

    @property
    def trials(self) -> int:
        return self.successes + self.failures

    @property
    def log10_p(self) -> float:
        return -max(0.0, self.log10_e_max)

    def rejects(self, alpha: float) -> bool:
        return self.log10_p <= math.log10(alpha)

    def look(self, successes: int, failures: int) -> RateEvidence:
        """The evidence after ``successes`` more ones and ``failures`` more zeros."""
        s, f = self.successes + successes, self.failures + failures
        now = mixture_log10_e(s, f, self.q0, self.alternative)
        return RateEvidence(
            self.q0, self.alternative, s, f, now, max(self.log10_e_max, now), self.looks + 1
        )
