"""Benchmark metrics on plain score lists: AUROC, TPR at a fixed FPR, calibration, attribution.

Conventions shared by every function here:

- A **score** is evidence of derivation: higher means "more likely derived".
  A pair is called derived when ``score >= threshold`` (ties go to "derived").
- **NaN is refused**: every function raises ``ValueError`` on a NaN score or
  p-value, because a NaN silently sorts anywhere. A caller that has pairs a
  method could not score decides what they mean before calling (the benchmark
  runner scores them ``-inf``, "no evidence", and reports how many there were).
  ``±inf`` is allowed and ranks as expected.
- Empty inputs are refused where the metric is undefined (AUROC with no
  positives or no negatives), never answered with a made-up number.

This module owns the arithmetic only; it knows nothing of models, manifests or
methods. It is pure numpy plus ``math``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Calibration",
    "CalibrationRow",
    "FalsePositives",
    "Miss",
    "TopOne",
    "TprAtFpr",
    "auroc",
    "binomial_tail",
    "calibration",
    "false_positives",
    "top1_parent",
    "tpr_at_fpr",
]

FloatArray = npt.NDArray[np.float64]
# Slack for max_fpr * n landing a rounding error below an integer (0.01 * 300 = 2.9999…).
_COUNT_SLACK = 1e-9


def _scores(values: Iterable[float], what: str) -> FloatArray:
    array = np.asarray(list(values), dtype=np.float64).ravel()
    if np.isnan(array).any():
        raise ValueError(f"{what} contain NaN; decide what an unscored pair means before calling")
    return array


def auroc(positive_scores: Iterable[float], negative_scores: Iterable[float]) -> float:
    """Area under the ROC curve: P(positive > negative) + ½ P(positive == negative).

    Computed as the Mann–Whitney U statistic over all positive × negative
    pairs divided by their number, with ties counted half (average ranks).
    1.0 means every positive outscores every negative; 0.5 is chance.
    Raises ``ValueError`` when either list is empty or holds NaN.
    """
    pos = _scores(positive_scores, "positive scores")
    neg = _scores(negative_scores, "negative scores")
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUROC needs at least one positive and one negative score")
    # For each positive: negatives strictly below it, plus half of those equal to it.
    ordered = np.sort(neg)
    below = np.searchsorted(ordered, pos, side="left")
    at_or_below = np.searchsorted(ordered, pos, side="right")
    u = float(np.sum(below) + 0.5 * np.sum(at_or_below - below))
    return u / (pos.size * neg.size)


@dataclass(frozen=True)
class TprAtFpr:
    """The best true-positive rate at a threshold whose false-positive rate is ≤ ``max_fpr``.

    With ``n_negative`` negatives the FPR moves in steps of ``resolution`` =
    1/n_negative. When ``max_fpr`` is below that step (``below_resolution``),
    the only admissible FPR is 0 and ``tpr`` is the TPR at zero false
    positives: the benchmark cannot tell an FPR of 0.1 % from 0 with fewer
    than 1000 negatives, and says so instead of pretending.
    """

    max_fpr: float
    tpr: float
    fpr: float  # the FPR actually reached at ``threshold``
    threshold: float | None  # lowest score called derived; None: none can be, at this FPR
    n_positive: int
    n_negative: int
    resolution: float  # 1 / n_negative: the smallest non-zero FPR this sample can show
    below_resolution: bool  # max_fpr < resolution


def tpr_at_fpr(
    positive_scores: Iterable[float], negative_scores: Iterable[float], max_fpr: float
) -> TprAtFpr:
    """The best TPR over thresholds (``score >= t`` is positive) whose FPR is ≤ ``max_fpr``.

    At most ``k = floor(max_fpr · n)`` of the ``n`` negatives may reach the
    threshold, so it must lie strictly above the (k+1)-th highest negative
    score; the lowest such threshold is the lowest positive score above it.
    Raises ``ValueError`` for empty lists, NaN, or ``max_fpr`` outside [0, 1].
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in [0, 1], not {max_fpr}")
    pos = _scores(positive_scores, "positive scores")
    neg = _scores(negative_scores, "negative scores")
    if pos.size == 0 or neg.size == 0:
        raise ValueError("TPR at FPR needs at least one positive and one negative score")
    n = neg.size
    resolution = 1.0 / n
    allowed = math.floor(max_fpr * n + _COUNT_SLACK)
    if allowed >= n:
        threshold: float | None = float(min(pos.min(), neg.min()))
        tpr, fpr = 1.0, 1.0
    else:
        bar = np.sort(neg)[::-1][allowed]  # the (allowed+1)-th highest negative
        above = pos[pos > bar]
        threshold = float(above.min()) if above.size else None
        tpr = above.size / pos.size
        fpr = float(np.sum(neg >= threshold)) / n if threshold is not None else 0.0
    return TprAtFpr(
        max_fpr=max_fpr,
        tpr=tpr,
        fpr=fpr,
        threshold=threshold,
        n_positive=int(pos.size),
        n_negative=int(n),
        resolution=resolution,
        below_resolution=max_fpr < resolution,
    )


@dataclass(frozen=True)
class FalsePositives:
    threshold: float
    count: int  # negatives with score >= threshold
    total: int
    rate: float | None  # count / total; None when there are no negatives


def false_positives(negative_scores: Iterable[float], threshold: float) -> FalsePositives:
    """How many negatives a method calls derived (``score >= threshold``)."""
    neg = _scores(negative_scores, "negative scores")
    count = int(np.sum(neg >= threshold))
    return FalsePositives(
        threshold=threshold,
        count=count,
        total=int(neg.size),
        rate=count / neg.size if neg.size else None,
    )


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact, no overflow)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [
        base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


@dataclass(frozen=True)
class CalibrationRow:
    """Independent pairs with p < ``alpha``; a calibrated test keeps ``fraction`` ≤ ``alpha``.

    ``exceeds_raw`` compares the fraction itself with alpha. ``binomial_p`` is
    the one-sided P(X ≥ count) under X ~ Binomial(n, alpha), the chance of so
    many small p-values from a test that is exactly calibrated; ``exceeds`` is
    ``binomial_p < level``, so a small sample is not flagged for noise.
    """

    alpha: float
    n: int
    count: int
    fraction: float | None  # None when n == 0
    exceeds_raw: bool
    binomial_p: float
    exceeds: bool
    # Pairs of a zoo are not independent draws: copies of one model repeat its pairs. With
    # ``groups`` given (one label per pair, e.g. the pair of lineages), how many distinct
    # groups there are and how many hold a p-value below alpha.
    groups: int | None = None
    groups_hit: int | None = None


@dataclass(frozen=True)
class Calibration:
    level: float  # significance level of the exceedance test
    rows: tuple[CalibrationRow, ...]

    @property
    def calibrated(self) -> bool:
        return not any(row.exceeds for row in self.rows)


def calibration(
    p_values_of_independent_pairs: Iterable[float],
    alphas: Sequence[float] = (0.05, 0.01, 0.001),
    *,
    level: float = 0.05,
    groups: Sequence[Hashable] | None = None,
) -> Calibration:
    """Fraction of independent pairs with p < α, for each α, and whether it exceeds α.

    p-values must lie in [0, 1]; NaN raises ``ValueError``. ``groups`` (one label
    per p-value) adds how many distinct groups hold a p-value below α.
    """
    values = _scores(p_values_of_independent_pairs, "p-values")
    if groups is not None and len(groups) != values.size:
        raise ValueError(f"{len(groups)} group labels for {values.size} p-values")
    if ((values < 0.0) | (values > 1.0)).any():
        raise ValueError("p-values must lie in [0, 1]")
    rows = []
    for alpha in alphas:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), not {alpha}")
        n, count = int(values.size), int(np.sum(values < alpha))
        tail = binomial_tail(count, n, alpha)
        hit = None
        if groups is not None:
            hit = len({g for g, v in zip(groups, values, strict=True) if v < alpha})
        rows.append(
            CalibrationRow(
                alpha=alpha,
                n=n,
                count=count,
                fraction=count / n if n else None,
                exceeds_raw=n > 0 and count / n > alpha,
                binomial_p=tail,
                exceeds=n > 0 and tail < level,
                groups=None if groups is None else len(set(groups)),
                groups_hit=hit,
            )
        )
    return Calibration(level=level, rows=tuple(rows))


@dataclass(frozen=True)
class Miss:
    derived: str
    truth: tuple[str, ...]  # the true base(s)
    chosen: tuple[str, ...]  # the candidate(s) holding the top score (several on a tie)
    truth_score: float | None  # best score among the true bases; None if none was scored


@dataclass(frozen=True)
class TopOne:
    """Parent attribution: is a derived model's true base ranked first among all candidates?

    A hit needs a true base strictly above every other candidate; a tie for
    first place with a wrong candidate is a miss (the method did not single the
    parent out). A derived model with no scored candidates is a miss.
    """

    hits: int
    total: int
    rate: float | None
    misses: tuple[Miss, ...]


def _as_set(truth: str | Set[str]) -> frozenset[str]:
    return frozenset([truth]) if isinstance(truth, str) else frozenset(truth)


def top1_parent(
    scores: Mapping[tuple[str, str], float],
    truth: Mapping[str, str | Set[str]],
) -> TopOne:
    """Top-1 attribution from ``(derived, candidate) -> score`` and ``derived -> true base(s)``.

    Candidates for a derived model are the keys of ``scores`` that name it;
    NaN scores raise ``ValueError`` (drop an unscored candidate first).
    """
    by_model: dict[str, dict[str, float]] = {}
    for (derived, candidate), score in scores.items():
        if math.isnan(score):
            raise ValueError(f"score of ({derived}, {candidate}) is NaN")
        by_model.setdefault(derived, {})[candidate] = score
    hits, misses = 0, []
    for derived, bases in truth.items():
        expected = _as_set(bases)
        candidates = by_model.get(derived, {})
        best = max(candidates.values(), default=None)
        chosen = tuple(sorted(c for c, s in candidates.items() if s == best))
        if best is not None and len(chosen) == 1 and chosen[0] in expected:
            hits += 1
            continue
        truth_scores = [candidates[b] for b in expected if b in candidates]
        misses.append(
            Miss(
                derived=derived,
                truth=tuple(sorted(expected)),
                chosen=chosen,
                truth_score=max(truth_scores) if truth_scores else None,
            )
        )
    total = len(truth)
    return TopOne(
        hits=hits, total=total, rate=hits / total if total else None, misses=tuple(misses)
    )
