"""Derivation and distillation from next-token agreement: paired, sequential, Holm-corrected.

On every probe prompt the suspect, a candidate X and each control C give their greedy
next token. The suspect *agrees* with a model on a prompt when the two tokens are the
same string. Nikolic et al. compare agreement rates with unpaired two-proportion
z-tests; the prompts are shared, so this test is **paired** (McNemar): only the
discordant prompts carry information, those where the suspect agrees with X and not
with C (``x_only``) and those where it agrees with C and not with X (``control_only``).

The null, per control: *the suspect agrees with X no more often than with C*
(``P(x_only) ≤ P(control_only)``, so a discordant prompt is an ``x_only`` one with
probability ``q ≤ ½``). It is tested sequentially on the discordant prompts with the
mixture e-value of ``behavior.sequential`` (anytime-valid under early stopping); the
fixed-sample exact McNemar p-value is kept beside it for readers who fixed the number
of prompts in advance. A second sequential test watches for **futility**: the data
rule out that X leads C by more than ``margin`` of the discordant prompts
(``H0: q ≥ ½ + margin`` rejected), so querying further is pointless.

The suspect is *closer to X than to every control* when Holm's procedure rejects every
one of X's nulls. That verdict is only as strong as the controls: independent models
of X's architecture show what architecture alone explains; independent models trained
on X's data show what shared data explains (the distillation question).

This module owns the per-pair counts and tests; which models are queried, when to stop
and the multiple-testing family are ``behavior.probe``'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats

from forebear.behavior.sequential import RateEvidence, exact_binomial_log10_p

__all__ = ["Agreement", "ControlTest", "agreement", "discordant"]


def discordant(
    suspect: Sequence[str], candidate: Sequence[str], control: Sequence[str]
) -> tuple[int, int]:
    """(prompts where the suspect agrees with the candidate only, with the control only)."""
    x_only = c_only = 0
    for s, x, c in zip(suspect, candidate, control, strict=True):
        if s == x and s != c:
            x_only += 1
        elif s == c and s != x:
            c_only += 1
    return x_only, c_only


@dataclass(frozen=True)
class Agreement:
    """How often the suspect's greedy token equals a model's, with a Clopper–Pearson
    interval (fixed-sample: not widened for early stopping)."""

    model: str
    hits: int
    prompts: int
    low: float
    high: float
    confidence: float

    @property
    def rate(self) -> float:
        return self.hits / self.prompts if self.prompts else math.nan


def agreement(model: str, hits: int, prompts: int, confidence: float = 0.95) -> Agreement:
    if prompts == 0:
        return Agreement(model, 0, 0, 0.0, 1.0, confidence)
    interval = stats.binomtest(hits, prompts).proportion_ci(confidence, method="exact")
    return Agreement(model, hits, prompts, float(interval.low), float(interval.high), confidence)


@dataclass(frozen=True)
class ControlTest:
    """Candidate X against one control C on the discordant prompts seen so far."""

    control: str
    margin: float  # the smallest lead over C worth detecting, as q − ½ on discordant prompts
    closer: RateEvidence = field(default_factory=lambda: RateEvidence(0.5, "greater"))
    futility: RateEvidence | None = None  # H0: q ≥ ½ + margin (None until the first look)

    @property
    def x_only(self) -> int:
        return self.closer.successes

    @property
    def control_only(self) -> int:
        return self.closer.failures

    @property
    def log10_p(self) -> float:
        """Anytime-valid p-value (log10) against "no closer to X than to C"."""
        return self.closer.log10_p

    @property
    def fixed_log10_p(self) -> float:
        """The exact one-sided McNemar p-value (log10), valid only for a sample size
        fixed in advance."""
        return exact_binomial_log10_p(self.x_only, self.closer.trials, 0.5)

    @property
    def lead(self) -> float:
        """q̂ − ½: the candidate's share of the discordant prompts beyond an even split."""
        trials = self.closer.trials
        return self.x_only / trials - 0.5 if trials else 0.0

    def futile(self, alpha: float) -> bool:
        return self.futility is not None and self.futility.rejects(alpha)

    def look(self, x_only: int, control_only: int) -> ControlTest:
        futility = self.futility or RateEvidence(0.5 + self.margin, "less")
        return ControlTest(
            self.control,
            self.margin,
            self.closer.look(x_only, control_only),
            futility.look(x_only, control_only),
        )
