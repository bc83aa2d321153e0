"""The residual-stream map between two models, found through their token embeddings.

A function-preserving re-parameterisation may permute, flip or rotate the
residual stream (with norm gains folded into the matrices that read it).
Token embeddings live in that stream, so rows of the two embedding matrices
**for the same token string** (never the same token id: vocabularies differ)
fix the map: the orthogonal Procrustes solution ``R = argmin ‖X R − Y‖`` over
``Rᵀ R = I`` (or ``R Rᵀ = I`` when B's stream is narrower), with ``X``, ``Y``
the shared tokens' embeddings, centred. A vector in A's stream maps to B's as
``x R``.

Tokens are taken in a deterministic, well-spread order and capped (``limit``,
but never fewer than twice the width, so the map is determined), so the rows
read are few for a large vocabulary. When the rows already agree (mean cosine
≥ ``IDENTITY_FIT``) the map is the identity and no SVD is needed. ``fit`` is the mean cosine of
aligned rows: near 1 when B's embeddings descend from A's, small otherwise —
descriptive only (same-data models share embedding geometry), never a test.
This module owns the map; it reads the embeddings, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forebear.architectures import Role
from forebear.architectures.resolve import ResolvedModel
from forebear.architectures.vocabulary import Vocabulary, shared_tokens
from forebear.formats.base import Array

__all__ = ["ResidualAlignment", "align_residual"]

_MIN_TOKENS_PER_DIM = 1.0  # fewer shared tokens than this × width leaves the map underdetermined
# Rows that already agree this well (mean cosine) are taken as the identity map.
IDENTITY_FIT = 0.8


@dataclass(frozen=True)
class ResidualAlignment:
    rotation: Array | None  # (hidden_a, hidden_b): x_a @ rotation ~ x_b; None: the identity
    tokens: int  # shared token strings used
    fit: float  # mean cosine of the aligned embedding rows
    source: str  # "token strings" or "token ids (no vocabularies)"
    identity_like: bool  # the map is (close to) the identity: no re-parameterisation
    rows_read: int  # embedding rows read from each model


def _spread(count: int, limit: int) -> Array:
    """``min(count, limit)`` indices spread evenly over ``range(count)``, deterministic."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def _rows(resolved: ResolvedModel, ids: Array) -> Array:
    return resolved.read_row_set(Role.EMBED_TOKENS, rows=ids).astype(np.float32, copy=False)


def align_residual(
    a: ResolvedModel,
    b: ResolvedModel,
    vocab_a: Vocabulary | None,
    vocab_b: Vocabulary | None,
    limit: int = 8192,
) -> ResidualAlignment | None:
    """The residual map from A to B, or None when too few tokens are shared to fix it."""
    if not (a.has(Role.EMBED_TOKENS) and b.has(Role.EMBED_TOKENS)):
        return None
    width_a, width_b = a.dims.hidden or 0, b.dims.hidden or 0
    if vocab_a is not None and vocab_b is not None:
        pairs = np.array(shared_tokens(vocab_a, vocab_b), dtype=np.int64).reshape(-1, 2)
        source = "token strings"
    elif a.dims.vocab == b.dims.vocab and a.dims.vocab:
        pairs = np.repeat(np.arange(a.dims.vocab, dtype=np.int64)[:, None], 2, axis=1)
        source = "token ids (no vocabularies)"
    else:
        return None
    rows_a, rows_b = a.dims.vocab or 0, b.dims.vocab or 0
    pairs = pairs[(pairs[:, 0] < rows_a) & (pairs[:, 1] < rows_b)]
    if len(pairs) < _MIN_TOKENS_PER_DIM * max(width_a, width_b):
        return None
    # At least two rows per dimension, so the map is determined, whatever the limit.
    chosen = pairs[_spread(len(pairs), max(limit, 2 * max(width_a, width_b)))]
    x, y = _rows(a, chosen[:, 0]), _rows(b, chosen[:, 1])
    x -= x.mean(axis=0)
    y -= y.mean(axis=0)
    if width_a == width_b and (fit := _fit(x, y)) >= IDENTITY_FIT:
        # The embeddings already agree: no re-parameterisation to solve, no SVD of a
        # width × width matrix (tens of seconds at width 4096) and no matrix to hold.
        return ResidualAlignment(None, len(pairs), fit, source, True, len(chosen))
    left, _, right = np.linalg.svd(x.T @ y, full_matrices=False)
    rotation = left @ right
    fit = _fit(x @ rotation, y)
    identity_like = width_a == width_b and float(np.mean(np.diag(rotation))) > 0.9
    return ResidualAlignment(rotation, len(pairs), fit, source, identity_like, len(chosen))


def _fit(mapped: Array, target: Array) -> float:
    """Mean cosine of corresponding rows."""
    dots = np.einsum("ij,ij->i", mapped, target, dtype=np.float64)
    norms = np.sqrt(
        np.einsum("ij,ij->i", mapped, mapped, dtype=np.float64)
        * np.einsum("ij,ij->i", target, target, dtype=np.float64)
    )
    return float(np.mean(dots / np.maximum(norms, 1e-30)))
