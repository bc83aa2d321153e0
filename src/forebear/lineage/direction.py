"""Which of two related models is the parent: evidence from the weights alone.

Three kinds, strongest first, each as log-odds that ``u`` is ``v``'s parent:

- **structure**: surgery only goes one way — a model with layers dropped or
  repeated, fewer MLP units, routed experts where the other has a dense MLP, or a
  vocabulary that holds all of the other's token strings and more is the child
  (``STRUCTURE_LOG_ODDS``);
- **precision**: of two copies (identical or repackaged), the one stored more
  coarsely is the child — rounding loses what cannot be restored;
- **norm growth**: training without strong weight decay grows weights. Per
  matrix, the RMS of the rows as they act (norm scales folded into the rows that
  read the stream), ``log(rms_v / rms_u)`` over the matrices both hold; the
  statistic is their t-score, halved for the matrices' dependence. On the full
  zoo every one of its 14 training edges (fine-tunes, continued pre-training,
  re-parameterised or pruned copies retrained) grew, from +0.01 % (a light
  fine-tune: no evidence, honestly) to +30 %; merges do not (a merge may shrink).
  It fails where weight decay dominates a long fine-tune; the rule was read off
  that same zoo.

This module scores pairs; ``tree`` roots the forest and turns scores into
per-edge probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from forebear.architectures import Role
from forebear.compare.result import Comparison
from forebear.compare.verdict import storage_error
from forebear.compare.views import ReadCounter, first_mlp_view
from forebear.fingerprint.sketch import Fingerprint
from forebear.formats.base import Array
from forebear.lineage.adjacency import tensor_digests
from forebear.lineage.sample import unit_roundoff
from forebear.model import Model

__all__ = ["DirectionEvidence", "ModelProfile", "direction", "profile", "sketch_profile"]

STRUCTURE_LOG_ODDS = 6.0
PRECISION_LOG_ODDS = 4.0
_CORRELATION_DEFLATION = 2.0  # the norm t-score is divided by this (matrices are not independent)
_READING = ((Role.ATTN_Q, Role.ATTN_NORM), (Role.ATTN_K, Role.ATTN_NORM),
            (Role.ATTN_V, Role.ATTN_NORM), (Role.ATTN_O, None))  # fmt: skip


@dataclass(frozen=True)
class ModelProfile:
    """What direction needs of one model, read once."""

    name: str
    roundoff: float  # relative rounding of its coarsest stored type
    vocab: int | None
    layers: int
    experts: int
    units: int  # MLP units over all layers (first expert for MoE layers)
    rms: Mapping[tuple[str, int], float]  # (matrix, layer) -> RMS of the rows as they act
    # role:layer:expert -> (digest, size) of each non-constant tensor (adjacency.tensor_digests);
    # empty from a fingerprint
    tensors: Mapping[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DirectionEvidence:
    log_odds: float  # that u is v's parent (negative: v is u's)
    reasons: tuple[str, ...]


def profile(model: Model) -> ModelProfile:
    """Read ``model``'s direction statistics (every MLP and attention matrix once) and its
    tensors' digests (every tensor once more)."""
    resolved = model.resolved
    rms: dict[tuple[str, int], float] = {}
    units = 0
    for layer in resolved.layers:
        for role, norm in _READING:
            if resolved.has(role, layer):
                matrix = resolved.read(role, layer).astype(np.float64)
                if norm is not None and resolved.has(norm, layer):
                    matrix = matrix * resolved.norm_scale(norm, layer)[None, :]
                rms[(role.value.name, layer)] = _rms(matrix)
        view = first_mlp_view(resolved, "model", layer, ReadCounter())
        if view is None:
            continue
        units += view.units
        for label, rows in (("gate", view.gate), ("up", view.up), ("down", view.down)):
            if rows is not None:
                rms[(f"mlp.{label}", layer)] = _rms(rows)
    return ModelProfile(
        model.name, unit_roundoff(model), resolved.dims.vocab, len(resolved.layers),
        resolved.dims.experts or 0, units, rms, tensor_digests(model),
    )  # fmt: skip


def sketch_profile(name: str, found: Fingerprint) -> ModelProfile:
    """A profile from a fingerprint's structure: no norms (a fingerprint keeps no whole
    matrices), so direction rests on structure and stored precision alone."""
    structure = found.meta["structure"]
    dtypes = structure.get("dtypes")
    error = storage_error(frozenset(dtypes) if isinstance(dtypes, list) else None)
    widths = [w for w in structure.get("mlp_widths", []) if isinstance(w, int)]
    return ModelProfile(
        name, 2.0**-24 if error is None else error, structure.get("vocab"),
        int(structure.get("layers", 0)), int(structure.get("experts") or 0), sum(widths), {},
    )  # fmt: skip


def _rms(matrix: Array) -> float:
    return float(np.sqrt(np.mean(np.square(matrix, dtype=np.float64))))


def direction(u: ModelProfile, v: ModelProfile, found: Comparison) -> DirectionEvidence:
    """Log-odds that ``u`` is ``v``'s parent, from ``found`` (the comparison of u as A with v
    as B) and the two profiles."""
    structural = _structure(u, v, found)
    if structural is not None:
        return structural
    if found.verdict in ("identical", "repackaged copy"):
        return _precision(u, v)
    return _norm_growth(u, v)


def _structure(u: ModelProfile, v: ModelProfile, found: Comparison) -> DirectionEvidence | None:
    ledger = found.ledger
    signs: list[tuple[float, str]] = []
    if ledger is not None and (ledger.dropped_layers or ledger.repeated_layers):
        what = "dropped" if ledger.dropped_layers else "repeated"
        signs.append((1.0, f"{v.name} has layers of {u.name} {what}"))
    elif u.layers != v.layers and ledger is not None and ledger.new_layers:
        signs.append((-1.0, f"{u.name} has layers {v.name} lacks"))
    if u.experts != v.experts:
        upcycled = v if v.experts > u.experts else u
        signs.append((1.0 if upcycled is v else -1.0, f"{upcycled.name} adds routed experts"))
    elif u.units != v.units and u.layers == v.layers:
        smaller = v if v.units < u.units else u
        signs.append((1.0 if smaller is v else -1.0, f"{smaller.name} has fewer MLP units"))
    extended = _vocabulary(u, v, found)
    if extended is not None:
        signs.append(extended)
    if not signs:
        return None
    total = sum(sign for sign, _ in signs)
    reasons = tuple(reason for _, reason in signs)
    if total == 0:
        return DirectionEvidence(0.0, (*reasons, "the changes disagree"))
    return DirectionEvidence(math.copysign(STRUCTURE_LOG_ODDS, total), reasons)


def _vocabulary(u: ModelProfile, v: ModelProfile, found: Comparison) -> tuple[float, str] | None:
    shared = None if found.ledger is None else found.ledger.shared_tokens
    if shared is None or u.vocab is None or v.vocab is None or u.vocab == v.vocab:
        return None
    only_u, only_v = u.vocab - shared, v.vocab - shared
    if only_u <= 0 < only_v:
        return 1.0, f"{v.name} holds every token string of {u.name} and {only_v} more"
    if only_v <= 0 < only_u:
        return -1.0, f"{u.name} holds every token string of {v.name} and {only_u} more"
    return None


def _precision(u: ModelProfile, v: ModelProfile) -> DirectionEvidence:
    if u.roundoff == v.roundoff:
        return DirectionEvidence(0.0, ("copies stored at the same precision",))
    coarse = v if v.roundoff > u.roundoff else u
    sign = 1.0 if coarse is v else -1.0
    return DirectionEvidence(sign * PRECISION_LOG_ODDS, (f"{coarse.name} is stored more coarsely",))


def _norm_growth(u: ModelProfile, v: ModelProfile) -> DirectionEvidence:
    keys = sorted(set(u.rms) & set(v.rms))
    ratios = np.array([math.log(v.rms[k] / u.rms[k]) for k in keys if u.rms[k] > 0 < v.rms[k]])
    if len(ratios) < 3 or float(np.std(ratios)) == 0.0:
        return DirectionEvidence(0.0, ("too few shared matrices to compare norms",))
    t = float(np.mean(ratios) / (np.std(ratios, ddof=1) / math.sqrt(len(ratios))))
    z = t / _CORRELATION_DEFLATION
    grown = v if z > 0 else u
    reason = (f"{grown.name}'s weights are larger (mean log RMS ratio {np.mean(ratios):+.4f} "
              f"over {len(ratios)} matrices, z {abs(z):.1f})")  # fmt: skip
    return DirectionEvidence(1.6 * z, (reason,))  # logistic ≈ normal CDF at 1.6 z
