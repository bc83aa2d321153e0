"""The same-position test between two fingerprints, without the weights.

B's sketched rows are mapped into A's canonical coordinates by the orthogonal
map that best aligns the embedding rows of token strings both fingerprints
sketched (Procrustes, ``dims × dims``); with too few shared strings (another
tokenizer) the canonical coordinates are compared as they are. For a pair of
layers of equal MLP width (so equal sampled positions), B's unit ``u`` is scored
against A's unit ``u`` by the mean cosine of gate and up rows (up alone when one
MLP is ungated), and ``stats.assignment_test`` gives the
exact p-value (Chatterjee's bound): under H0 B's units are exchangeable and any
fixed function of their rows — a projection onto a canonical basis included —
keeps them so.

Layer pairs: first B layer ``i`` against A layer ``i``, combined by Fisher. When
depths differ or some diagonal pair shows no evidence, every pair of equal width
is tested too; each B layer keeps its best A layer, Bonferroni-adjusted for the
A layers it was tried against (super-uniform, independent across B layers under
H0, so Fisher over them stays valid), and the two combinations are
Bonferroni-combined. The same-position test is blind to permuted units and to changed MLP widths
(it loses power, never validity), so when both fingerprints hold content samples
(``sketch.ContentSketch``) each layer pair also gets the **matched-unit test** of
``compare.evidence`` on them: B's sampled units are paired one to one with A's
by a linear assignment on their reading rows (|up cosine| + gate cosine), and the
pairs are scored on what the assignment did not see, the stripped down columns
(sign of the up cosine applied), against re-pairings of the same units (normal
approximation, as in the weights' test). Both samples are chosen by a rule that
ignores unit order, so a permuted or pruned copy keeps most of its units in
both. A layer pair's p-value is the Bonferroni combination of the tests it ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from forebear.compare.result import REPORTING_LOG10_P
from forebear.fingerprint.sketch import ContentSketch, Fingerprint, LayerSketch
from forebear.formats.base import Array
from forebear.stats import assignment_test, bonferroni, fisher

__all__ = ["FingerprintEvidence", "SketchCell", "compare_fingerprints"]

_MIN_SHARED_PER_DIM = 2


@dataclass(frozen=True)
class SketchCell:
    """B layer ``b_layer`` against A layer ``a_layer`` on their sampled units."""

    a_layer: int
    b_layer: int
    log10_p: float  # exact, same positions
    relative_delta: float  # ‖B − A‖ / ‖B‖ of the sampled rows, B mapped into A's basis
    units: int
    matched: bool = False  # whether the content samples' matched-unit test is in log10_p


@dataclass(frozen=True)
class FingerprintEvidence:
    log10_p: float  # the combined test (0: nothing compared)
    layers: tuple[float | None, ...]  # per layer of B: its log10 p, None when not comparable
    cells: tuple[SketchCell, ...]  # every layer pair tested
    all_pairs: bool  # whether the all-pairs pass ran
    shared_tokens: int  # sketched token strings both hold
    fit: float  # mean cosine of the aligned embedding rows (nan: too few shared, no map fitted)
    reason: str | None  # why nothing could be compared, when nothing was
    matched: bool = False  # whether the matched-unit test ran on some layer pair


def _unit(rows: Array) -> Array:
    values = rows.astype(np.float64)
    normalised: Array = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-30)
    return normalised


def _alignment(a: Fingerprint, b: Fingerprint) -> tuple[Array | None, int, float, str | None]:
    """The orthogonal map of B's canonical coordinates onto A's, shared tokens, fit, why not."""
    dims = a.embedding.shape[1]
    index_b = {token: i for i, token in enumerate(b.tokens)}
    pairs = [(i, index_b[t]) for i, t in enumerate(a.tokens) if t in index_b]
    if dims != b.embedding.shape[1]:
        return (
            None,
            len(pairs),
            math.nan,
            f"sketch widths differ ({dims} vs {b.embedding.shape[1]})",
        )
    if len(pairs) < _MIN_SHARED_PER_DIM * dims:
        # Too few shared strings to fit a map: each basis is intrinsic to its model, so the
        # coordinates are compared as they are (a fixed map keeps the test valid; a rotated
        # copy with a replaced vocabulary is then missed).
        return np.eye(dims), len(pairs), math.nan, None
    ia, ib = np.array(pairs).T
    x = a.embedding[ia].astype(np.float64)
    y = b.embedding[ib].astype(np.float64)
    left, _, right = np.linalg.svd(x.T @ y)
    rotation = left @ right  # x @ rotation ≈ y
    fit = float(np.mean(np.sum(_unit(x @ rotation) * _unit(y), axis=1)))
    return rotation, len(pairs), fit, None


def _cell(i: int, j: int, la: LayerSketch, lb: LayerSketch, rotation: Array) -> SketchCell | None:
    """Both tests of B's layer ``j`` against A's layer ``i`` where their sketches allow."""
    tests: list[float] = []
    deltas: list[float] = []
    units, matched = 0, False
    if la.width == lb.width and np.array_equal(la.units, lb.units):
        log10_p, delta = _same_position(la, lb, rotation)
        tests.append(log10_p)
        deltas.append(delta)
        units = len(la.units)
    if la.content is not None and lb.content is not None:
        found = _matched(la.content, lb.content, rotation)
        if found is not None:
            tests.append(found[0])
            deltas.append(found[1])
            units, matched = max(units, found[2]), True
    if not tests:
        return None
    return SketchCell(i, j, bonferroni(tests), min(deltas), units, matched)


def _relative(pairs: list[tuple[Array, Array]]) -> float:
    difference = math.sqrt(sum(float(np.sum((rb - ra) ** 2)) for ra, rb in pairs))
    size = math.sqrt(sum(float(np.sum(rb**2)) for _, rb in pairs))
    return difference / max(size, 1e-30)


def _same_position(la: LayerSketch, lb: LayerSketch, rotation: Array) -> tuple[float, float]:
    pieces = [(la.up, lb.up)]
    if la.gate is not None and lb.gate is not None:
        pieces.append((la.gate, lb.gate))
    mapped = [(ra.astype(np.float64), rb.astype(np.float64) @ rotation.T) for ra, rb in pieces]
    scores = np.mean([_unit(rb) @ _unit(ra).T for ra, rb in mapped], axis=0)
    test = assignment_test(scores, "same-position units (fingerprints)", "exact",
                           "Chatterjee bound over unit permutations")  # fmt: skip
    return test.log10_p, _relative(mapped)


def _matched(
    a: ContentSketch, b: ContentSketch, rotation: Array
) -> tuple[float, float, int] | None:
    """The matched-unit test on the content samples: (log10 p, relative change, pairs)."""
    if min(len(a.units), len(b.units)) < 2:
        return None
    up_a, up_b = a.up.astype(np.float64), b.up.astype(np.float64) @ rotation.T
    up_cos = _unit(up_b) @ _unit(up_a).T
    reading = np.abs(up_cos)
    gates = None
    if a.gate is not None and b.gate is not None:
        gates = (a.gate.astype(np.float64), b.gate.astype(np.float64) @ rotation.T)
        reading = reading + _unit(gates[1]) @ _unit(gates[0]).T
    rows, columns = linear_sum_assignment(reading, maximize=True)
    signs = np.sign(up_cos[rows, columns])
    held_b = _unit(b.down.astype(np.float64) @ rotation.T)[rows] * signs[:, None]
    held_a = _unit(a.down.astype(np.float64))[columns]
    test = assignment_test(held_b @ held_a.T, "matched units, held-out bulk (fingerprints)",
                           "approximate", "normal approximation over re-pairings of matched "
                           "units")  # fmt: skip
    pairs = [(up_a[columns] * signs[:, None], up_b[rows])]
    if gates is not None:
        pairs.append((gates[0][columns], gates[1][rows]))
    return test.log10_p, _relative(pairs), len(rows)


def compare_fingerprints(a: Fingerprint, b: Fingerprint) -> FingerprintEvidence:
    rotation, shared, fit, why = _alignment(a, b)
    if rotation is None:
        empty = tuple(None for _ in b.layers)
        return FingerprintEvidence(0.0, empty, (), False, shared, fit, why)
    cells: dict[tuple[int, int], SketchCell] = {}
    for i, (la, lb) in enumerate(zip(a.layers, b.layers, strict=False)):
        found = None if la is None or lb is None else _cell(i, i, la, lb, rotation)
        if found is not None:
            cells[(i, i)] = found
    diagonal = fisher([c.log10_p for c in cells.values()])
    threshold = REPORTING_LOG10_P - math.log10(max(len(a.layers), 1))
    all_pairs = (
        len(a.layers) != len(b.layers)
        or len(cells) < len(b.layers)
        or any(c.log10_p > threshold for c in cells.values())
    )
    per_layer: list[float | None] = [
        cells[(j, j)].log10_p if (j, j) in cells else None for j in range(len(b.layers))
    ]
    tests = [diagonal] if cells else []
    if all_pairs:
        per_layer = _all_pairs(a, b, rotation, cells)
        tests.append(fisher([p for p in per_layer if p is not None]))
    reason = None if cells else "no pair of layers of equal MLP width"
    log10_p = bonferroni(tests) if tests else 0.0
    ordered = tuple(sorted(cells.values(), key=lambda c: (c.b_layer, c.a_layer)))
    matched = any(c.matched for c in ordered)
    return FingerprintEvidence(
        log10_p, tuple(per_layer), ordered, all_pairs, shared, fit, reason, matched
    )


def _all_pairs(
    a: Fingerprint, b: Fingerprint, rotation: Array, cells: dict[tuple[int, int], SketchCell]
) -> list[float | None]:
    """Test every pair of equal width (into ``cells``); per B layer, its best A layer's
    log10 p adjusted for the A layers tried."""
    per_layer: list[float | None] = []
    for j, lb in enumerate(b.layers):
        tried = []
        for i, la in enumerate(a.layers):
            if la is None or lb is None:
                continue
            found = cells.get((i, j)) or _cell(i, j, la, lb, rotation)
            if found is not None:
                cells[(i, j)] = found
                tried.append(found.log10_p)
        per_layer.append(bonferroni(tried) if tried else None)
    return per_layer
