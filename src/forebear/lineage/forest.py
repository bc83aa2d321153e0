"""What a lineage forest is made of (``Edge``, ``Lineage``) and the pairwise evidence it is
built from (``PairGraph``: comparisons by unordered pair, the models' profiles, and the
distance, adjacency cost and direction of any pair). ``tree`` assembles the forest;
``merging`` finds its two-parent nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from forebear.compare.result import Comparison
from forebear.lineage.adjacency import reparameterised, shared_parameters, structural_changes
from forebear.lineage.decompose import Decomposition
from forebear.lineage.direction import DirectionEvidence, ModelProfile, direction

__all__ = ["COPIES", "Decomposer", "Edge", "Lineage", "PairGraph"]

COPIES = ("identical", "repackaged copy")

Decomposer = Callable[[str, str, str, str | None], Decomposition]


@dataclass(frozen=True)
class Edge:
    parent: str
    child: str
    relation: str  # the comparison's verdict class, or "merge"
    log10_p: float | None  # the pair's test (None for a merge edge)
    distance: float | None  # relative change between the two
    p_weights: float  # P(parent → child) from the weights
    p_priors: float | None  # with the metadata priors, when given
    decided_by: str  # "weights", "priors" or "undetermined"
    reasons: tuple[str, ...]
    weight: float | None = None  # a merge parent's mixture weight
    alternatives: tuple[str, ...] = ()  # other relatives within ALTERNATIVE of the distance
    attached_by: str = "weights"  # "priors": a declared base the weights could not rule out


@dataclass(frozen=True)
class Lineage:
    models: tuple[str, ...]
    families: tuple[tuple[str, ...], ...]
    edges: tuple[Edge, ...]
    merges: tuple[Mapping[str, Any], ...]  # each merge's decomposition (JSON form)
    warnings: tuple[str, ...]
    comparisons: int
    seconds: float = 0.0

    def parents(self, model: str) -> tuple[str, ...]:
        return tuple(e.parent for e in self.edges if e.child == model)

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models), "families": [list(f) for f in self.families],
            "edges": [_edge_json(e) for e in self.edges], "merges": list(self.merges),
            "warnings": list(self.warnings), "comparisons": self.comparisons,
            "seconds": self.seconds,
        }  # fmt: skip


def _edge_json(edge: Edge) -> dict[str, Any]:
    return {
        "parent": edge.parent, "child": edge.child, "relation": edge.relation,
        "log10_p": edge.log10_p, "distance": edge.distance, "p_weights": edge.p_weights,
        "p_priors": edge.p_priors, "decided_by": edge.decided_by,
        "reasons": list(edge.reasons), "weight": edge.weight,
        "alternatives": list(edge.alternatives), "attached_by": edge.attached_by,
    }  # fmt: skip


@dataclass
class PairGraph:
    """Pairwise evidence by unordered pair, and the profiles: what a tree is built from."""

    pairs: Mapping[tuple[str, str], Comparison]
    profiles: Mapping[str, ModelProfile]
    warnings: list[str] = field(default_factory=list)

    def get(self, u: str, v: str) -> tuple[Comparison, bool] | None:
        """The comparison of ``u`` and ``v`` and whether u was its A."""
        if (u, v) in self.pairs:
            return self.pairs[(u, v)], True
        if (v, u) in self.pairs:
            return self.pairs[(v, u)], False
        return None

    def copies(self, u: str, v: str) -> bool:
        found = self.get(u, v)
        return found is not None and found[0].verdict in COPIES

    def derived(self, u: str, v: str) -> bool:
        found = self.get(u, v)
        return found is not None and found[0].derived

    def distance(self, u: str, v: str) -> float:
        found = self.get(u, v)
        if found is None:
            return math.inf
        change = found[0].change
        if change is not None:
            return change
        return 0.0 if found[0].verdict in COPIES else 1.0

    def cost(self, u: str, v: str) -> tuple[int, int, int, float]:
        """How an edge u–v ranks in the spanning tree, least first: re-parameterisations it
        needs (and then its structural changes), the parameters the two hold bit-identical
        (more first), distance (see ``adjacency``)."""
        found = self.get(u, v)
        assert found is not None
        pu, pv = self.profiles[u], self.profiles[v]
        moved = int(reparameterised(found[0]))
        cuts = structural_changes(pu, pv) if moved else 0
        return moved, cuts, -shared_parameters(pu.tensors, pv.tensors), self.distance(u, v)

    def direction(self, u: str, v: str) -> DirectionEvidence:
        """Log-odds that ``u`` is ``v``'s parent."""
        found = self.get(u, v)
        assert found is not None
        comparison, u_is_a = found
        a, b = (u, v) if u_is_a else (v, u)
        evidence = direction(self.profiles[a], self.profiles[b], comparison)
        return evidence if u_is_a else DirectionEvidence(-evidence.log_odds, evidence.reasons)
