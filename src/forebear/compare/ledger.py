"""The innovation ledger: which of B's parameters come from A, how much they changed, what is new.

A B layer is inherited when the layer map assigns it an A layer (its MLP
evidence passed the per-cell threshold); all of its parameters count as
inherited — the evidence is the MLP's, attention is carried with its layer.
Token embeddings and the head count as inherited for the share of B's tokens
whose strings A also has, when some layer is inherited and the residual map
fits the shared tokens' embeddings (fit ≥ 0.5). ``changed`` is the
parameter-weighted relative change ``‖B − A‖ / ‖B‖`` of inherited MLPs,
measured on their paired units. This module counts; it tests nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from forebear.align.layers import LayerMap
from forebear.align.residual import ResidualAlignment
from forebear.architectures import Role
from forebear.architectures.resolve import ResolvedModel, entry_shape
from forebear.compare.result import LayerEvidence, Ledger, LedgerLayer
from forebear.model import Model

__all__ = ["build_ledger", "parameters_by_layer"]

_EMBEDDING_FIT = 0.5
_VOCAB_ROLES = frozenset({Role.EMBED_TOKENS, Role.LM_HEAD})


def parameters_by_layer(resolved: ResolvedModel) -> tuple[dict[int | None, int], int]:
    """Parameters per layer (None: outside layers) and of the vocabulary-indexed roles."""
    infos = resolved.reader.tensors()
    per_layer: dict[int | None, int] = {}
    vocabulary = 0
    for entry in resolved.entries:
        size = int(np.prod(entry_shape(entry, infos[entry.tensor].shape)))
        per_layer[entry.layer] = per_layer.get(entry.layer, 0) + size
        if entry.role in _VOCAB_ROLES:
            vocabulary += size
    return per_layer, vocabulary


def _widths(resolved: ResolvedModel) -> tuple[int, ...]:
    widths = []
    for layer in resolved.layers:
        if resolved.has(Role.MLP_UP, layer):
            widths.append(resolved.shape(Role.MLP_UP, layer)[0])
        elif resolved.has(Role.MOE_EXPERT_UP, layer, 0):
            widths.append(resolved.shape(Role.MOE_EXPERT_UP, layer, 0)[0])
        else:
            widths.append(0)
    return tuple(widths)


def build_ledger(
    model_a: Model,
    model_b: Model,
    residual: ResidualAlignment | None,
    cells: Mapping[tuple[int, int], LayerEvidence],
    layer_map: LayerMap | None,
) -> Ledger | None:
    if layer_map is None:
        return None
    rb = model_b.resolved
    per_layer, vocabulary_parameters = parameters_by_layer(rb)
    total = sum(per_layer.values())
    layers: list[LedgerLayer] = []
    inherited = 0
    weighted_delta = weight = 0.0
    for b_layer, source in enumerate(layer_map.sources):
        size = per_layer.get(b_layer, 0)
        cell = None if source is None else cells.get((source, b_layer))
        delta = None if cell is None else cell.relative_delta
        layers.append(
            LedgerLayer(b_layer, source, None if cell is None else cell.log10_p, delta, size)
        )
        if source is not None:
            inherited += size
            if delta is not None and np.isfinite(delta):
                weighted_delta += delta * size
                weight += size
    vocab_a, vocab_b = model_a.vocabulary, model_b.vocabulary
    shared = None if residual is None else residual.tokens
    new_tokens = None
    if vocab_b is not None and shared is not None and vocab_a is not None:
        new_tokens = max(vocab_b.size - shared, 0)
    if inherited and residual is not None and residual.fit >= _EMBEDDING_FIT and rb.dims.vocab:
        inherited += int(vocabulary_parameters * min(residual.tokens / rb.dims.vocab, 1.0))
    return Ledger(
        inherited_fraction=inherited / total if total else 0.0,
        changed=weighted_delta / weight if weight else None,
        layers=tuple(layers),
        new_layers=tuple(j for j, s in enumerate(layer_map.sources) if s is None),
        dropped_layers=layer_map.dropped,
        repeated_layers=layer_map.repeated,
        shared_tokens=shared,
        new_tokens=new_tokens,
        units_a=_widths(model_a.resolved),
        units_b=_widths(rb),
        experts_b=rb.dims.experts or 0,
    )
