"""Is a model a merge of candidate parents, and by which recipe?

``decompose(model, parents, base=None)`` fits the merge methods mergekit offers
to a row sample every model shares (``sample.shared_sample``):

- **linear**: ``M = Σ w_i P_i`` with ``Σ w_i = 1`` (least squares on the
  differences from ``P_1``, so nearly equal parents stay well conditioned),
  overall and per layer;
- **SLERP** (two parents): per tensor, the interpolation weights of ``P_1`` and
  ``P_2`` turned into mergekit's ``t`` through the tensors' angle (lerp when the
  directions are within mergekit's colinearity threshold); ``t`` overall and per
  layer is the size-weighted median;
- **task arithmetic** (with ``base``): ``M − B = Σ λ_i (P_i − B)``, λ free;
- **TIES** (with ``base``): task vectors trimmed to a density, signs elected,
  disjoint weighted mean, times λ — density and weights by grid search (then a
  finer grid around the best), λ in closed form;
- **DARE** (with ``base``; ``lineage.dare``): the kept values of each task vector
  and the weights, by alternation; accepted only as an exact merge (choosing a kept
  set per value fits anything somewhat). **DARE-TIES** (two parents): density and
  the weights' ratio from the values' most common ratios; exact or nothing too.

Each fit's **residual** is ``ρ = ‖M − fit‖ / min_i ‖M − P_i‖`` on the sample. An
exact merge leaves only storage rounding (its floor is estimated from M's stored
type); a merge that was trained further leaves what the training added; a parent
with two fine-tuned children is no merge of them, and there ``ρ ≥ 1/√2`` when the
children's updates are orthogonal (the foot of the perpendicular from the parent
onto the line through them). So: ``ρ`` within the rounding floor (at least 0.02)
reads "exact merge", ``ρ < 0.5`` "merge, then changed", anything else "not a merge
of these parents"; so is a fit that gives some parent a weight under
``MIN_WEIGHT`` (0.05) or, for linear and SLERP, extrapolates beyond [0.05, 0.95]:
near one parent, a small pull toward a distant relative absorbs the noise of any
fine-tune (the zoo's base "explained" by a depth-upscaled child and a heavily
trained one at ρ = 0.15 with weights −0.03 and 1.03).

*Limit.* A merge trained further for about as long as its parents were
fine-tuned leaves ``ρ`` as large as a non-merge's (the zoo's merge + fine-tune:
0.67 against the base, 0.93 without; a parent of two fine-tunes: 0.98; a sibling
fine-tuned on the same data: 0.75). Task-arithmetic coefficients do not separate
them either: fine-tunes of one base share a direction, so a sibling gets large
coefficients on both "parents" (0.84 and 0.73 in the zoo). Such a model reads
"not a merge of these parents"; its residual still tells it from an exact merge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from forebear.errors import ForebearError
from forebear.formats.base import Array
from forebear.lineage.dare import fit_dare, fit_dare_ties
from forebear.lineage.sample import SharedSample, TensorSample, shared_sample, unit_roundoff
from forebear.lineage.ties import fit_ties
from forebear.model import Model

__all__ = ["Decomposition", "LayerWeights", "MergeFit", "decompose", "decompose_sample"]

MergeVerdict = Literal[
    "exact merge", "merge, then changed", "not a merge of these parents", "copy of a parent"
]

# mergekit lerps when the normalised directions' |cos| is above this.
_COLINEAR = 0.9995
MERGE_RESIDUAL = 0.5  # below: a merge (a parent of two children sits at ≥ 1/√2)
EXACT_RESIDUAL = 0.02  # at least this much is allowed for an exact merge's rounding
MIN_WEIGHT = 0.05  # every parent's weight (λ) at least this, and linear / SLERP at most 1 − it
LAYER_SPREAD = 0.03  # per-layer weights that spread more than this "vary by layer"
_SIMPLER_BY = 1.1  # a simpler method wins unless a richer one's residual is this much smaller
_ORDER = ("linear", "slerp", "task arithmetic", "ties", "dare", "dare_ties")


@dataclass(frozen=True)
class LayerWeights:
    layer: int | None  # None: the model-level tensors (embeddings, head, final norm)
    weights: tuple[float, ...]  # per parent
    residual: float


@dataclass(frozen=True)
class MergeFit:
    method: str  # "linear", "slerp", "task arithmetic", "ties", "dare", "dare_ties"
    weights: tuple[float, ...]  # per parent: w_i; SLERP (1 − t, t); task arithmetic λ_i
    params: Mapping[str, float]  # t, density, lambda
    residual: float  # ρ, see the module docstring
    layers: tuple[LayerWeights, ...] = ()  # per layer where the method fits per layer

    @property
    def varies_by_layer(self) -> bool:
        if len(self.layers) < 2:
            return False
        spread = np.ptp(np.array([layer.weights for layer in self.layers]), axis=0)
        return bool(np.max(spread) > LAYER_SPREAD)


@dataclass(frozen=True)
class Decomposition:
    model: str
    parents: tuple[str, ...]
    base: str | None
    verdict: MergeVerdict
    best: MergeFit | None  # None for a copy of a parent
    fits: tuple[MergeFit, ...]  # every method tried, best residual first
    exact_threshold: float  # ρ up to which a fit counts as exact (storage rounding)
    distances: tuple[float, ...]  # ‖M − P_i‖ / ‖M‖ per parent, on the sample
    parent_distances: tuple[tuple[float, ...], ...]  # ‖P_i − P_j‖ / ‖P_i‖
    standard_errors: tuple[float, ...]  # of the linear weights
    warnings: tuple[str, ...]
    tensors: int  # tensors compared
    elements: int  # values per model in the sample
    skipped: tuple[str, ...] = field(default_factory=tuple)  # tensors not shared

    def mergekit(self) -> dict[str, Any] | None:
        """The nearest mergekit configuration (a dict to dump as YAML), or None."""
        if self.best is None or self.verdict == "not a merge of these parents":
            return None
        return _mergekit(self.best, self.parents, self.base)

    def to_json(self) -> dict[str, Any]:
        def fit(found: MergeFit) -> dict[str, Any]:
            return {
                "method": found.method, "weights": list(found.weights),
                "params": dict(found.params), "residual": found.residual,
                "varies_by_layer": found.varies_by_layer,
                "layers": [{"layer": x.layer, "weights": list(x.weights),
                            "residual": x.residual} for x in found.layers],
            }  # fmt: skip

        return {
            "model": self.model, "parents": list(self.parents), "base": self.base,
            "verdict": self.verdict, "best": None if self.best is None else fit(self.best),
            "fits": [fit(f) for f in self.fits], "exact_threshold": self.exact_threshold,
            "distances": list(self.distances),
            "parent_distances": [list(row) for row in self.parent_distances],
            "standard_errors": list(self.standard_errors), "warnings": list(self.warnings),
            "tensors": self.tensors, "elements": self.elements, "skipped": list(self.skipped),
            "mergekit": self.mergekit(),
        }  # fmt: skip


def decompose(
    model: Model, parents: Sequence[Model], base: Model | None = None, *, budget: int = 1 << 24
) -> Decomposition:
    """Fit ``model`` as a merge of ``parents`` (and ``base``, for task vectors)."""
    if len(parents) < 2:
        raise ForebearError(
            f"{model.name}: a merge has at least two parents, {len(parents)} given",
            hint="name two or more candidate parents (compare tests a single one)",
        )
    models = [model, *parents, *([] if base is None else [base])]
    names = [m.name for m in models]
    if len(set(names)) < len(names):
        raise ForebearError(
            f"{model.name}: the same model is named twice ({', '.join(names)})",
            hint="name each parent once, and the model itself not among them",
        )
    sample = shared_sample(models, budget)
    return decompose_sample(
        sample, model.name, tuple(p.name for p in parents),
        None if base is None else base.name, unit_roundoff(model),
    )  # fmt: skip


def decompose_sample(
    sample: SharedSample,
    model: str,
    parents: tuple[str, ...],
    base: str | None,
    roundoff: float = 2.0**-24,
) -> Decomposition:
    """The decomposition from an already read sample (values: model, parents..., base)."""
    k = len(parents)
    count = k + 1 + (base is not None)
    vectors = [np.concatenate([t.values[i] for t in sample.tensors]) for i in range(count)]
    m, ps = vectors[0], vectors[1 : k + 1]
    b = vectors[k + 1] if base is not None else None
    size = float(np.linalg.norm(m)) or 1.0
    distances = tuple(float(np.linalg.norm(m - p)) / size for p in ps)
    parent_distances = tuple(
        tuple(float(np.linalg.norm(p - q)) / (float(np.linalg.norm(p)) or 1.0) for q in ps)
        for p in ps
    )
    scale = min(distances) * size
    exact = max(EXACT_RESIDUAL, 3.0 * roundoff * size / math.sqrt(3.0) / max(scale, 1e-300))
    common = (sample, model, parents, base, exact, distances, parent_distances)
    if min(distances) < 1e-7:
        which = parents[int(np.argmin(distances))]
        return _result(*common, "copy of a parent", None, (), (), (f"identical to {which}",))
    fits: list[MergeFit] = []
    linear, errors = _linear(sample, k, scale)
    fits.append(linear)
    if k == 2:
        fits.append(_slerp(sample, scale))
    if b is not None:
        fits.append(_task_arithmetic(m, ps, b, scale))
        ties_weights, params, residual = fit_ties(sample, m, ps, b)
        fits.append(MergeFit("ties", ties_weights, params, residual / max(scale, 1e-300)))
        dare_weights, params, residual = fit_dare(m, ps, b)
        if residual / max(scale, 1e-300) <= exact:  # a free choice per value: exact or nothing
            fits.append(MergeFit("dare", dare_weights, params, residual / max(scale, 1e-300)))
        voted = fit_dare_ties(m, ps, b)
        if voted is not None and voted[2] / max(scale, 1e-300) <= exact:  # the same terms
            fits.append(MergeFit("dare_ties", voted[0], voted[1], voted[2] / max(scale, 1e-300)))
    fits.sort(key=lambda f: f.residual)
    best = _simplest(fits)
    verdict = _verdict(best, exact)
    return _result(*common, verdict, best, tuple(fits), errors,
                   _warnings(parents, parent_distances, errors))  # fmt: skip


def _result(sample: SharedSample, model: str, parents: tuple[str, ...], base: str | None,
            exact: float,
            distances: tuple[float, ...], parent_distances: tuple[tuple[float, ...], ...],
            verdict: MergeVerdict, best: MergeFit | None, fits: tuple[MergeFit, ...],
            errors: tuple[float, ...], warnings: tuple[str, ...]) -> Decomposition:  # fmt: skip
    return Decomposition(
        model=model, parents=parents, base=base, verdict=verdict, best=best, fits=fits,
        exact_threshold=exact, distances=distances, parent_distances=parent_distances,
        standard_errors=errors, warnings=warnings, tensors=len(sample.tensors),
        elements=sample.elements, skipped=sample.skipped,
    )  # fmt: skip


def _simplest(fits: list[MergeFit]) -> MergeFit:
    """The simplest method whose residual is within ``_SIMPLER_BY`` of the best one's."""
    lowest = min(f.residual for f in fits)
    close = [f for f in fits if f.residual <= lowest * _SIMPLER_BY + 1e-3]
    return min(close, key=lambda f: _ORDER.index(f.method))


def _verdict(best: MergeFit, exact: float) -> MergeVerdict:
    interpolates = best.method not in ("linear", "slerp") or max(best.weights) <= 1 - MIN_WEIGHT
    if min(best.weights) < MIN_WEIGHT or not interpolates:
        return "not a merge of these parents"
    if best.residual <= exact:
        return "exact merge"
    if best.residual < MERGE_RESIDUAL:
        return "merge, then changed"
    return "not a merge of these parents"


def _warnings(parents: tuple[str, ...], parent_distances: tuple[tuple[float, ...], ...],
              errors: tuple[float, ...]) -> tuple[str, ...]:  # fmt: skip
    found = []
    for i in range(len(parents)):
        for j in range(i + 1, len(parents)):
            if parent_distances[i][j] < 1e-3:
                found.append(
                    f"{parents[i]} and {parents[j]} are nearly identical (they differ by "
                    f"{100 * parent_distances[i][j]:.3g} % of their norm): their weights are "
                    "poorly determined"
                )
    if errors and max(errors) > 0.01:
        found.append(
            f"collinear parents: the linear weights' standard error reaches ±{max(errors):.3f}"
        )
    return tuple(found)


# ---------------------------------------------------------------- linear


def _affine(y: Array, columns: list[Array]) -> tuple[Array, float, Array]:
    """Least squares of ``y`` on ``columns`` (coefficients, residual norm, their covariance
    up to σ²)."""
    if not columns:
        return np.zeros(0), float(np.linalg.norm(y)), np.zeros((0, 0))
    x = np.stack(columns, axis=1)
    gram = x.T @ x
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = float(np.linalg.norm(y - x @ coefficients))
    return coefficients, residual, np.linalg.pinv(gram)


def _linear_on(tensors: Sequence[TensorSample], k: int) -> tuple[tuple[float, ...], float, Array,
                                                                  int]:  # fmt: skip
    m = np.concatenate([t.values[0] for t in tensors])
    ps = [np.concatenate([t.values[i] for t in tensors]) for i in range(1, k + 1)]
    free, residual, covariance = _affine(m - ps[0], [p - ps[0] for p in ps[1:]])
    weights = (1.0 - float(np.sum(free)), *map(float, free))
    return weights, residual, covariance, len(m)


def _linear(sample: SharedSample, k: int, scale: float) -> tuple[MergeFit, tuple[float, ...]]:
    weights, residual, covariance, n = _linear_on(sample.tensors, k)
    sigma2 = residual**2 / max(n - k, 1)
    free_errors = np.sqrt(np.maximum(np.diag(covariance) * sigma2, 0.0))
    first = math.sqrt(max(float(np.sum(covariance)) * sigma2, 0.0))  # w_1 = 1 − Σ free
    errors = (first, *map(float, free_errors))
    layers = []
    for layer, tensors in _by_layer(sample.tensors).items():
        w, r, _, _ = _linear_on(tensors, k)
        layers.append(LayerWeights(layer, w, r / max(scale, 1e-300)))
    return MergeFit("linear", weights, {}, residual / max(scale, 1e-300), tuple(layers)), errors


def _by_layer(tensors: Sequence[TensorSample]) -> dict[int | None, list[TensorSample]]:
    groups: dict[int | None, list[TensorSample]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.layer, []).append(tensor)
    return dict(sorted(groups.items(), key=lambda item: -1 if item[0] is None else item[0]))


# ---------------------------------------------------------------- SLERP


def _angle(a: Array, b: Array) -> float:
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    return float(np.clip(np.dot(a, b) / norms, -1.0, 1.0)) if norms > 0 else 1.0


def _tensor_t(tensor: TensorSample) -> float:
    """The ``t`` that best explains this tensor as SLERP of parents 1 and 2."""
    m, a, b = tensor.values[:3]
    cos = _angle(a, b)
    if abs(cos) > _COLINEAR:
        direction = b - a
        norm = float(np.dot(direction, direction))
        return float(np.dot(m - a, direction) / norm) if norm > 0 else 0.5
    (c1, c2), *_ = np.linalg.lstsq(np.stack([a, b], axis=1), m, rcond=None)
    theta = math.acos(cos)
    return math.atan2(c2 * math.sin(theta), c1 + c2 * cos) / theta


def _slerp_value(t: float, a: Array, b: Array) -> Array:
    cos = _angle(a, b)
    if abs(cos) > _COLINEAR:
        return (1.0 - t) * a + t * b
    theta = math.acos(cos)
    mixed: Array = (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)
    return mixed


def _weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    return float(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _slerp_residual(tensors: Sequence[TensorSample], t: float) -> float:
    squares = sum(
        float(np.sum((x.values[0] - _slerp_value(t, x.values[1], x.values[2])) ** 2))
        for x in tensors
    )
    return math.sqrt(squares)


def _slerp(sample: SharedSample, scale: float) -> MergeFit:
    each = [_tensor_t(t) for t in sample.tensors]
    sizes = [float(t.size) for t in sample.tensors]
    t = _weighted_median(each, sizes)
    layers = []
    for layer, tensors in _by_layer(sample.tensors).items():
        chosen = [i for i, x in enumerate(sample.tensors) if x.layer == layer]
        local = _weighted_median([each[i] for i in chosen], [sizes[i] for i in chosen])
        residual = _slerp_residual(tensors, local) / max(scale, 1e-300)
        layers.append(LayerWeights(layer, (1.0 - local, local), residual))
    residual = _slerp_residual(sample.tensors, t) / max(scale, 1e-300)
    return MergeFit("slerp", (1.0 - t, t), {"t": t}, residual, tuple(layers))


# ---------------------------------------------------------------- task vectors


def _task_arithmetic(m: Array, ps: list[Array], b: Array, scale: float) -> MergeFit:
    lambdas, residual, _ = _affine(m - b, [p - b for p in ps])
    return MergeFit(
        "task arithmetic", tuple(map(float, lambdas)), {}, residual / max(scale, 1e-300)
    )


# ---------------------------------------------------------------- mergekit


def _mergekit(best: MergeFit, parents: tuple[str, ...], base: str | None) -> dict[str, Any]:
    per_layer = best.varies_by_layer and best.method in ("linear", "slerp")

    def weight(i: int) -> float | list[float]:
        if per_layer:
            return [round(x.weights[i], 3) for x in best.layers if x.layer is not None]
        return round(best.weights[i], 3)

    if best.method == "linear":
        models = [{"model": p, "parameters": {"weight": weight(i)}} for i, p in enumerate(parents)]
        return {"merge_method": "linear", "models": models}
    if best.method == "slerp":
        t: float | list[float] = weight(1)
        return {"merge_method": "slerp", "base_model": parents[0],
                "models": [{"model": p} for p in parents], "parameters": {"t": t}}  # fmt: skip
    if best.method == "task arithmetic":
        models = [{"model": p, "parameters": {"weight": weight(i)}} for i, p in enumerate(parents)]
        return {"merge_method": "task_arithmetic", "base_model": base, "models": models}
    density = round(best.params["density"], 3)
    if best.method == "dare_ties":
        models = [{"model": p, "parameters": {"weight": weight(i), "density": density}}
                  for i, p in enumerate(parents)]  # fmt: skip
        return {"merge_method": "dare_ties", "base_model": base, "models": models,
                "parameters": {"normalize": True}}  # fmt: skip
    if best.method == "dare":
        models = [{"model": p, "parameters": {"weight": weight(i), "density": density}}
                  for i, p in enumerate(parents)]  # fmt: skip
        return {"merge_method": "dare_linear", "base_model": base, "models": models,
                "parameters": {"normalize": False}}  # fmt: skip
    models = [
        {"model": p, "parameters": {"weight": weight(i), "density": density}}
        for i, p in enumerate(parents)
    ]
    parameters = {"normalize": True, "lambda": round(best.params["lambda"], 3)}
    return {"merge_method": "ties", "base_model": base, "models": models, "parameters": parameters}
