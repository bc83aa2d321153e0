"""The TIES fit of ``decompose``: density and weights by grid search, λ in closed form.

TIES (mergekit's ``ties``) trims each parent's task vector ``P_i − B`` to its
largest-magnitude ``density`` share per tensor, elects a sign per value by the
weighted sum, and averages the agreeing values weighted; the merge is
``B + λ · that``. Density and the first weight are searched on a coarse grid,
then ±3 finer steps around the best, each pass on an evenly spaced subset of the
sample (the parameters are global, so a subset fixes them); λ is least squares.
This module fits; ``decompose`` turns the fit into a ``MergeFit`` and a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forebear.formats.base import Array
from forebear.lineage.sample import SharedSample

__all__ = ["fit_ties"]


def _ranks(sample: SharedSample, index: int, base: int) -> tuple[Array, Array]:
    """Per value of parent ``index``'s task vector: its magnitude rank within its tensor
    (0 = largest), and the tensor's sampled size."""
    ranks, sizes = [], []
    for tensor in sample.tensors:
        delta = np.abs(tensor.values[index] - tensor.values[base])
        order = np.argsort(-delta, kind="stable")
        rank = np.empty(len(delta), dtype=np.int64)
        rank[order] = np.arange(len(delta))
        ranks.append(rank)
        sizes.append(np.full(len(delta), len(delta), dtype=np.int64))
    return np.concatenate(ranks), np.concatenate(sizes)


def _ties_vector(deltas: list[Array], ranks: list[Array], sizes: Array, density: float,
                 weights: Sequence[float]) -> Array:  # fmt: skip
    keep = np.maximum(1, np.floor(density * sizes)).astype(np.int64)
    trimmed = np.stack([w * np.where(r < keep, d, 0.0)
                        for d, r, w in zip(deltas, ranks, weights, strict=True)])  # fmt: skip
    elected = np.sign(trimmed.sum(axis=0))
    agree = (np.sign(trimmed) == elected) & (trimmed != 0)
    mass = np.where(agree, np.asarray(weights, dtype=np.float64)[:, None], 0.0).sum(axis=0)
    total = np.where(agree, trimmed, 0.0).sum(axis=0)
    merged: Array = np.divide(total, mass, out=np.zeros_like(total), where=mass > 0)
    return merged


# The TIES grid: a coarse pass over density × first weight, then passes of ±3 finer steps
# around the best, each on an evenly spaced subset of the sample (the parameters are global,
# so a subset fixes them); the reported residual uses the whole sample.
_TIES_PASSES = ((0.1, 1 << 14), (0.03, 1 << 16), (0.01, 1 << 16), (0.003, 1 << 16))
_NEAR = np.arange(-3, 4)


@dataclass(frozen=True)
class _TiesInputs:
    deltas: list[Array]  # each parent's task vector
    ranks: list[Array]  # each value's magnitude rank within its tensor, per parent
    sizes: Array  # each value's tensor's sampled size
    target: Array  # M − B

    def subset(self, limit: int | None) -> _TiesInputs:
        if limit is None or len(self.target) <= limit:
            return self
        pick = np.linspace(0, len(self.target) - 1, limit).astype(np.int64)
        return _TiesInputs([d[pick] for d in self.deltas], [r[pick] for r in self.ranks],
                           self.sizes[pick], self.target[pick])  # fmt: skip

    def score(self, density: float, weights: tuple[float, ...]) -> tuple[float, float]:
        """(residual norm, λ) of the TIES merge with these parameters, λ by least squares."""
        merged = _ties_vector(self.deltas, self.ranks, self.sizes, density, weights)
        norm = float(np.dot(merged, merged))
        scale = float(np.dot(merged, self.target)) / norm if norm > 0 else 0.0
        return float(np.linalg.norm(self.target - scale * merged)), scale


def fit_ties(sample: SharedSample, m: Array, ps: list[Array], b: Array
             ) -> tuple[tuple[float, ...], dict[str, float], float]:  # fmt: skip
    """TIES weights, {density, lambda} and the residual norm ‖(M − B) − λ·ties‖ for merge
    values ``m``, parents ``ps`` and base ``b`` (flat, in ``sample``'s order)."""
    k = len(ps)
    ranked = [_ranks(sample, i + 1, k + 1) for i in range(k)]
    inputs = _TiesInputs([p - b for p in ps], [r for r, _ in ranked], ranked[0][1], m - b)

    def grid(step: float, centre: tuple[float, float] | None) -> list[tuple[float, float]]:
        if centre is None:
            densities, firsts = np.arange(0.1, 1.0 + 1e-9, step), np.arange(0.1, 0.9 + 1e-9, step)
        else:
            densities = np.clip(centre[0] + step * _NEAR, 0.01, 1.0)
            firsts = np.clip(centre[1] + step * _NEAR, 0.01, 0.99)
        if k != 2:  # more parents: equal weights, density searched alone
            firsts = np.array([1.0 / k])
        return [(float(d), float(w)) for d in np.unique(densities) for w in np.unique(firsts)]

    def weights(first: float) -> tuple[float, ...]:
        return (first, 1.0 - first) if k == 2 else (1.0 / k,) * k

    centre: tuple[float, float] | None = None
    for step, limit in _TIES_PASSES:
        part = inputs.subset(limit)
        centre = min(grid(step, centre), key=lambda c: part.score(c[0], weights(c[1]))[0])
    assert centre is not None
    residual, lam = inputs.score(centre[0], weights(centre[1]))
    return weights(centre[1]), {"density": centre[0], "lambda": lam}, residual
