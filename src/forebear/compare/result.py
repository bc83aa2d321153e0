"""What ``forebear.compare`` returns: a frozen ``Comparison`` and its JSON form.

Fields carry their conventions: ``log10_p`` is the base-10 log of a one-sided
p-value against H0 "A and B were initialised independently" (0 = p of 1);
``null`` says what that p-value rests on. This module owns the shapes of the
result; it computes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from forebear.stats import fisher

__all__ = [
    "REPORTING_LOG10_P",
    "Comparison",
    "LayerEvidence",
    "Ledger",
    "LedgerLayer",
    "Verdict",
    "plain",
]

# Derived is claimed at p < 1e-6: the bench's zoo shows independent pairs far above it, and a
# claim in a dispute needs more than a conventional 0.05 across thousands of comparisons.
REPORTING_LOG10_P = -6.0
# Between this and the reporting threshold the evidence is called inconclusive.
INCONCLUSIVE_LOG10_P = -2.0

Verdict = Literal[
    "identical",
    "repackaged copy",
    "derived: light fine-tune",
    "derived: heavy continued training",
    "derived: structurally modified",
    "independent",
    "inconclusive",
]
DERIVED_VERDICTS: frozenset[str] = frozenset(
    {
        "identical",
        "repackaged copy",
        "derived: light fine-tune",
        "derived: heavy continued training",
        "derived: structurally modified",
    }
)


@dataclass(frozen=True)
class LayerEvidence:
    """B layer ``b_layer`` against A layer ``a_layer``: the best pairing of their MLPs."""

    a_layer: int
    b_layer: int
    module_a: str  # "mlp", "expert 3", ...
    module_b: str
    log10_p_same_position: float | None  # exact null; None: widths differ
    log10_p_matched: float | None  # approximate null; None: not run
    z_same_position: float | None
    z_matched: float | None
    match_quality: float
    relative_delta: float
    units_sampled: int
    modules_b: int = 1  # MLPs in B's layer (dense, experts)
    modules_b_significant: int = 0  # of those, how many show evidence on their own
    # When the MLP widths differ: for each B unit sampled (in order), the A unit it was
    # matched to (-1: none) — which units a pruned model kept.
    units_from_a: tuple[int, ...] | None = None
    units_b_sampled: tuple[int, ...] | None = None
    # Same-position test of the value rows of sampled attention heads (exact null);
    # None: not run (fast mode, other head layouts, no value projection of its own).
    log10_p_attention: float | None = None

    @property
    def log10_p_exact(self) -> float | None:
        """Fisher's combination of the cell's exact tests (MLP units and value rows are
        permuted independently under H0), or None when neither ran."""
        found = [p for p in (self.log10_p_same_position, self.log10_p_attention) if p is not None]
        return fisher(found) if found else None

    @property
    def log10_p(self) -> float:
        found = [p for p in (self.log10_p_exact, self.log10_p_matched) if p is not None]
        return min(found, default=0.0)


@dataclass(frozen=True)
class LedgerLayer:
    b_layer: int
    a_layer: int | None  # None: new (no significant source)
    log10_p: float | None
    mlp_delta: float | None  # ‖B − A‖ / ‖B‖ over matched units, None when new
    parameters: int


@dataclass(frozen=True)
class Ledger:
    """What of B comes from A: parameters inherited, how much they changed, what is new."""

    inherited_fraction: float  # share of B's parameters in inherited layers and embeddings
    changed: float | None  # parameter-weighted relative delta of inherited MLPs
    layers: tuple[LedgerLayer, ...]
    new_layers: tuple[int, ...]
    dropped_layers: tuple[int, ...]  # A layers with no descendant in B
    repeated_layers: tuple[int, ...]  # A layers B holds more than once
    shared_tokens: int | None
    new_tokens: int | None  # B's tokens whose strings A lacks
    units_a: tuple[int, ...]  # MLP width per layer
    units_b: tuple[int, ...]
    experts_b: int


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    verdict: Verdict
    log10_p: float  # against H0: independent initialisations (see module docstring)
    null: str  # what the reported p-value rests on
    reasons: tuple[str, ...]  # the verdict in words, one fact per line
    cannot_see: tuple[str, ...]  # what weights cannot show (distillation, ...)
    families: tuple[str, str]
    residual: Mapping[str, Any]  # the residual map: tokens, fit, source, identity-like
    evidence: tuple[LayerEvidence, ...]
    layer_map: tuple[int | None, ...]  # per B layer, its A layer
    modules: Mapping[str, Mapping[str, Any]]  # which modules carry the evidence
    ledger: Ledger | None
    tests: Mapping[str, float]  # each combined test's log10 p before the final Bonferroni
    bytes_read: int
    seconds: float
    fast: bool
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def p_value(self) -> float:
        return float(10.0**self.log10_p)

    @property
    def derived(self) -> bool:
        return self.verdict in DERIVED_VERDICTS

    @property
    def change(self) -> float | None:
        """The ledger's relative change of B's inherited MLPs, or None when not measured."""
        changed = None if self.ledger is None else self.ledger.changed
        return None if changed is None else float(changed)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = plain(asdict(self))
        data["p_value"] = self.p_value
        data["derived"] = self.derived
        return data


def plain(value: Any) -> Any:
    """``value`` with mappings as str-keyed dicts, sequences as lists, non-finite floats None
    (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
