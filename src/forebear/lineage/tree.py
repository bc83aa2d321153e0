"""Lineage trees: who is whose parent among many models, with a confidence per edge.

``build_tree(refs)`` reads every model once, compares every pair and assembles:

1. **families**: connected components of the pairs the comparison calls derived
   (p < 1e-6); no edge ever joins two families;
2. **copies** (identical or repackaged) collapse into one node per cluster, the
   most precisely stored member first, the others its leaves;
3. **merges** (``merging``): a model that lies between two of its eight nearest
   relatives is decomposed on them; an exact or changed merge becomes a node with
   two parents;
4. the rest of each family: the **minimum spanning tree** of the pairwise
   distances (``ledger.changed``: parameter-weighted relative change) — a parent
   is closer to each child than two siblings are to each other — taken in the
   order ``adjacency`` gives first: an edge that needs a re-parameterisation
   (different coordinates) after every edge that does not, then pairs holding
   more bit-identical (frozen) parameters first;
5. **direction**: each tree edge gets log-odds from ``direction``; the tree is
   rooted where they agree most, every rooting weighted by ``exp(½ Σ log-odds)``,
   and ``P(u → v)`` is the weight of the roots on u's side. An edge with P inside
   [0.1, 0.9] is "undetermined". Metadata priors (``Priors``: release dates,
   declared base models, quantised flags) add log-odds in a second rooting,
   reported beside the weights' own;
6. **declared bases** (priors given): where the weights cannot tell a child's
   parent from its grandparent or a sibling — a sibling trained on the same data
   lies between the parent and the child as much as an intermediate fine-tune
   would (a controlled pair of the two worlds differs by 0.1 % in distance; see
   the lineage bench) — a declared parent edge replaces the longest edge of the
   cycle it would close when it is within ``ALTERNATIVE`` of that edge's distance
   and no worse on coordinates and frozen tensors; and a model that declares two
   bases and lies between them is their merge even where the weights show no
   exact one (a merge trained further). Such edges say they were attached by the
   priors; the weights' own tree is what the same call without priors gives.

``tree_from_index`` builds the same forest from an index's fingerprints (no
weights: no weight-growth evidence and no decomposition; the model cards' declared
bases become priors). ``assemble`` is the graph logic alone (no I/O); ``forest``
holds what a forest is made of and the pairwise evidence (``PairGraph``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from itertools import combinations, pairwise
from typing import Any

from forebear.compare.result import Comparison
from forebear.compare.sketches import compare_sketches
from forebear.errors import ForebearError
from forebear.index.card import read_card
from forebear.index.store import Index
from forebear.lineage.decompose import Decomposition, decompose
from forebear.lineage.direction import (
    ModelProfile,
    profile,
    sketch_profile,
)
from forebear.lineage.forest import Decomposer, Edge, Lineage, PairGraph
from forebear.lineage.graphs import Roots, components, rooted, tree_path
from forebear.lineage.merging import find_merges
from forebear.lineage.priors import Priors
from forebear.model import Model, open_model

__all__ = ["Edge", "Evidence", "Lineage", "assemble", "build_tree", "compared", "tree_from_index"]

ALTERNATIVE = 1.1  # relatives this close to a child, relative to its parent, are listed
MAX_INDEXED = 500  # models a tree from the index compares pairwise, at most
DECIDED = 0.9  # P(direction) beyond this (or below 1 − this) decides an edge


def build_tree(
    refs: Sequence[str],
    *,
    priors: Priors | None = None,
    cards: bool = False,
    budget: int = 1 << 22,
    progress: Callable[[str], None] | None = None,
) -> Lineage:
    """Open, profile and compare every model of ``refs``; then ``assemble``. ``cards``: the
    models' cards' declared bases as priors too (``priors`` wins for a model both name)."""
    started = time.perf_counter()
    with compared(refs, budget=budget, cards=cards, progress=progress) as evidence:
        claims = evidence.cards.merged(priors) if cards else priors
        found = evidence.assemble(claims)
    return replace(found, seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class Evidence:
    """Every pair of a set of open models compared, and their profiles: what ``assemble``
    needs, kept so that one comparison serves several trees (with and without priors)."""

    names: tuple[str, ...]
    pairs: Mapping[tuple[str, str], Comparison]
    profiles: Mapping[str, ModelProfile]
    decomposer: Decomposer
    cards: Priors  # the base models each model's card (README.md) declares, when read

    def assemble(self, priors: Priors | None = None) -> Lineage:
        return assemble(self.names, self.pairs, self.profiles, self.decomposer, priors)


@contextmanager
def compared(
    refs: Sequence[str],
    *,
    budget: int = 1 << 22,
    cards: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Iterator[Evidence]:
    """Open, profile and compare every model of ``refs`` (the models stay open inside);
    ``cards``: read their model cards too (one more request per hub model)."""
    say = progress or (lambda message: None)
    if len(set(refs)) < len(refs):
        twice = sorted({r for r in refs if refs.count(r) > 1})
        raise ForebearError(f"{twice[0]}: named more than once",
                            hint="list each model once")  # fmt: skip
    with ExitStack() as stack:
        models = [stack.enter_context(open_model(ref)) for ref in refs]
        names = tuple(m.name for m in models)
        profiles = {m.name: profile(m) for m in models}
        pairs: dict[tuple[str, str], Comparison] = {}
        for count, (a, b) in enumerate(combinations(models, 2), start=1):
            say(f"compare {count}/{len(models) * (len(models) - 1) // 2}: {a.name} · {b.name}")
            pairs[(a.name, b.name)] = _compare(a, b)
        by_name = dict(zip(names, models, strict=True))

        def decomposer(m: str, p1: str, p2: str, base: str | None) -> Decomposition:
            given = None if base is None else by_name[base]
            return decompose(by_name[m], [by_name[p1], by_name[p2]], given, budget=budget)

        declared = _card_priors(models) if cards else Priors({})
        yield Evidence(names, pairs, profiles, decomposer, declared)


def _card_priors(models: Sequence[Model]) -> Priors:
    """The base models the models' cards declare, as priors (a card is optional)."""
    declared: dict[str, Any] = {}
    for model in models:
        card = read_card(model.location) if model.location is not None else None
        if card is not None and card.base_models:
            declared[model.name] = {"base_model": list(card.base_models)}
    return Priors.from_mapping(declared, "model cards")


def tree_from_index(
    index: Index,
    *,
    family: str | None = None,
    limit: int = MAX_INDEXED,
    priors: Priors | None = None,
    progress: Callable[[str], None] | None = None,
) -> Lineage:
    """The forest of indexed models, from their fingerprints alone: pairs compared sketch
    against sketch, direction from structure and stored precision (no weights, so no weight
    growth and no merge decomposition), and the model cards' declared bases as priors
    (merged with ``priors`` when given)."""
    say = progress or (lambda message: None)
    started = time.perf_counter()
    records = list(index.records(family=family))
    if len(records) > limit:
        raise ForebearError(
            f"{index.path}: {len(records)} indexed models; a tree compares every pair",
            hint=f"pick a family with --family, or at most {limit} models",
        )
    sketches = {r.label: index.load_fingerprint(r) for r in records}
    pairs: dict[tuple[str, str], Comparison] = {}
    for count, (a, b) in enumerate(combinations(sketches, 2), start=1):
        say(f"compare {count}/{len(sketches) * (len(sketches) - 1) // 2}: {a} · {b}")
        pairs[(a, b)] = compare_sketches(sketches[a], sketches[b], names=(a, b))
    profiles = {name: sketch_profile(name, found) for name, found in sketches.items()}
    cards = Priors.from_mapping({r.label: {"base_model": list(r.card.base_models)}
                                 for r in records if r.card.base_models})  # fmt: skip
    found = assemble(list(sketches), pairs, profiles, None, cards.merged(priors))
    return replace(found, seconds=time.perf_counter() - started)


def _compare(a: Model, b: Model) -> Comparison:
    from forebear.compare import compare

    return compare(a, b)


def assemble(
    names: Sequence[str],
    pairs: Mapping[tuple[str, str], Comparison],
    profiles: Mapping[str, ModelProfile],
    decomposer: Decomposer | None,
    priors: Priors | None = None,
) -> Lineage:
    """The lineage forest from pairwise comparisons (see the module docstring)."""
    graph = PairGraph(pairs, profiles)
    families = components(names, graph.derived)
    edges: list[Edge] = []
    merges: list[Mapping[str, Any]] = []
    prior_odds = priors.log_odds if priors is not None else None
    if priors is not None:
        graph.warnings.extend(priors.warnings)
    for family in families:
        representatives, copy_edges = _copies(family, graph, prior_odds)
        edges += copy_edges
        merged, merge_edges, decompositions = find_merges(representatives, graph, decomposer,
                                                      priors)  # fmt: skip
        edges += merge_edges
        merges += decompositions
        rest = [n for n in representatives if n not in merged]
        for tree in _spanning_forest(rest, graph):
            tree, declared = _declared_parents(tree, graph, priors)
            edges += _orient(tree, rest, graph, prior_odds, declared)
    return Lineage(tuple(names), tuple(tuple(f) for f in families), tuple(edges), tuple(merges),
                   tuple(graph.warnings), len(pairs))  # fmt: skip


# ---------------------------------------------------------------- copies


def _copies(family: list[str], graph: PairGraph, prior_odds: PriorOdds | None,
            ) -> tuple[list[str], list[Edge]]:  # fmt: skip
    """One representative per copy cluster (the most precisely stored), copies as leaves."""
    clusters = components(family, graph.copies)
    representatives, edges = [], []
    for cluster in clusters:
        ordered = sorted(cluster, key=lambda n: (graph.profiles[n].roundoff, n))
        first = ordered[0]
        representatives.append(first)
        for other in ordered[1:]:
            evidence = graph.direction(first, other)
            p = _sigmoid(evidence.log_odds)
            with_priors = None if prior_odds is None else _sigmoid(
                evidence.log_odds + prior_odds(first, other))  # fmt: skip
            edges.append(_edge(first, other, graph, p, with_priors, evidence.reasons))
    return representatives, edges


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))


def _edge(u: str, v: str, graph: PairGraph, p: float, p_priors: float | None,
          reasons: tuple[str, ...]) -> Edge:  # fmt: skip
    """The edge between ``u`` and ``v``, oriented by the weights when they decide, else by
    the priors when they do; ``p`` is P(u → v)."""
    found = graph.get(u, v)
    assert found is not None
    comparison = found[0]
    decided_by = "weights" if max(p, 1 - p) >= DECIDED else "undetermined"
    forward = p >= 0.5
    if (
        decided_by == "undetermined"
        and p_priors is not None
        and max(p_priors, 1 - p_priors) >= DECIDED
    ):
        decided_by, forward = "priors", p_priors >= 0.5
    parent, child = (u, v) if forward else (v, u)
    p_parent = p if forward else 1.0 - p
    p_prior = None if p_priors is None else (p_priors if forward else 1.0 - p_priors)
    return Edge(parent, child, comparison.verdict, comparison.log10_p, graph.distance(u, v),
                p_parent, p_prior, decided_by, reasons)  # fmt: skip


# ---------------------------------------------------------------- trees


def _spanning_forest(nodes: list[str], graph: PairGraph) -> list[list[tuple[str, str]]]:
    """Kruskal over derived pairs by ``PairGraph.cost``; one edge list per tree (singletons:
    empty)."""
    candidates = sorted(
        (graph.cost(u, v), u, v) for u, v in combinations(nodes, 2) if graph.derived(u, v)
    )
    roots = Roots(nodes)
    chosen = [(u, v) for _, u, v in candidates if roots.join(u, v)]
    trees: dict[str, list[tuple[str, str]]] = {}
    for u, v in chosen:
        trees.setdefault(roots(u), []).append((u, v))
    return list(trees.values())


def _declared_parents(
    tree: list[tuple[str, str]],
    graph: PairGraph,
    priors: Priors | None,
) -> tuple[list[tuple[str, str]], dict[frozenset[str], tuple[str, str]]]:
    """``tree`` with declared bases let in where the weights cannot rule them out; and, per
    edge let in, the edge it replaced. Y declares base d, not Y's neighbour: the edge Y–d
    would close a cycle with the tree's path from Y to d, whose longest edge (by
    ``PairGraph.cost``) is the one the weights prefer it least to. When Y–d ranks no worse on
    coordinates and frozen tensors and is within ``ALTERNATIVE`` of its distance — what a
    spanning tree cannot tell apart — Y–d takes its place (still a tree: removing an edge of
    the cycle and adding another keeps one path between any two models)."""
    if priors is None:
        return tree, {}
    edges = {frozenset(e) for e in tree}
    moved: dict[frozenset[str], tuple[str, str]] = {}
    nodes = sorted({n for e in tree for n in e})
    for node in nodes:
        bases = [n for n in nodes if n != node and priors.declares(node, n)]
        for base in sorted(bases, key=lambda n: graph.distance(n, node)):
            if frozenset((node, base)) in edges:
                break  # already its neighbour
            path = tree_path(edges, node, base)
            u, v = max(pairwise(path), key=lambda e: graph.cost(*e))
            if (graph.derived(base, node)
                    and graph.distance(base, node) <= ALTERNATIVE * graph.distance(u, v)
                    and graph.cost(base, node)[:3] <= graph.cost(u, v)[:3]):  # fmt: skip
                edges.remove(frozenset((u, v)))
                moved.pop(frozenset((u, v)), None)
                edges.add(frozenset((node, base)))
                moved[frozenset((node, base))] = (u, v)
                break
    if not moved:
        return tree, moved
    kept = [(u, v) for u, v in tree if frozenset((u, v)) in edges]
    added = sorted((u, v) for u, v in (sorted(e) for e in edges) if frozenset((u, v)) in moved)
    return kept + added, moved


def _orient(tree: list[tuple[str, str]], nodes: Sequence[str], graph: PairGraph,
            prior_odds: PriorOdds | None,
            declared: Mapping[frozenset[str], tuple[str, str]] | None = None,
            ) -> list[Edge]:  # fmt: skip
    evidence = {(u, v): graph.direction(u, v) for u, v in tree}
    odds = {k: e.log_odds for k, e in evidence.items()}
    p_weights = rooted(tree, odds)
    p_priors = None
    if prior_odds is not None:
        p_priors = rooted(tree, {k: o + prior_odds(*k) for k, o in odds.items()})
    edges = []
    for u, v in tree:
        with_priors = None if p_priors is None else p_priors[(u, v)]
        edge = _edge(u, v, graph, p_weights[(u, v)], with_priors, evidence[(u, v)].reasons)
        edge = replace(edge, alternatives=_alternatives(edge, nodes, graph))
        instead = (declared or {}).get(frozenset((u, v)))
        if instead is not None:
            why = (f"attached by the declared base: the weights linked {instead[0]} and "
                   f"{instead[1]} instead (distance {graph.distance(*instead):.4g}); this "
                   f"edge's {edge.distance:.4g} is within {ALTERNATIVE:g} × that")  # fmt: skip
            beside = {*instead} & {u, v}  # the weights' neighbour of the moved model, if cut
            others = {*instead} - beside if beside else set()
            edge = replace(edge, attached_by="priors", reasons=(*edge.reasons, why),
                           alternatives=tuple(sorted({*edge.alternatives, *others})))  # fmt: skip
        edges.append(edge)
    return edges


def _alternatives(edge: Edge, nodes: Sequence[str], graph: PairGraph) -> tuple[str, ...]:
    """Relatives of the child nearly as close as its parent: a parent picked by distance
    alone is uncertain when another candidate is within ``ALTERNATIVE`` of it."""
    limit = ALTERNATIVE * graph.distance(edge.parent, edge.child)
    return tuple(sorted(
        n for n in nodes if n not in (edge.parent, edge.child)
        and graph.derived(n, edge.child) and graph.distance(n, edge.child) <= limit
    ))  # fmt: skip


PriorOdds = Callable[[str, str], float]
