"""Merges in a lineage forest: which models are merges of two relatives.

A model that lies between two of its eight nearest relatives —
``d(P1, M) + d(M, P2) < 1.4 · d(P1, P2)``, where a parent with two children sits at
√2 or more — is decomposed on them (``decompose``, with their closest common
relative as the base, only when the parents alone do not explain it); an exact or
changed merge becomes a node with two parents. With metadata priors, a model that
declares two bases and lies between them is their merge even where the weights
show no exact one (``_declared_merge``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from itertools import combinations
from typing import Any

from forebear.lineage.decompose import MIN_WEIGHT, Decomposition
from forebear.lineage.forest import Decomposer, Edge, PairGraph
from forebear.lineage.priors import DECLARED_LOG_ODDS, Priors

__all__ = ["BETWEEN", "find_merges"]

BETWEEN = 1.4  # (d(P1, M) + d(M, P2)) / d(P1, P2) below this: M may be their merge
MERGE_CANDIDATES = 4  # pairs of relatives a model is decomposed on, most "between" first
NEAREST = 8  # a merge's parents are sought among a model's this many nearest relatives
_MERGE_P = {"exact merge": 0.999, "merge, then changed": 0.9}


def find_merges(nodes: list[str], graph: PairGraph, decomposer: Decomposer | None,
                priors: Priors | None = None,
                ) -> tuple[set[str], list[Edge], list[Mapping[str, Any]]]:  # fmt: skip
    """Merge nodes, their parent edges and decompositions. Two passes: the first finds which
    models are merges at all; the second seeks each one's parents among the models that are
    not (a linear merge also lies between one parent and a sibling merge of the same two).
    Then the declared merges (``_declared_merge``)."""
    if decomposer is None:
        return set(), [], []
    decomposer = functools.cache(decomposer)  # both passes and the declared merges ask again
    fits = {m: _merge_of(m, nodes, graph, decomposer) for m in nodes}
    first = {m: fit for m, fit in fits.items() if fit is not None}
    plain = [n for n in nodes if n not in first]
    edges: list[Edge] = []
    found: list[Mapping[str, Any]] = []
    for m, (parents, result) in first.items():
        (parents, result) = _merge_of(m, [m, *plain], graph, decomposer) or (parents, result)
        found.append({**result.to_json(), "model": m, "parents": list(parents)})
        edges += _merge_edges(m, parents, result)
    declared = {m: _declared_merge(m, plain, graph, decomposer, priors) for m in plain}
    for m, fit in declared.items():
        if fit is not None:
            (parents, result) = fit
            found.append({**result.to_json(), "model": m, "parents": list(parents),
                          "declared": True})  # fmt: skip
            edges += _merge_edges(m, parents, result, declared=True)
    return set(first) | {m for m, fit in declared.items() if fit is not None}, edges, found


def _declared_merge(m: str, nodes: list[str], graph: PairGraph, decomposer: Decomposer,
                    priors: Priors | None,
                    ) -> tuple[tuple[str, str], Decomposition] | None:  # fmt: skip
    """A merge the weights cannot confirm but do not rule out: ``m`` declares two of
    ``nodes`` as its bases, lies between them (``_between``), and its fit gives each a
    weight of at least ``MIN_WEIGHT`` — a merge trained further looks like that, and so
    does a model trained on both parents' data, which the weights cannot tell apart."""
    if priors is None:
        return None
    bases = {n for n in nodes if n != m and priors.declares(m, n)}
    for p1, p2 in _between(m, nodes, graph):
        if {p1, p2} <= bases:
            result = decomposer(m, p1, p2, _base(m, p1, p2, nodes, graph))
            if result.best is not None and min(result.best.weights) >= MIN_WEIGHT:
                return (p1, p2), result
    return None


def _merge_of(m: str, nodes: list[str], graph: PairGraph, decomposer: Decomposer,
              ) -> tuple[tuple[str, str], Decomposition] | None:  # fmt: skip
    """The first candidate pair of ``nodes`` that ``m`` is a merge of, with the fit."""
    for p1, p2 in _between(m, nodes, graph)[:MERGE_CANDIDATES]:
        result = decomposer(m, p1, p2, None)
        if result.verdict not in _MERGE_P:  # TIES and task arithmetic need the base
            result = decomposer(m, p1, p2, _base(m, p1, p2, nodes, graph))
        if result.verdict in _MERGE_P:
            return (p1, p2), result
    return None


def _between(m: str, nodes: list[str], graph: PairGraph) -> list[tuple[str, str]]:
    """Pairs of ``m``'s nearest relatives that ``m`` lies between, closest to a line first.
    A merge's parents are among its nearest relatives; without that rule a long branch
    (a heavily trained relative) makes every close pair look "between"."""
    relatives = sorted((n for n in nodes if n != m and graph.derived(m, n)),
                       key=lambda n: graph.distance(m, n))[:NEAREST]  # fmt: skip
    scored = []
    for p1, p2 in combinations(relatives, 2):
        apart = graph.distance(p1, p2)
        if not graph.derived(p1, p2) or not 0 < apart < math.inf:
            continue
        near = (graph.distance(m, p1), graph.distance(m, p2))
        ratio = sum(near) / apart
        if ratio < BETWEEN and max(near) < apart:  # inside: closer to each than they are apart
            scored.append((ratio, p1, p2))
    return [(p1, p2) for _, p1, p2 in sorted(scored)]


def _base(m: str, p1: str, p2: str, nodes: list[str], graph: PairGraph) -> str | None:
    """The likely base of ``p1`` and ``p2``: their closest common relative that does not lie
    between them (a node between two fine-tunes is a merge of them, not their origin)."""
    apart = graph.distance(p1, p2)
    common = [
        n for n in nodes
        if n not in (m, p1, p2) and graph.derived(n, p1) and graph.derived(n, p2)
        and graph.distance(n, p1) + graph.distance(n, p2) >= BETWEEN * apart
    ]  # fmt: skip
    if not common:
        return None
    return min(common, key=lambda n: graph.distance(n, p1) + graph.distance(n, p2))


def _merge_edges(m: str, parents: tuple[str, str], result: Decomposition, *,
                 declared: bool = False) -> list[Edge]:  # fmt: skip
    assert result.best is not None
    pieces = zip(parents, result.distances, result.best.weights, strict=True)
    if declared:
        reason = (f"{m} declares {' and '.join(parents)} as its bases and lies between them; "
                  f"the weights show no exact merge (the nearest, {result.best.method}: "
                  f"residual {result.best.residual:.3g}, {result.verdict}): a merge trained "
                  "further, or a model trained on both parents' data")  # fmt: skip
        p_declared = 1.0 / (1.0 + math.exp(-DECLARED_LOG_ODDS))
        return [
            Edge(parent, m, "merge", None, distance, 0.5, p_declared, "priors", (reason,), weight,
                 attached_by="priors")
            for parent, distance, weight in pieces
        ]  # fmt: skip
    p = _MERGE_P[result.verdict]
    reason = (f"{m} is a {result.best.method} merge ({result.verdict}, residual "
              f"{result.best.residual:.3g})")  # fmt: skip
    return [
        Edge(parent, m, "merge", None, distance, p, None, "weights", (reason,), weight)
        for parent, distance, weight in pieces
    ]
