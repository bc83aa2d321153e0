"""Graph algorithms over model names, knowing nothing of models: union-find
(``Roots``, ``components``), the rooting of an undirected tree into direction
probabilities (``rooted``) and the path between two nodes of a tree
(``tree_path``). ``tree`` uses them for families, copy clusters, Kruskal's
spanning forest, edge direction and the cycles a declared base would close.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import combinations

__all__ = ["Roots", "components", "rooted", "tree_path"]


class Roots:
    """Union-find over names: which set each belongs to."""

    def __init__(self, names: Sequence[str]) -> None:
        self._parent = {n: n for n in names}

    def __call__(self, n: str) -> str:
        while self._parent[n] != n:
            self._parent[n] = self._parent[self._parent[n]]
            n = self._parent[n]
        return n

    def join(self, u: str, v: str) -> bool:
        """Put u's and v's sets together; False when they were one already."""
        ru, rv = self(u), self(v)
        self._parent[ru] = rv
        return ru != rv


def components(names: Sequence[str], linked: Callable[[str, str], bool]) -> list[list[str]]:
    roots = Roots(names)
    for u, v in combinations(names, 2):
        if linked(u, v):
            roots.join(u, v)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(roots(n), []).append(n)
    return list(groups.values())


def rooted(tree: list[tuple[str, str]], odds: Mapping[tuple[str, str], float],
            ) -> dict[tuple[str, str], float]:  # fmt: skip
    """P(u → v) for each edge: the weight of the rootings that put u on the root's side,
    each rooting weighted by exp(½ Σ log-odds of the orientation it implies)."""
    neighbours: dict[str, list[tuple[str, float]]] = {}
    for (u, v), o in odds.items():
        neighbours.setdefault(u, []).append((v, o))
        neighbours.setdefault(v, []).append((u, -o))
    start = tree[0][0]
    order: list[str] = [start]
    up: dict[str, tuple[str, float]] = {}  # node -> (its neighbour toward start, log-odds)
    for node in order:  # breadth first from ``start``
        for other, o in neighbours[node]:
            if other != start and other not in up:
                up[other] = (node, o)
                order.append(other)
    # An orientation with log-odds o scores o / 2 and its reverse −o / 2, so a lone edge gets
    # P = sigmoid(o). Rooted at ``start`` every edge points away from it; rooting at n instead
    # flips only the edge between n and the node above it.
    score = {start: sum(o for _, o in up.values()) / 2.0}
    for n in order[1:]:
        above, o = up[n]
        score[n] = score[above] - o
    top = max(score.values())
    below = {n: math.exp(value - top) for n, value in score.items()}
    for n in reversed(order[1:]):
        below[up[n][0]] += below[n]
    total = below[start]
    found = {}
    for u, v in tree:
        if v in up and up[v][0] == u:  # v below u: u's side is everything outside v's subtree
            found[(u, v)] = 1.0 - below[v] / total
        else:
            found[(u, v)] = below[u] / total
    return found


def tree_path(edges: Collection[frozenset[str]], start: str, goal: str) -> list[str]:
    """The nodes from ``start`` to ``goal`` along the tree ``edges``."""
    neighbours: dict[str, list[str]] = {}
    for u, v in (tuple(e) for e in edges):
        neighbours.setdefault(u, []).append(v)
        neighbours.setdefault(v, []).append(u)
    came: dict[str, str] = {start: start}
    frontier = [start]
    while frontier and goal not in came:
        node = frontier.pop()
        for other in neighbours.get(node, ()):
            if other not in came:
                came[other] = node
                frontier.append(other)
    path = [goal]
    while path[-1] != start:
        path.append(came[path[-1]])
    return path[::-1]
