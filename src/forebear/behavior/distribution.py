"""Identity from sampled answers: the modal token, and a two-sample test on continuations.

An endpoint that samples at a temperature it does not disclose, and returns no
log-probabilities, never shows its greedy token. Two ways to ask about it anyway:

- **The modal token.** At any temperature T > 0, ``argmax softmax(z / T) = argmax z``:
  the most likely token is the same, only harder to see. ``modal_answers`` asks each
  prompt ``samples`` times (one-token ``generate`` calls under different seeds, at a
  requested temperature of 0 that an endpoint forcing its own overrides) and takes the
  most frequent answer as the estimate of the greedy token; ties go to the answer drawn
  first. The estimate is noisy where the top tokens are near-ties: with a flat
  next-token distribution the mode of a few samples often misses the argmax (measured
  on the behaviour zoo in ``docs/behaviour.md``). The identity test then reads these
  modal tokens as greedy tokens.
- **A two-sample test of the sampling distribution.** On ``n`` prompts, ``m``
  continuations of ``max_tokens`` tokens from the suspect and ``m`` from the candidate,
  both asked at one temperature. Statistic: the mean over prompts of the unbiased
  MMD² between the two sets under a normalised character n-gram spectrum kernel.
  Null: *the suspect and the candidate sample each prompt's continuations from the
  same distribution*. Under it the ``2m`` continuations of one prompt are exchangeable,
  so the null distribution comes from random re-splits *within each prompt*, and
  ``p = (1 + #{permuted ≥ observed}) / (1 + permutations)`` is valid at any sample
  size (Monte Carlo permutation test). This is a different question from identity:
  the same weights at another temperature or behind a system prompt *are* another
  distribution and are rejected; which candidate is nearest (the closed-set question)
  is the probe's agreement ranking, not this test.

  Where the candidate can score text (a local model: ``Scorer``), a **likelihood**
  variant compares the candidate's log-likelihood of each continuation (at the
  requested temperature) between the two sides, two-sided, under the same
  within-prompt permutation null. It sees differences the string kernel blurs (a
  temperature, another model), at no query cost: scoring is local compute.

This module owns the sampling plans, the kernel and the permutation test; which
models are asked and when is ``behavior.probe``'s.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from forebear.behavior.base import Client, TokenAnswer

__all__ = [
    "DISTRIBUTION_NULL",
    "LIKELIHOOD_METHOD",
    "MMD_METHOD",
    "MODAL_NOTE",
    "NGRAMS",
    "DistributionPlan",
    "DistributionTest",
    "Scorer",
    "distribution_tests",
    "kernel_matrix",
    "likelihood_test",
    "mmd_test",
    "modal_answers",
    "modal_token",
    "sampled_continuations",
    "sampling_seeds",
]

NGRAMS = (1, 2, 3)  # character n-gram lengths of the spectrum kernel
DISTRIBUTION_NULL = (
    "same sampling distribution: the suspect's continuations of each prompt are drawn from "
    "the same distribution as the candidate's at the requested temperature (the same weights "
    "at another temperature or behind a system prompt are a different distribution)"
)
MMD_METHOD = (
    "two-sample MMD (unbiased, mean over prompts; normalised character n-gram spectrum "
    "kernel), Monte Carlo permutation null re-splitting each prompt's continuations"
)
LIKELIHOOD_METHOD = (
    "difference of the mean candidate log-likelihood of the two sides' continuations "
    "(two-sided), Monte Carlo permutation null re-splitting each prompt's continuations"
)
MODAL_NOTE = (
    "the suspect's token per prompt is the most frequent of {n} sampled one-token answers "
    "(different seeds), an estimate of its greedy token at any temperature; near-ties make "
    "the mode noisy, so an identical model sampling at a high temperature can still be "
    "called different"
)
_START, _END = "\x02", "\x03"  # boundary marks: n-grams also see where a continuation starts


def sampling_seeds(seed: int, count: int, stream: int) -> tuple[int, ...]:
    """``count`` distinct sampling seeds from the probe's ``seed`` (``stream`` separates uses)."""
    rng = np.random.default_rng([seed, stream])
    return tuple(int(s) for s in rng.choice(2**31 - 1, size=count, replace=False))


def modal_token(answers: Sequence[str]) -> tuple[str, int]:
    """The most frequent answer and its count; a tie goes to the answer drawn first."""
    if not answers:
        raise ValueError("no answers to take the mode of")
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top), top


def modal_answers(
    client: Client, prompts: Sequence[str], seeds: Sequence[int]
) -> list[TokenAnswer]:
    """Per prompt, the modal token of ``len(seeds)`` one-token samples (no log-probabilities).
    Costs ``len(seeds)`` queries a prompt (cache hits excepted)."""
    draws = [client.generate(prompts, max_tokens=1, temperature=0.0, seed=seed) for seed in seeds]
    _check_lengths(client, draws, len(prompts))
    return [TokenAnswer(modal_token([d[i] for d in draws])[0]) for i in range(len(prompts))]


def sampled_continuations(
    client: Client,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    max_tokens: int,
    temperature: float,
) -> list[tuple[str, ...]]:
    """Per prompt, one continuation per seed (``len(seeds)`` queries a prompt)."""
    draws = [
        client.generate(prompts, max_tokens=max_tokens, temperature=temperature, seed=seed)
        for seed in seeds
    ]
    _check_lengths(client, draws, len(prompts))
    return [tuple(d[i] for d in draws) for i in range(len(prompts))]


def _check_lengths(client: Client, draws: Sequence[Sequence[str]], count: int) -> None:
    from forebear.errors import ForebearError

    if any(len(d) != count for d in draws):
        raise ForebearError(
            f"{client.name} did not answer each of {count} prompts",
            hint="the client must answer every prompt, in order",
        )


def _features(text: str, ngrams: Sequence[int]) -> dict[str, float]:
    padded = _START + text + _END
    counts = Counter(padded[i : i + n] for n in ngrams for i in range(len(padded) - n + 1))
    norm = math.sqrt(sum(c * c for c in counts.values()))
    return {gram: c / norm for gram, c in counts.items()}


def kernel_matrix(texts: Sequence[str], ngrams: Sequence[int] = NGRAMS) -> np.ndarray:
    """The normalised spectrum kernel (cosine of character n-gram counts, boundaries
    marked) between every pair of ``texts``: symmetric, positive semi-definite, unit
    diagonal."""
    feats = [_features(text, ngrams) for text in texts]
    size = len(feats)
    gram = np.eye(size)
    for i in range(size):
        for j in range(i + 1, size):
            a, b = (feats[i], feats[j]) if len(feats[i]) <= len(feats[j]) else (feats[j], feats[i])
            gram[i, j] = gram[j, i] = sum(v * b.get(k, 0.0) for k, v in a.items())
    return gram


@runtime_checkable
class Scorer(Protocol):
    """A candidate that can score text: Σ ln p of each continuation after its prompt."""

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], *, temperature: float
    ) -> list[float]: ...


@dataclass(frozen=True)
class DistributionPlan:
    """How much the distribution test samples (per candidate)."""

    prompts: int = 32
    continuations: int = 4  # per prompt and side (m ≥ 2)
    max_tokens: int = 8
    temperature: float = 1.0  # asked of both (an endpoint may force its own)
    permutations: int = 999

    @property
    def queries(self) -> int:
        """Queries each side spends."""
        return self.prompts * self.continuations


@dataclass(frozen=True)
class DistributionTest:
    """The suspect's and a candidate's continuations under "same sampling distribution".

    ``p_value`` = (1 + #{permuted statistic ≥ observed}) / (1 + permutations): a Monte
    Carlo permutation p-value (large statistics are evidence of a difference)."""

    statistic: float  # MMD: mean unbiased MMD² over prompts; likelihood: |mean ln-p gap|
    p_value: float
    permutations: int
    prompts: int
    continuations: int  # per prompt and side
    features: str  # what the statistic compares (the kernel, or the scoring model)
    method: str
    alternative: Literal["greater", "two-sided"]
    null: str = DISTRIBUTION_NULL
    null_kind: Literal["empirical"] = "empirical"
    max_tokens: int | None = None  # as sampled (None: samples given directly)
    temperature: float | None = None
    seed: int | None = None

    @property
    def log10_p(self) -> float:
        return math.log10(self.p_value)

    def rejects(self, alpha: float) -> bool:
        return self.p_value <= alpha

    def to_json(self, alpha: float) -> dict[str, Any]:
        return {
            "answers": ["identity"],
            "verdict": "different" if self.rejects(alpha) else "not_rejected",
            "statistic": round(self.statistic, 6),
            "p_value": round(self.p_value, 6),
            "p_value_convention": "(1 + #permuted >= observed) / (1 + permutations)",
            "log10_p": round(self.log10_p, 6),
            "null": self.null,
            "null_kind": self.null_kind,
            "alternative": self.alternative,
            "method": self.method,
            "features": self.features,
            "permutations": self.permutations,
            "prompts": self.prompts,
            "continuations_per_side": self.continuations,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "closed_set": "not this test: the agreement ranking answers which candidate is nearest",
        }


def _splits(rng: np.random.Generator, permutations: int, n: int, m: int) -> np.ndarray:
    """(permutations, n, 2m) masks: per prompt, a uniformly random m of its 2m samples."""
    order = rng.permuted(np.broadcast_to(np.arange(2 * m), (permutations, n, 2 * m)), axis=-1)
    return order < m


def _observed(n: int, m: int) -> np.ndarray:
    return np.broadcast_to(np.arange(2 * m) < m, (n, 2 * m))


def _shape(x: Sequence[Sequence[Any]], y: Sequence[Sequence[Any]], permutations: int) -> int:
    m = len(x[0]) if x else 0
    if len(x) != len(y) or not x or m < 2 or permutations < 1:
        raise ValueError("need as many prompts on each side, m ≥ 2 samples each, permutations ≥ 1")
    if any(len(row) != m for row in (*x, *y)):
        raise ValueError("every prompt needs m samples on each side")
    return m


def _p_value(null: np.ndarray, observed: float) -> float:
    exceed = int(np.sum(null >= observed - 1e-12 * max(1.0, abs(observed))))  # ties count
    return (1 + exceed) / (1 + len(null))


def _mmd(masks: np.ndarray, grams: np.ndarray, m: int) -> np.ndarray:
    """Mean over prompts of the unbiased MMD², per split; ``masks`` (..., n, 2m)."""
    x = masks.astype(float)
    y = 1.0 - x
    off = grams - np.eye(grams.shape[-1])  # i ≠ j terms only (unit diagonal)
    xx = np.einsum("...ni,nij,...nj->...n", x, off, x)
    yy = np.einsum("...ni,nij,...nj->...n", y, off, y)
    xy = np.einsum("...ni,nij,...nj->...n", x, grams, y)
    per_prompt: np.ndarray = (xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m)
    found: np.ndarray = per_prompt.mean(axis=-1)
    return found


def mmd_test(
    x: Sequence[Sequence[str]],
    y: Sequence[Sequence[str]],
    rng: np.random.Generator,
    *,
    permutations: int = 999,
    ngrams: Sequence[int] = NGRAMS,
) -> DistributionTest:
    """Two-sample permutation MMD test: ``x[i]`` and ``y[i]`` are the samples of prompt
    ``i`` (``m`` each, ``m ≥ 2``); the null re-splits each prompt's ``2m`` samples."""
    m = _shape(x, y, permutations)
    grams = np.stack([kernel_matrix([*a, *b], ngrams) for a, b in zip(x, y, strict=True)])
    observed = float(_mmd(_observed(len(x), m), grams, m))
    null = _mmd(_splits(rng, permutations, len(x), m), grams, m)
    kernel = f"normalised character {'/'.join(map(str, ngrams))}-gram spectrum kernel"
    return DistributionTest(
        observed, _p_value(null, observed), permutations, len(x), m, kernel, MMD_METHOD, "greater"
    )


def likelihood_test(
    x: Sequence[Sequence[float]],
    y: Sequence[Sequence[float]],
    rng: np.random.Generator,
    *,
    permutations: int = 999,
    scorer: str = "the candidate",
) -> DistributionTest:
    """Two-sided permutation test on per-sample scores (``x[i]``, ``y[i]``: prompt ``i``'s
    candidate log-likelihoods): |mean over prompts of the mean gap between the sides|."""
    m = _shape(x, y, permutations)
    scores = np.concatenate([np.asarray(x, float), np.asarray(y, float)], axis=1)

    def gap(masks: np.ndarray) -> np.ndarray:
        inside: np.ndarray = (scores * masks).sum(-1) - (scores * ~masks).sum(-1)
        found: np.ndarray = np.abs(inside.mean(-1)) / m
        return found

    observed = float(gap(_observed(len(x), m)))
    null = gap(_splits(rng, permutations, len(x), m))
    return DistributionTest(
        observed, _p_value(null, observed), permutations, len(x), m,
        f"ln p of each continuation under {scorer}", LIKELIHOOD_METHOD, "two-sided",
    )  # fmt: skip


def distribution_tests(
    suspect: Sequence[Sequence[str]],
    candidate: Client,
    prompts: Sequence[str],
    plan: DistributionPlan,
    rng: np.random.Generator,
    *,
    seeds: Sequence[int],
    seed: int | None = None,
) -> tuple[DistributionTest, ...]:
    """The MMD test of the suspect's continuations (already drawn for ``prompts`` under
    ``plan``) against ``candidate``'s, drawn here under ``seeds`` (disjoint from the
    suspect's: the same model under the same seeds would repeat its samples), and the
    likelihood test too when the candidate can score (``Scorer``)."""
    other = sampled_continuations(
        candidate, prompts, seeds, max_tokens=plan.max_tokens, temperature=plan.temperature
    )
    found = [mmd_test(suspect, other, rng, permutations=plan.permutations)]
    if isinstance(candidate, Scorer):
        x, y = (_scores(candidate, prompts, side, plan.temperature) for side in (suspect, other))
        found.append(likelihood_test(x, y, rng, permutations=plan.permutations))
    return tuple(
        replace(test, max_tokens=plan.max_tokens, temperature=plan.temperature, seed=seed)
        for test in found
    )


def _scores(
    scorer: Scorer, prompts: Sequence[str], side: Sequence[Sequence[str]], temperature: float
) -> list[list[float]]:
    m = len(side[0])
    flat = scorer.score(
        [p for p in prompts for _ in range(m)],
        [text for row in side for text in row],
        temperature=temperature,
    )
    return [flat[i * m : (i + 1) * m] for i in range(len(prompts))]
