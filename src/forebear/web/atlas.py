"""The lineage atlas: the index's lineage forest as nodes with positions and edges with their
evidence, ready for the page to draw.

``Atlas.graph`` runs ``tree_from_index`` (every pair compared, so it is bounded
by the library at ``MAX_INDEXED`` models) once per index generation and
family, and caches the result; a second request while one is computed waits
for it rather than starting another. ``layout`` is pure: each family is a
column block, each model's row its depth below the family's roots. This
module owns that shape; the tree itself is ``lineage.tree``'s.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forebear.index import Index
from forebear.index.record import IndexRecord
from forebear.lineage.tree import Lineage, tree_from_index

__all__ = ["Atlas", "layout"]

COLUMN = 220.0  # layout units between neighbouring models
ROW = 140.0  # between a parent and its child
FAMILY_GAP = 120.0  # extra space between families


class Atlas:
    """The atlas of one index file, recomputed when the index changes."""

    def __init__(self, index: Path) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, str | None], dict[str, Any]] = {}

    def graph(self, family: str | None = None) -> dict[str, Any]:
        """Nodes (label, family, position, card) and edges (the tree's evidence)."""
        with self._lock, Index.open(self.index, create=False) as opened:
            key = (opened.generation(), family)
            if key not in self._cache:
                records = {record.label: record for record in opened.records(family=family)}
                lineage = tree_from_index(opened, family=family)
                self._cache = {key: _graph(lineage, records, str(opened.path))}
            return self._cache[key]


def _graph(lineage: Lineage, records: dict[str, IndexRecord], index: str) -> dict[str, Any]:
    positions = layout(lineage.families, [(e.parent, e.child) for e in lineage.edges])
    family_of = {m: n for n, family in enumerate(lineage.families) for m in family}
    nodes = [_node(label, records.get(label), family_of[label], positions[label])
             for label in lineage.models]  # fmt: skip
    edges = [{"id": f"e{n}", **_edge(edge)} for n, edge in enumerate(lineage.to_json()["edges"])]
    return {"index": index, "nodes": nodes, "edges": edges,
            "families": len(lineage.families), "warnings": list(lineage.warnings),
            "comparisons": lineage.comparisons, "seconds": lineage.seconds}  # fmt: skip


def _node(label: str, record: IndexRecord | None, family: int,
          at: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    data = record.to_json() if record is not None else {}
    return {"id": label, "label": label, "name": _short(label), "group": family,
            "family": data.get("family"), "x": at[0], "y": at[1],
            "structure": data.get("structure", {}), "card": data.get("card")}  # fmt: skip


def _edge(edge: dict[str, Any]) -> dict[str, Any]:
    keep = ("parent", "child", "relation", "log10_p", "distance", "p_weights", "p_priors",
            "decided_by", "attached_by", "reasons", "weight", "alternatives")  # fmt: skip
    return {key: edge[key] for key in keep}


def _short(label: str) -> str:
    """The last path or hub-id component, with any @revision."""
    ref, _, revision = label.partition("@")
    name = ref.rstrip("/").rsplit("/", 1)[-1] or ref
    return f"{name}@{revision[:8]}" if revision else name


def layout(
    families: Sequence[Sequence[str]], edges: Sequence[tuple[str, str]]
) -> dict[str, tuple[float, float]]:
    """A position per model: families side by side, each a top-down tree by depth (a model
    with two parents sits below the deeper one)."""
    parents: dict[str, list[str]] = {}
    for parent, child in edges:
        parents.setdefault(child, []).append(parent)
    positions: dict[str, tuple[float, float]] = {}
    left = 0.0
    for family in families:
        depth = _depths(family, parents)
        rows: dict[int, list[str]] = {}
        for model in family:
            rows.setdefault(depth[model], []).append(model)
        width = max(len(row) for row in rows.values())
        for level, row in rows.items():
            offset = (width - len(row)) * COLUMN / 2
            for n, model in enumerate(row):
                positions[model] = (left + offset + n * COLUMN, level * ROW)
        left += width * COLUMN + FAMILY_GAP
    return positions


def _depths(family: Sequence[str], parents: dict[str, list[str]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def of(model: str, seen: frozenset[str]) -> int:
        if model not in depth:
            above = [p for p in parents.get(model, []) if p not in seen]
            depth[model] = 1 + max((of(p, seen | {model}) for p in above), default=-1)
        return depth[model]

    for model in family:
        of(model, frozenset())
    return depth
