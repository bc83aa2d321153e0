"""The same-position test between two fingerprints, without the weights.

B's sketched rows are mapped into A's canonical coordinates by the orthogonal
map that best aligns the embedding rows of token strings both fingerprints
sketched (Procrustes, ``dims × dims``). Per layer of equal width and equal
sampled positions, B's unit ``u`` is scored against A's unit ``u`` by the mean
cosine of gate and up rows, and ``stats.assignment_test`` gives the exact
p-value (Chatterjee's bound): under H0 B's units are exchangeable and any fixed
function of their rows — a projection onto a canonical basis included — keeps
them so. Layers combine by Fisher. Like ``compare --fast`` it is blind to
permuted units and to changed widths or depths (it loses power, never validity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forebear.fingerprint.sketch import Fingerprint
from forebear.formats.base import Array
from forebear.stats import assignment_test, fisher

__all__ = ["FingerprintEvidence", "compare_fingerprints"]

_MIN_SHARED_PER_DIM = 2


@dataclass(frozen=True)
class FingerprintEvidence:
    log10_p: float  # Fisher over the compared layers (0: nothing compared)
    layers: tuple[float | None, ...]  # per layer of B: its log10 p, None when not comparable
    shared_tokens: int  # sketched token strings both hold
    fit: float  # mean cosine of the aligned embedding rows
    reason: str | None  # why nothing could be compared, when nothing was


def _unit(rows: Array) -> Array:
    values = rows.astype(np.float64)
    normalised: Array = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-30)
    return normalised


def compare_fingerprints(a: Fingerprint, b: Fingerprint) -> FingerprintEvidence:
    dims = a.embedding.shape[1]
    index_b = {token: i for i, token in enumerate(b.tokens)}
    pairs = [(i, index_b[t]) for i, t in enumerate(a.tokens) if t in index_b]
    empty = tuple(None for _ in b.layers)
    why = None
    if dims != b.embedding.shape[1]:
        why = f"sketch widths differ ({dims} vs {b.embedding.shape[1]})"
    elif len(pairs) < _MIN_SHARED_PER_DIM * dims:
        why = f"only {len(pairs)} sketched token strings in common"
    if why is not None:
        return FingerprintEvidence(0.0, empty, len(pairs), float("nan"), why)
    ia, ib = np.array(pairs).T
    x = a.embedding[ia].astype(np.float64)
    y = b.embedding[ib].astype(np.float64)
    left, _, right = np.linalg.svd(x.T @ y)
    rotation = left @ right  # x @ rotation ≈ y
    fit = float(np.mean(np.sum(_unit(x @ rotation) * _unit(y), axis=1)))
    found: list[float | None] = []
    for index, layer_b in enumerate(b.layers):
        layer_a = a.layers[index] if index < len(a.layers) else None
        comparable = (
            layer_a is not None and layer_b is not None and layer_a.width == layer_b.width
            and np.array_equal(layer_a.units, layer_b.units)
            and (layer_a.gate is None) == (layer_b.gate is None)
        )  # fmt: skip
        if not comparable:
            found.append(None)
            continue
        assert layer_a is not None and layer_b is not None
        pieces = [(layer_a.up, layer_b.up)]
        if layer_a.gate is not None and layer_b.gate is not None:
            pieces.append((layer_a.gate, layer_b.gate))
        scores = np.mean(
            [_unit(rb.astype(np.float64) @ rotation.T) @ _unit(ra).T for ra, rb in pieces], axis=0
        )
        test = assignment_test(scores, "same-position units (fingerprints)", "exact",
                               "Chatterjee bound over unit permutations")  # fmt: skip
        found.append(test.log10_p)
    values = [p for p in found if p is not None]
    reason = None if values else "no layer of equal width and sampled positions"
    return FingerprintEvidence(fisher(values), tuple(found), len(pairs), fit, reason)
