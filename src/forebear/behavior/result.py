"""What a behaviour probe found: one frozen ``ProbeResult``, and its JSON form.

Every number is labelled with the question it answers (``QUESTIONS``): *identity*
(is the suspect the candidate itself?), *derivation* (does it behave like a
derivative of the candidate beyond what the controls share with it?) and
*distillation* (the derivation test again, when the controls are independent models
trained on the candidate's data). All of it is behavioural evidence, reported apart
from the weight evidence of ``forebear compare``. This module owns the shapes and the
words; the probing is ``behavior.probe``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from forebear import __version__
from forebear.behavior.agreement import Agreement, ControlTest
from forebear.behavior.distribution import MODAL_NOTE, DistributionTest
from forebear.behavior.identity import IdentityTest, IdentityVerdict
from forebear.behavior.prompts import ProbeSet

__all__ = [
    "CANNOT_SEE",
    "QUESTIONS",
    "CandidateResult",
    "DerivationVerdict",
    "ProbeResult",
    "Settings",
]

DerivationVerdict = Literal["closer", "not_closer", "undecided"]

QUESTIONS: Mapping[str, str] = {
    "identity": (
        "Is the suspect the candidate itself (same weights; the sampling temperature may "
        "differ)? Null: identical - the greedy tokens disagree on at most `tolerance` of "
        "prompts (near-ties)."
    ),
    "derivation": (
        "Does the suspect behave like a derivative of the candidate beyond what the controls "
        "share with it? Null, per control: the suspect agrees with the candidate no more often "
        "than with that control. A weight derivative (fine-tune) and a distilled student both "
        "pass: behaviour cannot tell them apart (the weights can)."
    ),
    "distillation": (
        "Was the suspect trained on the candidate's outputs rather than only on the same data? "
        "The derivation test answers it when the controls are independent models trained on "
        "the candidate's data (null: an independent model of the same data)."
    ),
}

CANNOT_SEE = (
    "whether the weights derive from the candidate or the suspect learnt from its outputs "
    "(distillation): both make it agree with the candidate",
    "a parent missing from the candidates: a sibling of the true parent may look closest",
    "anything the controls share with the suspect: the verdict is relative to them",
    "identity through a system prompt: the same weights behind one answer differently",
)


@dataclass(frozen=True)
class Settings:
    budget: int
    batch: int
    alpha: float
    margin: float  # futility: smallest lead over a control worth detecting (q − ½)
    tolerance: float  # identity: disagreement an identical model may show
    identity_margin: float  # identity: below this disagreement, "same"
    top_k: int
    seed: int
    same_data_controls: bool
    candidates_as_controls: bool
    samples: int = 0  # > 0: the suspect's token is the mode of this many samples
    distribution: bool = False  # the distribution test ran per candidate

    def to_json(self) -> dict[str, Any]:
        """Every setting; the sampling options only when used (so earlier readers see
        the keys they know)."""
        found = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: v for k, v in found.items() if k not in _OPTIONAL or v != _OPTIONAL[k]}


_OPTIONAL: Mapping[str, object] = {"samples": 0, "distribution": False}


@dataclass(frozen=True)
class CandidateResult:
    """One candidate: agreement, the per-control tests (Holm-adjusted) and identity."""

    name: str
    agreement: Agreement
    controls: tuple[ControlTest, ...]
    adjusted_log10_p: tuple[float, ...]  # Holm over every (candidate, control) test
    verdict: DerivationVerdict
    identity: IdentityTest
    identity_verdict: IdentityVerdict
    decided_at: int | None = None  # prompts asked when the derivation verdict was reached
    identity_decided_at: int | None = None
    identity_samples: int = 0  # > 0: the suspect's tokens were modes of this many samples
    distribution: tuple[DistributionTest, ...] = ()  # MMD, and likelihood where it could score

    @property
    def log10_p(self) -> float:
        """log10 p of "closer to X than to every control" (the largest adjusted p)."""
        return max(self.adjusted_log10_p, default=0.0)

    def to_json(self, alpha: float = 0.01) -> dict[str, Any]:
        found = self._json()
        if self.identity_samples:
            found["identity"] |= {
                "samples_per_prompt": self.identity_samples,
                "suspect_tokens": MODAL_NOTE.format(n=self.identity_samples),
            }
        if self.distribution:
            found["distribution"] = [test.to_json(alpha) for test in self.distribution]
        return found

    def _json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "agreement": _agreement_json(self.agreement),
            "derivation": {
                "answers": ["derivation", "distillation"],
                "verdict": self.verdict,
                "prompts_to_verdict": self.decided_at,
                "log10_p": _num(self.log10_p),
                "null": "the suspect agrees with this candidate no more often than with a "
                "control (tested against each control; Holm across all tests)",
                "method": "paired sequential McNemar (mixture e-value on discordant prompts)",
                "controls": [
                    _control_json(test, adjusted)
                    for test, adjusted in zip(self.controls, self.adjusted_log10_p, strict=True)
                ],
            },
            "identity": _identity_json(self.identity, self.identity_verdict)
            | {"prompts_to_verdict": self.identity_decided_at},
        }


@dataclass(frozen=True)
class ProbeResult:
    """Everything one probe found, with what it ran on."""

    suspect: str
    candidates: tuple[CandidateResult, ...]
    control_agreement: tuple[Agreement, ...]
    probes: ProbeSet
    prompts_used: int
    queries: Mapping[str, int]  # per model, answered by the model (cache hits excluded)
    stopped: str  # "decisive", "budget" or "client budget"
    settings: Settings

    @property
    def derived(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.candidates if c.verdict == "closer")

    @property
    def nearest(self) -> str | None:
        """Closed-set identification: the candidate the suspect agrees with most."""
        ranked = sorted(self.candidates, key=lambda c: -c.agreement.hits)
        return ranked[0].name if ranked else None

    @property
    def verdict(self) -> Literal["derived", "none", "inconclusive"]:
        if self.derived:
            return "derived"
        if all(c.verdict == "not_closer" for c in self.candidates):
            return "none"
        return "inconclusive"

    def summary(self) -> str:
        """One sentence, in words, leading with the kind of evidence."""
        head = "Behavioural evidence (not weight evidence): "
        if self.derived:
            names = ", ".join(self.derived)
            return head + (
                f"the suspect behaves like a derivative of {names} (weights or distillation: "
                "behaviour cannot tell) beyond what the controls share with it."
            )
        if self.verdict == "none":
            return head + "the suspect is not closer to any candidate than to the controls."
        return head + "no decision within the budget; more prompts or other controls may help."

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "kind": "behaviour",
            "summary": self.summary(),
            "suspect": self.suspect,
            "verdict": self.verdict,
            "derived_from": list(self.derived),
            "nearest": self.nearest,
            "questions": dict(QUESTIONS),
            "distillation_answered": s.same_data_controls,
            "candidates": [c.to_json(s.alpha) for c in self.candidates],
            "controls": [_agreement_json(a) for a in self.control_agreement],
            "prompts": self.probes.to_json() | {"used": self.prompts_used},
            "queries": dict(self.queries),
            "stopped": self.stopped,
            "settings": s.to_json(),
            "cannot_see": list(CANNOT_SEE),
            "version": __version__,
        }


def _num(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _agreement_json(a: Agreement) -> dict[str, Any]:
    return {
        "model": a.model,
        "rate": _num(a.rate),
        "hits": a.hits,
        "prompts": a.prompts,
        "ci": [_num(a.low), _num(a.high)],
        "ci_method": f"Clopper-Pearson {a.confidence:.0%}, fixed-sample",
    }


def _control_json(test: ControlTest, adjusted: float) -> dict[str, Any]:
    return {
        "control": test.control,
        "candidate_only": test.x_only,
        "control_only": test.control_only,
        "lead": _num(test.lead),
        "log10_e": _num(test.closer.log10_e_max),
        "log10_p": _num(test.log10_p),
        "log10_p_holm": _num(adjusted),
        "fixed_sample_log10_p": _num(test.fixed_log10_p),
        "futility_log10_p": _num(test.futility.log10_p) if test.futility else None,
    }


def _identity_json(test: IdentityTest, verdict: IdentityVerdict) -> dict[str, Any]:
    return {
        "answers": ["identity"],
        "verdict": verdict,
        "disagreements": test.disagreements,
        "prompts": test.prompts,
        "tolerance": test.different.q0,
        "margin": test.same.q0,
        "log10_p_identical": _num(test.different.log10_p),
        "log10_p_not_within_margin": _num(test.same.log10_p),
        "null": "identical: disagreement rate <= tolerance",
        "method": "sequential binomial (mixture e-values) on per-prompt greedy disagreement",
        "mean_top_k_tv": None if test.mean_tv is None else _num(test.mean_tv),
    }
