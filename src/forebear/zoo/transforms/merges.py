"""Merges of several fine-tunes of one architecture: linear, SLERP and TIES, as mergekit does them.

Owns the three merge methods the zoo derives models with. Unlike the
single-model transformations, a merge takes its parents in order::

    merge(states: Sequence[State], configs: Sequence[dict], *,
          base: State | None = None, rng: np.random.Generator | None = None,
          **params) -> Derived

``states[i]`` and ``configs[i]`` are parent ``i`` (HF names and orientation);
``base`` is the common ancestor the parents were fine-tuned from, given
explicitly (TIES needs it, linear and SLERP ignore it); ``rng`` is accepted for
a uniform call and unused (every merge here is deterministic). The result takes
parent 0's config. Every parent (and the base) must hold the same tensor names
with the same shapes, or ``ArchitectureError`` says which tensor differs.
Float tensors are merged in float64 and stored in parent 0's dtype; integer
tensors (buffers) must agree and are copied. ``maps["parents"]`` lists the
indices of the parents that contributed, so the builder can record the edges.

This module does no I/O and knows no tensor by name: every tensor is merged alike.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from forebear.errors import ArchitectureError
from forebear.formats.base import Array
from forebear.zoo.transforms.base import Derived, State, register

__all__ = ["merge_linear", "merge_slerp", "merge_ties", "slerp", "ties"]

# mergekit's threshold: above it the two directions are treated as colinear and lerped.
_DOT_THRESHOLD = 0.9995
_EPS = 1e-8
_HINT = "merge models of one architecture and size"


def _check_compatible(states: Sequence[State], base: State | None, minimum: int) -> None:
    if len(states) < minimum:
        raise ValueError(f"a merge needs at least {minimum} models, got {len(states)}")
    reference = states[0]
    others = [(f"model {i}", state) for i, state in enumerate(states[1:], start=1)]
    if base is not None:
        others.append(("the base", base))
    for label, state in others:
        missing = sorted(set(reference) - set(state))
        extra = sorted(set(state) - set(reference))
        if missing or extra:
            name, where = (missing[0], f"missing from {label}") if missing else (extra[0], "extra")
            raise ArchitectureError(f"models to merge differ: {name} is {where}", hint=_HINT)
        for name, array in reference.items():
            if state[name].shape != array.shape:
                raise ArchitectureError(
                    f"models to merge differ: {name} is {state[name].shape} in {label} "
                    f"but {array.shape} in model 0",
                    hint=_HINT,
                )


def _merge_each(states: Sequence[State], combine: Callable[[list[Array], str], Array]) -> State:
    """``combine`` applied per float tensor (float64 in, parent 0's dtype out)."""
    merged: State = {}
    for name, first in states[0].items():
        if not np.issubdtype(first.dtype, np.floating):
            if any(not np.array_equal(state[name], first) for state in states[1:]):
                raise ArchitectureError(
                    f"models to merge differ in the non-float tensor {name}", hint=_HINT
                )
            merged[name] = np.array(first, copy=True)
            continue
        arrays = [np.asarray(state[name], dtype=np.float64) for state in states]
        merged[name] = combine(arrays, name).astype(first.dtype)
    return merged


def _derived(
    state: State,
    configs: Sequence[Mapping[str, Any]],
    name: str,
    params: dict[str, Any],
    parents: int,
) -> Derived:
    return Derived(
        state=state,
        config=copy.deepcopy(dict(configs[0])),
        transformation=name,
        params=params,
        maps={"parents": list(range(parents))},
    )


# ---------------------------------------------------------------- linear


@register("merge_linear")
def merge_linear(
    states: Sequence[State],
    configs: Sequence[Mapping[str, Any]],
    *,
    base: State | None = None,
    rng: np.random.Generator | None = None,
    weights: Sequence[float] | None = None,
) -> Derived:
    """``Σ w_i θ_i`` per tensor; ``weights`` (default equal) must sum to 1."""
    _check_compatible(states, None, 2)
    chosen = [1.0 / len(states)] * len(states) if weights is None else [float(w) for w in weights]
    if len(chosen) != len(states):
        raise ValueError(f"{len(chosen)} weights for {len(states)} models")
    if not all(np.isfinite(chosen)) or abs(sum(chosen) - 1.0) > 1e-6:
        raise ValueError(f"merge weights must be finite and sum to 1, got {chosen}")

    def combine(arrays: list[Array], name: str) -> Array:
        return sum((w * a for w, a in zip(chosen, arrays, strict=True)), np.zeros_like(arrays[0]))

    merged = _merge_each(states, combine)
    return _derived(merged, configs, "merge_linear", {"weights": chosen}, len(states))


# ---------------------------------------------------------------- SLERP


def slerp(t: float, first: Array, second: Array) -> Array:
    """Spherical interpolation of two tensors viewed as flat vectors (mergekit's rule).

    The angle comes from the normalised directions; the interpolation weights
    apply to the tensors as they are, so norms interpolate too. Nearly colinear
    directions (|cos| > 0.9995) fall back to linear interpolation.
    """
    unit = [v / n if (n := float(np.linalg.norm(v))) > _EPS else v for v in (first, second)]
    dot = float(np.sum(unit[0] * unit[1]))
    if abs(dot) > _DOT_THRESHOLD:
        return (1.0 - t) * first + t * second
    theta = float(np.arccos(dot))
    sin_theta = float(np.sin(theta))
    weights = np.sin((1.0 - t) * theta) / sin_theta, np.sin(t * theta) / sin_theta
    mixed: Array = weights[0] * first + weights[1] * second
    return mixed


@register("merge_slerp")
def merge_slerp(
    states: Sequence[State],
    configs: Sequence[Mapping[str, Any]],
    *,
    base: State | None = None,
    rng: np.random.Generator | None = None,
    t: float = 0.5,
) -> Derived:
    """Per-tensor SLERP from model 0 (``t = 0``) to model 1 (``t = 1``)."""
    _check_compatible(states, None, 2)
    if len(states) != 2:
        raise ValueError(f"SLERP merges exactly two models, got {len(states)}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    merged = _merge_each(states, lambda arrays, name: slerp(t, arrays[0], arrays[1]))
    return _derived(merged, configs, "merge_slerp", {"t": float(t)}, 2)


# ---------------------------------------------------------------- TIES


def _trim(delta: Array, density: float) -> Array:
    """``delta`` with all but its ``density`` fraction of largest magnitudes set to zero.

    Keeps ``max(1, int(density · size))`` entries, as mergekit's ``magnitude``
    does (it refuses zero; one is kept here so tiny tensors still merge).
    """
    if density >= 1.0:
        return delta
    flat = delta.reshape(-1)
    keep = max(1, int(density * flat.size))
    kept = np.zeros_like(flat)
    top = np.argpartition(-np.abs(flat), keep - 1)[:keep]
    kept[top] = flat[top]
    return kept.reshape(delta.shape)


def ties(deltas: Sequence[Array], density: float) -> Array:
    """TIES-merging of task vectors: trim, elect a sign by total mass, disjoint mean.

    Per entry, the elected sign is that of the sum of the trimmed deltas; the
    result is the mean of the trimmed deltas that are non-zero and carry that
    sign (zero where none does).
    """
    trimmed = np.stack([_trim(delta, density) for delta in deltas])
    elected = np.sign(trimmed.sum(axis=0))
    agree = (np.sign(trimmed) == elected) & (trimmed != 0)
    count = agree.sum(axis=0)
    total = np.where(agree, trimmed, 0.0).sum(axis=0)
    mean: Array = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return mean


@register("merge_ties")
def merge_ties(
    states: Sequence[State],
    configs: Sequence[Mapping[str, Any]],
    *,
    base: State | None = None,
    rng: np.random.Generator | None = None,
    density: float = 0.2,
    lambda_: float = 1.0,
    **params: float,
) -> Derived:
    """``θ_base + λ · ties(θ_i − θ_base)``; λ is passed as ``lambda`` (or ``lambda_``)."""
    if base is None:
        raise ValueError("TIES merges task vectors: pass the common base as base=")
    unknown = set(params) - {"lambda"}
    if unknown:
        raise TypeError(f"merge_ties got unexpected parameters {sorted(unknown)}")
    scale = float(params.get("lambda", lambda_))
    _check_compatible(states, base, 2)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {density}")

    def combine(arrays: list[Array], name: str) -> Array:
        origin = np.asarray(base[name], dtype=np.float64)
        return origin + scale * ties([array - origin for array in arrays], density)

    merged = _merge_each(states, combine)
    params_out = {"density": float(density), "lambda": scale}
    return _derived(merged, configs, "merge_ties", params_out, len(states))


# ---------------------------------------------------------------- DARE


def _dare_inputs(
    method: str,
    states: Sequence[State],
    base: State | None,
    density: float,
    weights: Sequence[float] | None,
    *,
    positive: bool,
) -> tuple[Callable[[str], Array], list[float]]:
    """The checks DARE and DARE-TIES share: a base, compatible models, a density in (0, 1]
    and one finite weight per model (``positive``: above zero too). Returns the base's
    tensor by name (float64) and the weights (equal when none are given)."""
    if base is None:
        raise ValueError(f"{method} merges task vectors: pass the common base as base=")
    _check_compatible(states, base, 2)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {density}")
    chosen = [1.0 / len(states)] * len(states) if weights is None else [float(w) for w in weights]
    usable = len(chosen) == len(states) and all(np.isfinite(chosen))
    if not usable or (positive and min(chosen) <= 0):
        what = "positive weights" if positive else "weights"
        raise ValueError(f"{len(chosen)} {what} for {len(states)} models: {chosen}")
    return (lambda name: np.asarray(base[name], dtype=np.float64)), chosen


def _dropped(delta: Array, density: float, draw: np.random.Generator) -> Array:
    """``delta`` with each value kept at random with probability ``density`` (DARE's drop;
    the caller rescales)."""
    kept: Array = np.where(draw.random(delta.shape) < density, delta, 0.0)
    return kept


@register("merge_dare")
def merge_dare(
    states: Sequence[State],
    configs: Sequence[Mapping[str, Any]],
    *,
    base: State | None = None,
    rng: np.random.Generator | None = None,
    density: float = 0.5,
    weights: Sequence[float] | None = None,
) -> Derived:
    """``θ_base + Σ w_i · mask_i ⊙ (θ_i − θ_base) / density``: each task vector's values kept
    at random with probability ``density`` and rescaled (mergekit's ``dare_linear``)."""
    origin_of, chosen = _dare_inputs("DARE", states, base, density, weights, positive=False)
    draw = rng if rng is not None else np.random.default_rng(0)

    def combine(arrays: list[Array], name: str) -> Array:
        origin = origin_of(name)
        merged = origin.copy()
        for w, array in zip(chosen, arrays, strict=True):
            merged += w * _dropped(array - origin, density, draw) / density
        return merged

    merged = _merge_each(states, combine)
    params_out = {"density": float(density), "weights": chosen}
    return _derived(merged, configs, "merge_dare", params_out, len(states))


@register("merge_dare_ties")
def merge_dare_ties(
    states: Sequence[State],
    configs: Sequence[Mapping[str, Any]],
    *,
    base: State | None = None,
    rng: np.random.Generator | None = None,
    density: float = 0.5,
    weights: Sequence[float] | None = None,
) -> Derived:
    """mergekit's ``dare_ties`` (normalised): each task vector's values kept at random with
    probability ``density`` and rescaled by ``1 / density``, weighted; per value the sign of
    the weighted sum is elected, and the agreeing weighted values are summed and divided by
    their weights' sum."""
    origin_of, chosen = _dare_inputs("DARE-TIES", states, base, density, weights, positive=True)
    draw = rng if rng is not None else np.random.default_rng(0)

    def combine(arrays: list[Array], name: str) -> Array:
        origin = origin_of(name)
        weighted = np.stack([w * _dropped(array - origin, density, draw) / density
                             for w, array in zip(chosen, arrays, strict=True)])  # fmt: skip
        elected = np.where(weighted.sum(axis=0) >= 0, 1.0, -1.0)
        agree = np.sign(weighted) == elected
        share = np.array(chosen).reshape((-1,) + (1,) * (weighted.ndim - 1))
        divisor = np.where(agree, share, 0.0).sum(axis=0)
        total = np.where(agree, weighted, 0.0).sum(axis=0)
        mixed: Array = origin + total / np.where(divisor == 0, 1.0, divisor)
        return mixed

    merged = _merge_each(states, combine)
    params_out = {"density": float(density), "weights": chosen}
    return _derived(merged, configs, "merge_dare_ties", params_out, len(states))
