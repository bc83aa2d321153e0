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

**DARE-TIES** (mergekit's ``dare_ties``, normalised; two parents, ``fit_dare_ties``):
after the same random drop and rescale, each value's sign is elected from the
weighted sum, and the agreeing weighted values are divided by their weights' sum.
So a value is 0, ``d_1 / density``, ``d_2 / density`` (one kept, or one outvoted),
or ``(α d_1 + (1 − α) d_2) / density`` with ``α = w_1 / (w_1 + w_2)`` (both kept,
same sign) — and never a sum of opposite signs, which tells it from ``dare_linear``.
``1 / density`` is the most common ratio ``(M − B) / d_i``, α the most common
solution of the last form on the values left; only the weights' ratio is defined.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from forebear.formats.base import Array

__all__ = ["fit_dare", "fit_dare_ties"]

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


def fit_dare_ties(m: Array, ps: list[Array], b: Array
                  ) -> tuple[tuple[float, ...], dict[str, float], float] | None:  # fmt: skip
    """DARE-TIES weights (summing to 1), {density} and the residual norm for two parents;
    None when the values show no common ratio to read the density from. The ratios are
    read on ``_FIT_VALUES`` evenly spaced values, the residual on all of them."""
    if len(ps) != 2:
        return None
    pick = np.linspace(0, len(m) - 1, min(len(m), _FIT_VALUES)).astype(np.int64)
    target, d1, d2 = m[pick] - b[pick], ps[0][pick] - b[pick], ps[1][pick] - b[pick]
    ratios = np.concatenate([_ratios(target, d1), _ratios(target, d2)])
    scale = _mode(np.log(ratios[ratios > 0])) if ratios.size else None
    if scale is None:
        return None
    inverse = float(np.exp(scale))  # 1 / density
    both = (np.sign(d1) == np.sign(d2)) & (d1 != d2) & (d1 != 0)
    alone = np.minimum(np.abs(target - inverse * d1), np.abs(target - inverse * d2))
    rest = both & (alone > 1e-6 * np.abs(target)) & (target != 0)
    alphas = (target[rest] / inverse - d2[rest]) / (d1[rest] - d2[rest])
    alpha = _mode(alphas[(alphas > 0) & (alphas < 1)]) if rest.any() else None
    if alpha is None:
        alpha = 0.5
    residual_sq = 0.0
    for start in range(0, len(m), _CHUNK):
        part = slice(start, start + _CHUNK)
        t, e1, e2 = m[part] - b[part], ps[0][part] - b[part], ps[1][part] - b[part]
        agree = np.sign(e1) == np.sign(e2)
        mixed = np.where(agree, inverse * (alpha * e1 + (1.0 - alpha) * e2), np.inf)
        nearest = np.minimum(np.minimum(np.abs(t), np.abs(t - inverse * e1)),
                             np.minimum(np.abs(t - inverse * e2), np.abs(t - mixed)))  # fmt: skip
        residual_sq += float(np.sum(nearest**2))
    weights = (float(alpha), float(1.0 - alpha))
    return weights, {"density": 1.0 / inverse}, float(np.sqrt(residual_sq))


def _ratios(target: Array, delta: Array) -> Array:
    usable = (np.abs(delta) > 0) & (np.abs(target) > 0)
    found: Array = target[usable] / delta[usable]
    return found


def _mode(values: Array, width: float = 1e-4) -> float | None:
    """The centre of the most crowded bin of ``width`` among ``values`` (None when no bin
    holds 1 % of them: no common value)."""
    finite = values[np.isfinite(values)]
    if finite.size < 16:
        return None
    bins = np.round(finite / width).astype(np.int64)
    labels, counts = np.unique(bins, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < 0.01 * finite.size:
        return None
    chosen = finite[np.abs(bins - labels[top]) <= 1]
    return float(np.median(chosen))
