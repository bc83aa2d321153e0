"""Hidden units of an MLP as vectors in a common residual basis, and their cosines.

A unit ``u`` of a (gated) MLP reads the residual stream through row ``u`` of
``gate`` and ``up`` and writes it through column ``u`` of ``down``. The norm
before the MLP multiplies the stream by its scale ``g``, which a
re-parameterisation may fold into the reading rows, so rows are compared with
``g`` folded in (``row · diag(g)``) on both sides. B's rows are then mapped into
A's basis by the transposed residual map (``ResidualAlignment.rotation``).

``strip_shared`` removes, from a set of unit vectors, their mean and their top
``k`` principal directions. Independently trained models of one architecture
and data learn similar features in a few leading directions (convergent
learning); what survives there is the initialisation's high-dimensional
residue, which only a derived model shares. The approximate test compares
units in that bulk.

This module owns unit geometry; it decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forebear.formats.base import Array

__all__ = [
    "MlpView",
    "StrippedRows",
    "normalise_rows",
    "strip_shared",
    "top_directions",
    "unit_cosines",
]


@dataclass(frozen=True)
class MlpView:
    """One MLP (a dense MLP, or one expert) with rows in a common residual basis.

    ``gate`` and ``up``: (units, hidden); ``down``: (units, hidden), i.e. the
    columns of the stored down projection as rows; ``gate`` is None for an
    ungated MLP. ``label`` names it in the ledger ("mlp", "expert 3", ...).
    """

    label: str
    gate: Array | None
    up: Array
    down: Array | None
    parameters: int  # parameters of this MLP in its model

    @property
    def units(self) -> int:
        return int(self.up.shape[0])

    def take(self, units: Array) -> MlpView:
        pick = np.asarray(units, dtype=np.int64)
        return MlpView(
            self.label,
            None if self.gate is None else self.gate[pick],
            self.up[pick],
            None if self.down is None else self.down[pick],
            self.parameters,
        )


def normalise_rows(matrix: Array) -> Array:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalised: Array = matrix / np.maximum(norms, 1e-30)
    return normalised


def top_directions(centred: Array, k: int) -> Array:
    """The top ``k`` right singular vectors (k × columns): exact for small matrices, else a
    randomised range finder with power iterations (Halko et al. 2011), seeded."""
    if 4 * k >= min(centred.shape):
        _, _, right = np.linalg.svd(centred, full_matrices=False)
        top: Array = right[:k]
        return top
    rng = np.random.default_rng(0)
    sketch = centred @ rng.standard_normal((centred.shape[1], k + 16)).astype(centred.dtype)
    for _ in range(2):
        sketch, _ = np.linalg.qr(sketch)
        sketch = centred @ (centred.T @ sketch)
    basis, _ = np.linalg.qr(sketch)
    _, _, right = np.linalg.svd(basis.T @ centred, full_matrices=False)
    top = right[:k]
    return top


def strip_shared(
    matrix: Array,
    k: int,
    keep: Array | None = None,
    fit_rows: int = 2048,
    normalise: bool = False,
    chunk: int = 4096,
) -> Array:
    """Rows ``keep`` (default all) minus the mean and the top ``k`` principal directions
    (and scaled to unit length with ``normalise``), as float32.

    Mean and directions are estimated from at most ``fit_rows`` rows spread evenly
    over the matrix, and rows are processed ``chunk`` at a time, so time and memory
    stay bounded for wide MLPs.
    """
    rows = matrix.shape[0]
    fit = matrix if rows <= fit_rows else matrix[np.linspace(0, rows - 1, fit_rows).astype(int)]
    mean = fit.mean(axis=0, keepdims=True)
    top = None if k <= 0 or min(fit.shape) <= k else top_directions(fit - mean, k)
    index = np.arange(rows) if keep is None else np.asarray(keep)
    out = np.empty((len(index), matrix.shape[1]), dtype=np.float32)
    for start in range(0, len(index), chunk):
        block = matrix[index[start : start + chunk]] - mean
        if top is not None:
            block = block - (block @ top.T) @ top
        out[start : start + chunk] = normalise_rows(block) if normalise else block
    return out


@dataclass(frozen=True)
class StrippedRows:
    """``strip_shared(matrix, k, normalise=True)`` without materialising it.

    Cosines with query vectors are ``(q P) · (row − mean) / ‖(row − mean) P‖`` for
    the projection ``P`` off the top directions, computed from the raw rows; a wide
    MLP's stripped copy (as large as the MLP itself) never exists.
    """

    matrix: Array  # (rows, width): the raw rows, not copied
    mean: Array  # (1, width)
    top: Array | None  # (k, width) orthonormal, or None when nothing is stripped
    norms: Array  # (rows,): length of each stripped row

    @classmethod
    def of(cls, matrix: Array, k: int, fit_rows: int = 2048, chunk: int = 4096) -> StrippedRows:
        rows = matrix.shape[0]
        pick = np.linspace(0, rows - 1, fit_rows).astype(int) if rows > fit_rows else None
        fit = matrix if pick is None else matrix[pick]
        mean = fit.mean(axis=0, keepdims=True).astype(np.float32)
        top = None if k <= 0 or min(fit.shape) <= k else top_directions(fit - mean, k)
        top = None if top is None else top.astype(np.float32)
        norms = np.empty(rows, dtype=np.float64)
        for start in range(0, rows, chunk):
            block = matrix[start : start + chunk] - mean
            squared = np.einsum("ij,ij->i", block, block, dtype=np.float64)
            if top is not None:
                inside = block @ top.T
                squared -= np.einsum("ij,ij->i", inside, inside, dtype=np.float64)
            norms[start : start + chunk] = np.sqrt(np.maximum(squared, 1e-30))
        return cls(matrix, mean, top, norms.astype(np.float32))

    def _project(self, queries: Array) -> Array:
        if self.top is None:
            return queries
        projected: Array = queries - (queries @ self.top.T) @ self.top
        return projected

    def cosines(self, queries: Array) -> Array:
        """(queries, rows): cosine of each unit-length query with each stripped row."""
        projected = self._project(np.asarray(queries, dtype=np.float32))
        dots = projected @ self.matrix.T - projected @ self.mean.T
        found: Array = dots / self.norms[None, :]
        return found

    def rows(self, index: Array) -> Array:
        """The stripped, unit-length rows ``index``, materialised."""
        block = self.matrix[index] - self.mean
        if self.top is not None:
            block = block - (block @ self.top.T) @ self.top
        return normalise_rows(block).astype(np.float32)


def unit_cosines(rows_b: Array, rows_a: Array) -> Array:
    """Cosine of every row of B (rows of the result) with every row of A (columns)."""
    cosines: Array = normalise_rows(rows_b) @ normalise_rows(rows_a).T
    return cosines
