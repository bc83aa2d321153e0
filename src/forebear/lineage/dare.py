"""The DARE fit of ``decompose``: which values each task vector kept, and the weights.

DARE (mergekit's ``dare_linear``) keeps each value of each task vector ``P_i − B``
at random with probability ``density``, rescales the kept ones by ``1 / density``
and adds them up weighted: ``M − B = Σ c_i · mask_i ⊙ (P_i − B)`` with
``c_i = w_i / density``. Each value of ``M − B`` is then exactly one of the
``2^k`` sums ``Σ_{i ∈ S} c_i d_i`` — the signature fitted here by alternating the
two unknowns: each value's kept set S (the nearest sum), then the ``c_i`` (least
squares on the values as assigned), from the task-arithmetic coefficients at a
density of ½. ``density`` is the share of values kept where a task vector is not
zero; ``w_i = c_i · density``.

Choosing a kept set per value is a free choice, so any model is fitted better than
by task arithmetic: only a residual within storage rounding (an exact merge) says
DARE; ``decompose`` accepts this fit on no other terms.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from forebear.formats.base import Array

__all__ = ["fit_dare"]

_FIT_VALUES = 1 << 16  # values the alternation runs on (evenly spaced over the sample)
_ROUNDS = 25
_CHUNK = 1 << 20  # values assigned at a time on the whole sample (memory: 2^k of these)


def fit_dare(m: Array, ps: list[Array], b: Array
             ) -> tuple[tuple[float, ...], dict[str, float], float]:  # fmt: skip
    """DARE weights, {density} and the residual norm ‖(M − B) − fit‖ for merge values
    ``m``, parents ``ps`` and base ``b`` (flat, aligned)."""
    target = m - b
    deltas = np.stack([p - b for p in ps])  # (k, n)
    subsets = np.array(list(product((False, True), repeat=len(ps))), dtype=np.float64)
    pick = np.linspace(0, len(target) - 1, min(len(target), _FIT_VALUES)).astype(np.int64)
    coefficients = 2.0 * np.linalg.lstsq(deltas[:, pick].T, target[pick], rcond=None)[0]
    kept = subsets[_assign(target[pick], deltas[:, pick], coefficients, subsets)]
    for _ in range(_ROUNDS):
        design = kept * deltas[:, pick].T
        coefficients = np.linalg.lstsq(design, target[pick], rcond=None)[0]
        again = subsets[_assign(target[pick], deltas[:, pick], coefficients, subsets)]
        if np.array_equal(again, kept):
            break
        kept = again
    residual_sq, kept_count, nonzero = 0.0, np.zeros(len(ps)), np.zeros(len(ps))
    for start in range(0, len(target), _CHUNK):
        part = slice(start, start + _CHUNK)
        chosen = subsets[_assign(target[part], deltas[:, part], coefficients, subsets)]
        fit = (chosen * deltas[:, part].T) @ coefficients
        residual_sq += float(np.sum((target[part] - fit) ** 2))
        moved = deltas[:, part].T != 0
        kept_count += (chosen.astype(bool) & moved).sum(axis=0)
        nonzero += moved.sum(axis=0)
    density = float(kept_count.sum() / max(nonzero.sum(), 1.0))
    weights = tuple(float(c * density) for c in coefficients)
    return weights, {"density": density}, float(np.sqrt(residual_sq))


def _assign(target: Array, deltas: Array, coefficients: Array, subsets: Array) -> Array:
    """Per value, the index of the kept set whose sum is nearest ``target``."""
    sums = subsets @ (coefficients[:, None] * deltas)  # (2^k, n)
    found: Array = np.argmin((sums - target[None, :]) ** 2, axis=0)
    return found
