"""Evidence that one MLP of B descends from one MLP of A: two tests on their hidden units.

Both tests look at a deterministic sample of B's units (``max_units``, spread
evenly over the unit index) and score pairs of units by the cosine of their
rows in a common residual basis (see ``forebear.align.units``).

**Same-position test** (``null="exact"``): B's unit ``u`` against A's unit
``u``, for equal widths. Under H0 (independent initialisations) B's hidden
units are exchangeable — initialisations draw them i.i.d. and training is
equivariant under their permutation — and independent of A, so the identity
pairing is a uniformly random one: the p-value of ``stats.assignment_test``
with the exact null is valid without further assumptions. Unit score: the
mean cosine of gate rows, up rows and down columns. A re-parameterisation
that permutes units defeats this test (it loses power, never validity).

**Matched-unit test** (``null="approximate"``): every sampled B unit is
matched to one A unit by a linear assignment on its reading rows (gate and up;
up's sign is free, as (up, down) may be flipped together), then the matched
pairs are scored on what the matching did not see: the down columns, with
each model's mean and top ``k = hidden / 2`` (at most 128) principal directions removed
(``strip_shared``: the directions where independently trained models
converge). Under H0 the matched pairs should look like random pairs on that
held-out bulk; the p-value is the normal approximation, its calibration
checked on the zoo's independent pairs. Survives unit and residual
permutations, rotations, sign flips and width pruning.

This module owns the per-MLP tests; combining layers and deciding is
``pipeline``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from forebear.align.units import MlpView, StrippedRows, normalise_rows, strip_shared
from forebear.formats.base import Array
from forebear.stats import TestResult, assignment_test

__all__ = ["MlpEvidence", "Prepared", "mlp_evidence", "prepare", "sample_units"]


Bulk = Array | StrippedRows


@dataclass(frozen=True)
class Prepared:
    """An MLP view reduced to what the tests need, for the units ``kept``.

    ``raw``: (gate or None, up, down) rows of the kept units; ``bulk``: the same,
    stripped of shared directions and normalised (None when not prepared) — explicit
    rows for a sample, ``StrippedRows`` (implicit) when every unit is kept.
    """

    label: str
    units: int
    kept: Array
    raw: tuple[Array | None, Array, Array | None]
    bulk: tuple[Bulk | None, Bulk, Bulk | None] | None
    parameters: int


def sample_units(count: int, limit: int) -> Array:
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


# Directions stripped as shared: half the residual width, at most this many. On the zoo's
# independent pairs (width 64) a quarter left per-layer z-scores biased (mean 0.2, 3.6 % of
# pairs at p < 0.01); half brought them to mean -0.04, sd 1.08, 0.9 %. The cap bounds the
# cost for wide models and is not validated there (no independent 7B pairs here).
MAX_SHARED_DIRECTIONS = 128


def shared_directions(hidden: int) -> int:
    return max(1, min(hidden // 2, MAX_SHARED_DIRECTIONS))


def _rotate(rows: Array | None, rotation: Array | None, renormalise: bool) -> Array | None:
    if rows is None or rotation is None:
        return rows
    mapped = np.asarray(rows @ rotation, dtype=np.float32)
    return normalise_rows(mapped).astype(np.float32) if renormalise else mapped


def prepare(
    view: MlpView, keep: Array | None, bulk: bool, rotation: Array | None = None
) -> Prepared:
    """The kept units' rows (all when ``keep`` is None); with ``bulk``, also their rows
    stripped of this model's shared directions; then both mapped by ``rotation``."""
    kept = np.arange(view.units) if keep is None else np.asarray(keep, dtype=np.int64)
    pieces = (view.gate, view.up, view.down)
    stripped: tuple[Bulk | None, ...] | None = None
    if bulk and keep is None and rotation is None:
        k = shared_directions(view.up.shape[1])
        stripped = tuple(None if m is None else StrippedRows.of(m, k) for m in pieces)
    elif bulk:
        k = shared_directions(view.up.shape[1])
        stripped = tuple(
            _rotate(None if m is None else strip_shared(m, k, keep, normalise=True), rotation, True)
            for m in pieces
        )
    # Every unit kept (model A): the rows as they are, no copy; a sample: its rows only.
    raw = tuple(
        None if m is None else _rotate(m if keep is None else m[kept], rotation, False)
        for m in pieces
    )
    return Prepared(view.label, view.units, kept, raw, stripped, view.parameters)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MlpEvidence:
    label_a: str
    label_b: str
    same_position: TestResult | None  # None when widths differ
    matched: TestResult | None  # None when the matched test did not run
    matching: Array | None  # per sampled B unit, the A unit matched to it (-1: none)
    sampled: Array  # the B units sampled
    match_quality: float  # mean |cosine| of matched (or same-position) up rows, raw
    relative_delta: float  # ‖B − A‖ / ‖B‖ over the paired units' rows (the closer pairing)

    @property
    def log10_p(self) -> float:
        found = [t.log10_p for t in (self.same_position, self.matched) if t is not None]
        return min(found, default=0.0)


def _cosines(b: Array, a: Array) -> Array:
    return normalise_rows(b) @ normalise_rows(a).T


def _both(a: Prepared, b: Prepared) -> list[tuple[int, Array, Array]]:
    """(index, A's rows, B's rows) of each of gate, up, down that both models have."""
    found = []
    for index, (piece_a, piece_b) in enumerate(zip(a.raw, b.raw, strict=True)):
        if piece_a is not None and piece_b is not None:
            found.append((index, piece_a, piece_b))
    return found


def _delta(a_rows: list[Array], b_rows: list[Array]) -> float:
    difference = sum(float(np.sum((pb - pa) ** 2)) for pa, pb in zip(a_rows, b_rows, strict=True))
    size = sum(float(np.sum(pb**2)) for pb in b_rows)
    return float(np.sqrt(difference / size)) if size > 0 else float("nan")


def _same_position(a: Prepared, b: Prepared) -> tuple[TestResult, float, float]:
    index = np.searchsorted(a.kept, b.kept)
    pieces = _both(a, b)
    rows_a = [piece_a[index] for _, piece_a, _ in pieces]
    rows_b = [piece_b for _, _, piece_b in pieces]
    scores = np.mean([_cosines(pb, pa) for pa, pb in zip(rows_a, rows_b, strict=True)], axis=0)
    test = assignment_test(
        scores, "same-position units", "exact", "Chatterjee bound over unit permutations"
    )
    quality = float(np.mean(np.diag(_cosines(b.raw[1], a.raw[1][index]))))
    return test, quality, _delta(rows_a, rows_b)


def _explicit(bulk: Bulk, index: Array | None) -> Array:
    if isinstance(bulk, StrippedRows):
        return bulk.rows(np.arange(len(bulk.norms)) if index is None else index)
    return bulk if index is None else bulk[index]


def _bulk_cosines(rows_b: Bulk, a: Bulk) -> Array:
    """(B rows, A rows) cosines of stripped rows; B's are explicit (a sample)."""
    queries = _explicit(rows_b, None)
    if isinstance(a, StrippedRows):
        return a.cosines(queries)
    found: Array = queries @ a.T
    return found


def _matched(a: Prepared, b: Prepared) -> tuple[TestResult, Array, float, float]:
    """Assignment of sampled B units to A units (one-to-one; the wider side keeps some
    unpaired), then the held-out test over the pairs. ``matching[i]``: the A unit of
    sampled B unit ``i``, or -1."""
    assert a.bulk is not None and b.bulk is not None
    gate_a, up_a, down_a = a.bulk
    gate_b, up_b, down_b = b.bulk
    up_cos = _bulk_cosines(up_b, up_a)
    reading = np.abs(up_cos)
    if gate_a is not None and gate_b is not None:
        reading = reading + _bulk_cosines(gate_b, gate_a)
    rows, columns = linear_sum_assignment(reading, maximize=True)
    matching = np.full(len(b.kept), -1, dtype=np.int64)
    matching[rows] = columns
    assert down_a is not None and down_b is not None
    signs = np.sign(up_cos[np.ix_(rows, columns)])
    held_b = _explicit(down_b, None)[rows]
    test = assignment_test(
        signs * (held_b @ _explicit(down_a, columns).T), "matched units, held-out bulk",
        "approximate", "normal approximation over re-pairings of matched units",
    )  # fmt: skip
    flip = np.sign(up_cos[rows, columns])[:, None]
    pieces = _both(a, b)
    rows_a = [piece_a[columns] * (1.0 if i == 0 else flip) for i, piece_a, _ in pieces]
    rows_b = [piece_b[rows] for _, _, piece_b in pieces]
    quality = float(np.mean(np.abs(np.diag(_cosines(b.raw[1][rows], a.raw[1][columns])))))
    return test, matching, quality, _delta(rows_a, rows_b)


def mlp_evidence(a: Prepared, b: Prepared, matched: bool) -> MlpEvidence:
    """Both tests of B's prepared MLP against A's (all A units kept; B's rows in A's basis)."""
    same, matched_test, matching = None, None, None
    qualities: list[float] = []
    deltas: list[float] = []
    if a.units == b.units and np.all(np.isin(b.kept, a.kept)):
        same, quality, delta = _same_position(a, b)
        qualities.append(quality)
        deltas.append(delta)
    can_match = a.bulk is not None and b.bulk is not None and a.raw[2] is not None
    if matched and can_match and min(len(b.kept), len(a.kept)) >= 2:
        matched_test, matching, quality, delta = _matched(a, b)
        qualities.append(quality)
        deltas.append(delta)
    return MlpEvidence(
        a.label, b.label, same, matched_test, matching, b.kept,
        max(qualities, default=float("nan")), min(deltas, default=float("nan")),
    )  # fmt: skip
