"""Identity: is the model behind the endpoint the candidate itself?

The null is **identity**: the suspect is the candidate X (same weights, perhaps served
at another sampling temperature). Then its greedy next token equals X's on every
prompt except near-ties broken differently by other arithmetic: a disagreement rate
``d ≤ tolerance``. Two sequential tests on the per-prompt disagreements (mixture
e-values, ``behavior.sequential``) decide:

- ``different``: ``H0: d ≤ tolerance`` rejected — not the same model (as served);
- ``same``: ``H0: d ≥ margin`` rejected — disagreement provably below ``margin``,
  consistent with identity;
- ``undetermined``: neither yet.

Where the endpoint returns top-k log-probabilities, the greedy token is read as the
most likely of them, which a sampling temperature does not change (a sampled token
would). The total variation between the two top-k distributions (each renormalised
over the tokens both list) is reported beside it, as a description, not a test: a
temperature changes it while keeping identity.

A system prompt changes what the model computes, so the same weights behind one may
fail this test; the closed-set question (which candidate is nearest) is the robust
one, and ``behavior.probe`` reports both. This module owns the per-candidate counts
and decision; it queries nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from forebear.behavior.sequential import RateEvidence

__all__ = [
    "IDENTITY_MARGIN",
    "IDENTITY_TOLERANCE",
    "IdentityTest",
    "IdentityVerdict",
    "top_k_total_variation",
]

IdentityVerdict = Literal["same", "different", "undetermined"]
IDENTITY_TOLERANCE = 0.02  # disagreements an identical model may show (near-ties)
IDENTITY_MARGIN = 0.10  # below this, the rate is consistent with identity


@dataclass(frozen=True)
class IdentityTest:
    """The suspect against candidate X under the identity null, after the prompts so far."""

    candidate: str
    different: RateEvidence  # on disagreements; H0: d ≤ tolerance
    same: RateEvidence  # on disagreements; H0: d ≥ margin
    tv_sum: float = 0.0  # Σ per-prompt total variation over shared top-k (logprobs only)
    tv_prompts: int = 0

    @classmethod
    def start(
        cls,
        candidate: str,
        tolerance: float = IDENTITY_TOLERANCE,
        margin: float = IDENTITY_MARGIN,
    ) -> IdentityTest:
        if not 0.0 < tolerance < margin < 1.0:
            raise ValueError(f"need 0 < tolerance < margin < 1 (got {tolerance}, {margin})")
        return cls(candidate, RateEvidence(tolerance, "greater"), RateEvidence(margin, "less"))

    @property
    def disagreements(self) -> int:
        return self.different.successes

    @property
    def prompts(self) -> int:
        return self.different.trials

    @property
    def mean_tv(self) -> float | None:
        return self.tv_sum / self.tv_prompts if self.tv_prompts else None

    def verdict(self, alpha: float) -> IdentityVerdict:
        if self.different.rejects(alpha):
            return "different"
        return "same" if self.same.rejects(alpha) else "undetermined"

    def look(self, disagreements: int, agreements: int, tvs: Sequence[float]) -> IdentityTest:
        return IdentityTest(
            self.candidate,
            self.different.look(disagreements, agreements),
            self.same.look(disagreements, agreements),
            self.tv_sum + sum(tvs),
            self.tv_prompts + len(tvs),
        )


def top_k_total_variation(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Total variation between two top-k ln-probability maps, each renormalised over the
    tokens both hold; None when they share none."""
    shared = [token for token in a if token in b]
    if not shared:
        return None
    pa = [math.exp(a[token]) for token in shared]
    pb = [math.exp(b[token]) for token in shared]
    za, zb = sum(pa), sum(pb)
    return 0.5 * sum(abs(x / za - y / zb) for x, y in zip(pa, pb, strict=True))
