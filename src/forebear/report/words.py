"""The words a verdict is read in: p-values, the null, the verdict as a sentence, and what a
weight test cannot see. Shared by the reports and the command line's text output, so both say
the same thing the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from forebear.compare.result import REPORTING_LOG10_P, Comparison

__all__ = [
    "HYPOTHESIS",
    "THRESHOLD",
    "cannot_see",
    "chance_text",
    "comparison_headline",
    "p_short",
    "p_text",
]

HYPOTHESIS = (
    "H0: A and B were initialised independently (no weights in common); the p-value is the "
    "chance of at least this much shared structure if H0 holds (one-sided)"
)
THRESHOLD = (
    f"derived is claimed at p < 1e{REPORTING_LOG10_P:.0f}; between that and 1e-2 the evidence "
    "is called inconclusive"
)

# Said in every report, whether or not the result says it too (matched by the text before ':').
STANDARD_CANNOT_SEE = (
    "distillation: a model trained on another's outputs shares no weights with it; an "
    "'independent' verdict does not rule it out (use the behaviour tier)",
    "training data: two models trained from the same data with different seeds look "
    "independent here, as they should",
    "weight evidence only: this report rests on the weights; behavioural (black-box) "
    "evidence is a separate tier and is reported apart",
)

_HOW = {
    "identical": "identical weights",
    "repackaged copy": "a re-packaged copy: the same weights stored differently",
    "derived: light fine-tune": "a light fine-tune",
    "derived: heavy continued training": "heavy continued training",
    "derived: structurally modified": "structurally modified: layers or widths added, "
    "removed or pruned",
}


def p_text(log10_p: float) -> str:
    """A p-value for the command line: exact digits when readable, a bound when tiny."""
    if log10_p > -4:
        return f"p = {10**log10_p:.3g}"
    return f"p < 1e{int(log10_p)}  (log10 p = {log10_p:.1f})"


def chance_text(log10_p: float) -> str:
    """The p-value as words that end a sentence: "0.31", "below 1e-40"."""
    if log10_p > -4:
        return f"{10**log10_p:.2g}"
    return f"below 1e{int(log10_p)}"


def p_short(log10_p: float) -> str:
    """The p-value in a few characters: "p = 0.31", "p < 1e-40"."""
    return f"p = {10**log10_p:.2g}" if log10_p > -4 else f"p < 1e{int(log10_p)}"


def comparison_headline(result: Comparison) -> str:
    """The verdict in one plain sentence, naming both models."""
    a, b, chance = result.a, result.b, chance_text(result.log10_p)
    if result.verdict in _HOW:
        return (
            f"{b} is statistically consistent with derivation from {a} "
            f"({_HOW[result.verdict]}): the chance of seeing this much shared structure in "
            f"independently initialised models is {chance}."
        )
    if result.verdict == "inconclusive":
        return (
            f"Inconclusive: {b} shows some shared structure with {a} "
            f"({p_short(result.log10_p)}), not enough to claim derivation."
        )
    return (
        f"No evidence that {b} is derived from {a}: their weights are consistent with "
        f"independent initialisation ({p_short(result.log10_p)})."
    )


def cannot_see(given: Iterable[str] = ()) -> tuple[str, ...]:
    """``given`` then each standard limit whose topic ``given`` does not already cover."""
    found = list(dict.fromkeys(given))
    topics = {line.split(":", 1)[0] for line in found}
    found += [line for line in STANDARD_CANNOT_SEE if line.split(":", 1)[0] not in topics]
    return tuple(found)
