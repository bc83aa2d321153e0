"""Which layer of A each layer of B comes from, with gaps and repeats.

Depth pruning drops layers; depth up-scaling repeats them, and not
monotonically: SOLAR stacks A's layers ``0..k`` and then ``j..L`` with
``j ≤ k``, so B's sequence of sources goes back. Given an evidence matrix
``E[j, i]`` (B layer ``j`` against A layer ``i``, in −log10 p; higher is
stronger), ``align_layers`` gives each B layer the A layer with the strongest
evidence, or none (a new layer) when no cell reaches ``threshold``. Per-cell
evidence for a derived layer is overwhelming (it is a test on thousands of
unit pairs), so no ordering prior is needed, and none is imposed; the map
reports the order it finds (``monotone``).

The map is evidence for the ledger, not a test: the p-value is computed over
every cell before the map is chosen (see ``forebear.compare``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from forebear.formats.base import Array

__all__ = ["LayerMap", "align_layers"]


@dataclass(frozen=True)
class LayerMap:
    sources: tuple[int | None, ...]  # per B layer: the A layer it comes from, or None (new)
    a_layers: int

    @property
    def dropped(self) -> tuple[int, ...]:
        """A layers that no B layer comes from."""
        used = {source for source in self.sources if source is not None}
        return tuple(layer for layer in range(self.a_layers) if layer not in used)

    @property
    def repeated(self) -> tuple[int, ...]:
        """A layers that more than one B layer comes from."""
        used = [source for source in self.sources if source is not None]
        return tuple(sorted({layer for layer in used if used.count(layer) > 1}))

    @property
    def monotone(self) -> bool:
        used = [source for source in self.sources if source is not None]
        return all(x <= y for x, y in itertools.pairwise(used))


def align_layers(evidence: Array, threshold: float) -> LayerMap:
    """Each B layer (row) to its strongest A layer (column) at or above ``threshold``."""
    scores = np.where(np.isfinite(evidence), evidence, -np.inf)
    _layers_b, layers_a = scores.shape
    sources: list[int | None] = []
    for row in scores:
        best = int(np.argmax(row)) if layers_a else 0
        sources.append(best if layers_a and row[best] >= threshold else None)
    return LayerMap(tuple(sources), layers_a)
