"""Synthetic vector-only records, to test and measure the index at scale without models.

Real retrieval vectors cluster (models of one lineage sit near their base), so
these do too: ``families`` random unit centres, each record its centre plus
isotropic noise of norm about ``spread``, renormalised. Records carry no
fingerprint (``blob`` None): scans rank them, nothing can test them. Refs are
``synthetic/NNNNNNN``, so they never collide with real models.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from forebear.fingerprint.sketch import FINGERPRINT_VERSION
from forebear.fingerprint.vector import VECTOR_DIMS
from forebear.formats.base import Array
from forebear.index.card import CardClaims
from forebear.index.record import IndexRecord, utc_now

__all__ = ["HIDDEN_SIZES", "synthetic_records", "synthetic_vectors"]

HIDDEN_SIZES = (2048, 3072, 4096, 5120, 8192)
_BLOCK = 10_000


def synthetic_vectors(
    count: int, rng: np.random.Generator, *, families: int = 1000, spread: float = 0.6
) -> Array:
    """(count, VECTOR_DIMS) float32 unit vectors in ``families`` clusters."""
    centres = _unit(rng.standard_normal((families, VECTOR_DIMS)))
    members = centres[rng.integers(0, families, size=count)]
    noise = rng.standard_normal((count, VECTOR_DIMS)) * (spread / np.sqrt(VECTOR_DIMS))
    return _unit(members + noise).astype(np.float32)


def synthetic_records(
    count: int, rng: np.random.Generator, *, start: int = 0, families: int = 1000
) -> Iterator[IndexRecord]:
    """``count`` vector-only records ``synthetic/{start}`` …, made a block at a time."""
    created = utc_now()
    card = CardClaims()
    for first in range(start, start + count, _BLOCK):
        size = min(_BLOCK, start + count - first)
        vectors = synthetic_vectors(size, rng, families=families)
        hidden = rng.choice(HIDDEN_SIZES, size=size)
        for offset in range(size):
            width = int(hidden[offset])
            yield IndexRecord(
                ref=f"synthetic/{first + offset:07d}",
                revision=None,
                fingerprint_version=FINGERPRINT_VERSION,
                family="synthetic",
                structure={
                    "family": "synthetic",
                    "hidden": width,
                    "layers": 32,
                    "vocab": 32000,
                    "mlp_widths": [],
                },
                card=card,
                vector=vectors[offset],
                created=created,
            )


def _unit(rows: Array) -> Array:
    normed: Array = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normed
