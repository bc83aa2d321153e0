"""Candidate retrieval over the vector cache: the structural filter, then nearest vectors.

A scan ranks the index by the dot product of retrieval vectors (their cosine:
norms are at most 1) after a structural filter: pruning only shrinks a model,
so an ancestor's hidden size is at least the query's (``min_hidden``; an
unknown size passes), and ``exclude`` drops ids (the query itself, say).

Up to ``EXACT_LIMIT`` cached rows the search is exact: one float32
matrix-vector product. Beyond it, the ANN graph proposes candidates and every
proposal is rescored exactly from the cache, so scores are exact and only
recall is approximate; rows appended since the graph was built are searched
exactly. When the filters leave too few proposals the graph is asked for more,
and past a point the search falls back to exact. ``Search`` forces either.

A query never builds a graph in ``auto`` mode (at a million rows that takes
minutes; exact search takes a fraction of a second): ``Index.warm`` does, and
``forebear index build`` and ``import`` call it. ``Search.ann`` builds or
extends the graph when it must.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from forebear.formats.base import Array
from forebear.index.ann import ann_search
from forebear.index.vectors import VectorSnapshot

__all__ = ["EXACT_LIMIT", "Search", "nearest"]

EXACT_LIMIT = 50_000
# Proposals per query. At a million clustered synthetic vectors (1,000 members of ~0.74
# mutual cosine per cluster: harder than real lineages) the near-duplicate of a query ranked
# first in 25/30 queries at 512 proposals and 30/30 at 2,048 (recall@20 0.74 → 0.89), about
# 60 ms a query; docs/index.md has the end-to-end numbers.
_MIN_PROPOSALS = 2048
_PER_RESULT = 16
_RETRY_FACTOR = 4


class Search(StrEnum):
    auto = "auto"  # exact up to EXACT_LIMIT rows, ANN beyond
    exact = "exact"
    ann = "ann"


def graph_threshold(method: Search) -> int | None:
    """The row count past which ``Index.warm`` builds the ANN graph for ``method``."""
    return {Search.auto: EXACT_LIMIT, Search.exact: None, Search.ann: 0}[method]


def nearest(
    snapshot: VectorSnapshot,
    query: Array,
    k: int,
    *,
    min_hidden: int | None = None,
    excluded: Array | None = None,
    method: Search = Search.auto,
) -> list[tuple[int, float]]:
    """The ``k`` best (record id, score) pairs that pass the filters, best first."""
    query = np.ascontiguousarray(query, dtype=np.float32)
    blocked = np.union1d(snapshot.removed, excluded if excluded is not None else [])
    blocked = blocked.astype(np.int64)
    rows = len(snapshot.ids)
    use_graph = snapshot.ann_path is not None and (
        method is Search.ann or (method is Search.auto and rows > EXACT_LIMIT)
    )
    if k <= 0 or rows == 0:
        return []
    if not use_graph:
        return _exact(snapshot, query, k, min_hidden, blocked, 0)
    wanted = max(_MIN_PROPOSALS, _PER_RESULT * k + (0 if excluded is None else len(excluded)))
    found = _from_graph(snapshot, query, k, min_hidden, blocked, wanted)
    if found is None:
        return _exact(snapshot, query, k, min_hidden, blocked, 0)
    tail = _exact(snapshot, query, k, min_hidden, blocked, snapshot.ann_rows)
    return _best(found + tail, k)


def _passing(
    snapshot: VectorSnapshot, positions: Array, min_hidden: int | None, blocked: Array
) -> Array:
    """A mask over ``positions``: rows the filters keep."""
    keep = ~np.isin(snapshot.ids[positions], blocked, assume_unique=False)
    if min_hidden is not None:
        hidden = snapshot.hidden[positions]
        keep &= (hidden < 0) | (hidden >= min_hidden)
    return keep


def _exact(
    snapshot: VectorSnapshot,
    query: Array,
    k: int,
    min_hidden: int | None,
    blocked: Array,
    start: int,
) -> list[tuple[int, float]]:
    """Brute force over rows ``[start, rows)``."""
    if start >= len(snapshot.ids):
        return []
    scores = np.asarray(snapshot.vectors[start:] @ query, dtype=np.float32)
    positions = np.arange(start, len(snapshot.ids))
    keep = _passing(snapshot, positions, min_hidden, blocked)
    scores, positions = scores[keep], positions[keep]
    if len(scores) > k:
        top = np.argpartition(-scores, k - 1)[:k]
        scores, positions = scores[top], positions[top]
    return _best(
        [(int(snapshot.ids[p]), float(s)) for p, s in zip(positions, scores, strict=True)], k
    )


def _from_graph(
    snapshot: VectorSnapshot,
    query: Array,
    k: int,
    min_hidden: int | None,
    blocked: Array,
    count: int,
) -> list[tuple[int, float]] | None:
    """Graph proposals, filtered and rescored; None when exact search is the better way."""
    assert snapshot.ann_path is not None
    covered = snapshot.ann_rows
    while True:
        keys = ann_search(snapshot.ann_path, query, min(count, covered))
        positions = np.searchsorted(snapshot.ids[:covered], keys)
        positions = positions[positions < covered]
        positions = positions[np.isin(snapshot.ids[positions], keys)]
        positions = positions[_passing(snapshot, positions, min_hidden, blocked)]
        if len(positions) >= k or count >= covered:
            break
        if count * _RETRY_FACTOR > covered // 4:
            return None  # the filters reject most rows: scanning them all is cheaper
        count *= _RETRY_FACTOR
    ordered = np.sort(positions)  # sorted reads of the memory map
    scores = np.asarray(snapshot.vectors[ordered] @ query, dtype=np.float32)
    return _best(
        [(int(snapshot.ids[p]), float(s)) for p, s in zip(ordered, scores, strict=True)], k
    )


def _best(pairs: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    """Highest score first; ties by lower id, so both searches agree on order."""
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))[:k]
