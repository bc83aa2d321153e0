"""From a p-value, the ledger and the structure of both models to one verdict class and its reasons.

The p-value decides *whether* B is derived (``REPORTING_LOG10_P``); the
ledger and the structures decide *how*, in this order: identical weights;
a re-packaged copy (another dtype or quantisation, weights within rounding);
structurally modified (depth, MLP width, residual width, experts or the
vocabulary changed); light fine-tune or heavy continued training by how far
the inherited MLPs moved. Thresholds on that change are descriptive and come
from the zoo (see docs/methods.md); they never turn an "independent" into a
"derived". This module owns the wording; it computes no statistic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from forebear.align.layers import LayerMap
from forebear.align.residual import ResidualAlignment
from forebear.compare.result import (
    INCONCLUSIVE_LOG10_P,
    REPORTING_LOG10_P,
    LayerEvidence,
    Ledger,
    Verdict,
)
from forebear.model import Model

__all__ = ["Shape", "decide", "storage_error"]

IDENTICAL_DELTA = 1e-6
COPY_DELTA = 0.06  # ‖B − A‖ / ‖B‖ of a Q4-or-better quantisation or a dtype recast, at most
LIGHT_DELTA = 0.35
# Relative rounding of stored types, coarsest first (lower-case substrings of the readers'
# type names; "bf16" before "f16"). A copy's change is at most COPY_FACTOR times the coarser
# side's: the zoo's recasts and quantisations measure 0.0002 (fp16), 0.0019 (bf16) and 0.0054
# (Q8_0, GPTQ int8) against thresholds of 0.0015, 0.012 and 0.012, while its light fine-tunes
# change 0.04 to 0.07 and a 70/30 merge sits 0.022 from its main parent — which the flat
# COPY_DELTA called "repackaged copy" whenever the two were stored differently.
STORAGE_ERROR = (
    (("q2", "q3", "q4", "int4", "nf4", "f8", "e4m3", "e5m2"), 2.0**-4),
    (("q5",), 2.0**-6),
    (("q6",), 2.0**-7),
    (("q8", "int8", "i8", "bf16"), 2.0**-8),
    (("f16",), 2.0**-11),
)
COPY_FACTOR = 3.0
_NEW_TOKEN_SHARE = 0.01


@dataclass(frozen=True)
class Shape:
    """What the verdict needs of one model's structure, from its weights or its fingerprint."""

    layers: int
    hidden: int | None
    experts: int
    dtypes: frozenset[str] | None  # stored tensor types; None: unknown (an old fingerprint)

    @classmethod
    def of_model(cls, model: Model) -> Shape:
        resolved = model.resolved
        infos = model.reader.tensors()
        return cls(
            layers=len(resolved.layers),
            hidden=resolved.dims.hidden,
            experts=resolved.dims.experts or 0,
            dtypes=frozenset(str(infos[e.tensor].dtype) for e in resolved.entries),
        )


def _structure(a: Shape, b: Shape, ledger: Ledger | None, vocab_b: int | None) -> list[str]:
    changes = []
    if a.layers != b.layers:
        changes.append(f"depth {a.layers} → {b.layers} layers")
    if a.hidden != b.hidden:
        changes.append(f"residual width {a.hidden} → {b.hidden}")
    if ledger is not None:
        if ledger.units_a and ledger.units_b and set(ledger.units_a) != set(ledger.units_b):
            changes.append(f"MLP width {max(ledger.units_a)} → {max(ledger.units_b)}")
        if a.experts != ledger.experts_b:
            changes.append(f"experts {a.experts} → {ledger.experts_b}")
        if ledger.new_tokens and vocab_b and ledger.new_tokens > _NEW_TOKEN_SHARE * vocab_b:
            changes.append(f"vocabulary: {ledger.new_tokens} of B's tokens are not A's")
    return changes


def _reparameterised(
    residual: ResidualAlignment | None, cells: Mapping[tuple[int, int], LayerEvidence]
) -> list[str]:
    found = []
    if residual is not None and not residual.identity_like:
        found.append("residual stream permuted or rotated relative to A (solved by Procrustes)")
    units_hidden = [
        c for c in cells.values()
        if c.a_layer == c.b_layer and c.log10_p <= REPORTING_LOG10_P
        and (c.log10_p_same_position is None or c.log10_p_same_position > REPORTING_LOG10_P)
    ]  # fmt: skip
    if units_hidden:
        found.append(
            f"hidden units permuted in {len(units_hidden)} layer(s): only the matched-unit test "
            "sees them"
        )
    return found


def decide(
    shape_a: Shape,
    shape_b: Shape,
    vocab_b: int | None,
    log10_p: float,
    residual: ResidualAlignment | None,
    source: str,
    cells: Mapping[tuple[int, int], LayerEvidence],
    layer_map: LayerMap | None,
    ledger: Ledger | None,
) -> tuple[Verdict, list[str]]:
    reasons: list[str] = []
    if not cells:
        why = "no layer of B could be compared with a layer of A"
        if source == "none":
            why = "too few shared tokens to map A's residual stream onto B's, and widths differ"
        return "inconclusive", [why]
    if log10_p > INCONCLUSIVE_LOG10_P:
        return "independent", [f"no evidence of shared initialisation (p = {10**log10_p:.2g})"]
    if log10_p > REPORTING_LOG10_P:
        return "inconclusive", [
            f"weak evidence (log10 p = {log10_p:.1f}), above the reporting threshold "
            f"{REPORTING_LOG10_P:g}"
        ]
    reasons.append(f"shared initialisation: log10 p = {log10_p:.1f}")
    structure = _structure(shape_a, shape_b, ledger, vocab_b)
    reparameterised = _reparameterised(residual, cells)
    reasons += reparameterised
    change = None if ledger is None else ledger.changed
    if ledger is not None:
        reasons.append(f"{ledger.inherited_fraction:.0%} of B's parameters inherited")
    if structure:
        return "derived: structurally modified", reasons + structure
    if change is None:
        return "derived: structurally modified", [*reasons, "no inherited MLP to measure change"]
    reasons.append(f"inherited MLPs changed by {change:.3g} (relative)")
    if change < IDENTICAL_DELTA and reparameterised:
        return "repackaged copy", [*reasons, "a function-preserving re-parameterisation of A"]
    stored_a, stored_b = shape_a.dtypes, shape_b.dtypes
    if change < IDENTICAL_DELTA and stored_a == stored_b:
        return "identical", reasons
    if change < _copy_delta(stored_a, stored_b) and stored_a != stored_b:
        stored = "types unknown" if stored_b is None else ", ".join(sorted(stored_b))
        return "repackaged copy", [*reasons, f"stored differently ({stored})"]
    if change <= LIGHT_DELTA:
        return "derived: light fine-tune", reasons
    return "derived: heavy continued training", reasons


def storage_error(dtypes: frozenset[str] | None) -> float | None:
    """The relative rounding of the coarsest of ``dtypes`` (2⁻²⁴ for float32 and anything not
    in ``STORAGE_ERROR``); None when the types are unknown."""
    if dtypes is None:
        return None
    kinds = [kind.lower() for kind in dtypes]
    for names, error in STORAGE_ERROR:
        if any(name in kind for kind in kinds for name in names):
            return error
    return 2.0**-24


def _copy_delta(stored_a: frozenset[str] | None, stored_b: frozenset[str] | None) -> float:
    errors = [storage_error(stored_a), storage_error(stored_b)]
    if None in errors:
        return COPY_DELTA
    return min(COPY_DELTA, COPY_FACTOR * max(e for e in errors if e is not None))
