"""The retrieval vector: a fixed-length summary of a fingerprint for ranking candidates.

A scan cannot run the fingerprint test against a million entries, so each
fingerprint also yields one unit vector whose cosine with another ranks likely
relatives first. It is never evidence: the ranked candidates are tested.

It has to survive what the tests survive, without the Procrustes step the test
runs, so it is built from **Gram matrices**, which no orthogonal change of
basis moves:

- the cosines between the embedding rows of the ``TOKENS`` sketched tokens whose
  keys hash lowest (the same strings in any two models sharing a vocabulary,
  mostly the same ones after a vocabulary extension): survives fine-tuning,
  residual rotation, unit permutation, pruning, depth surgery, MoE upcycling;
- the cosines between the first ``UNITS`` sampled gate (else up) rows of the
  first dense layer: survives a replaced vocabulary (the embedding half then
  carries nothing), not a permutation or width pruning (the embedding half does).

Each half is centred and scaled to norm 1/√2, so the cosine of two vectors is the
mean of the halves' correlations; a missing half is zeros. On the full zoo the
true base ranks first for 28 of 28 derived models (independent bases ≤ 0.21).
"""

from __future__ import annotations

import numpy as np

from forebear.fingerprint.sketch import Fingerprint, hash_order
from forebear.formats.base import Array

__all__ = ["TOKENS", "UNITS", "VECTOR_DIMS", "retrieval_vector"]

TOKENS = 16
UNITS = 16
_PAIRS = TOKENS * (TOKENS - 1) // 2
VECTOR_DIMS = _PAIRS + UNITS * (UNITS - 1) // 2


def retrieval_vector(found: Fingerprint) -> Array:
    """(``VECTOR_DIMS``,) float32, norm 1 (or less when a half is missing)."""
    embedding = _half(found.embedding[hash_order(list(found.tokens))[:TOKENS]], _PAIRS)
    dense = next((layer for layer in found.layers if layer is not None), None)
    if dense is None:
        units = np.zeros(VECTOR_DIMS - _PAIRS)
    else:
        rows = dense.gate if dense.gate is not None else dense.up
        units = _half(rows[:UNITS], VECTOR_DIMS - _PAIRS)
    return np.concatenate([embedding, units]).astype(np.float32)


def _half(rows: Array, size: int) -> Array:
    """The centred upper triangle of ``rows``' cosine matrix, norm 1/√2 (zeros if too few)."""
    if len(rows) < 3:
        return np.zeros(size)
    unit = rows.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True) + 1e-12
    upper = (unit @ unit.T)[np.triu_indices(len(unit), 1)]
    centred = upper - upper.mean()
    scale = np.linalg.norm(centred)
    if scale == 0:
        return np.zeros(size)
    padded = np.zeros(size)
    padded[: len(centred)] = centred / (scale * np.sqrt(2.0))
    return padded
