"""The approximate nearest-neighbour graph over cached vectors (usearch HNSW, inner product).

Keys are record ids; vectors are stored as float16 (half the memory of the
float32 cache they come from: the graph only has to find candidates, ``search``
rescores them exactly from the cache). Queries map the file without usearch's
key lookups, once per process. A graph is written to a new file and
then named in the cache manifest, so a reader never sees one half written;
extending a graph loads it, adds the new rows and writes it under a new tag.

usearch is imported only here and only when a graph is needed, so an index
under ``EXACT_LIMIT`` entries works without it.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from forebear.errors import ForebearError
from forebear.fingerprint.vector import VECTOR_DIMS
from forebear.formats.base import Array

__all__ = [
    "CONNECTIVITY",
    "EXPANSION_ADD",
    "EXPANSION_SEARCH",
    "ann_available",
    "ann_search",
    "extend_graph",
]

CONNECTIVITY = 32  # 16 left 2 of 500 near-duplicates unreachable at 100k clustered rows
EXPANSION_ADD = 64
# Graphs are built on one thread: the same rows give the same graph (and the same scans),
# and multi-threaded builds left members unreachable (3,000 clustered rows, 10 builds: 4 of
# 200 queries lost one of their top 10 with 2 threads, none with one).
EXPANSION_SEARCH = 2048  # at least the proposals asked for
_ADD_BLOCK = 65536  # rows converted from the memory-mapped cache at a time


def ann_available() -> bool:
    """Whether usearch can be imported (without it, every search is exact)."""
    return importlib.util.find_spec("usearch") is not None


def _usearch() -> Any:
    try:
        from usearch.index import Index
    except ImportError:
        raise ForebearError(
            "approximate search needs the usearch package",
            hint="pip install usearch, or search exactly with --search exact",
        ) from None
    return Index


def extend_graph(
    folder: Path, old: Path | None, ids: Array, vectors: Array, start: int
) -> tuple[str, int]:
    """Write a graph over rows ``[0, len(ids))``: ``old`` (covering ``[0, start)``) plus the
    rest, or a new one when ``old`` is None. Returns the new file's tag and its row count."""
    index_type = _usearch()
    if old is None:
        graph = index_type(
            ndim=VECTOR_DIMS,
            metric="ip",
            dtype="f16",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        start = 0
    else:
        graph = index_type.restore(str(old), view=False)
        if graph is None or len(graph) != start:
            return extend_graph(folder, None, ids, vectors, 0)  # unreadable: build anew
    for first in range(start, len(ids), _ADD_BLOCK):
        last = min(first + _ADD_BLOCK, len(ids))
        block = np.ascontiguousarray(vectors[first:last], dtype=np.float32)
        graph.add(ids[first:last].astype(np.uint64), block, threads=1)
    tag = secrets.token_hex(6)
    temporary = folder / f".ann-{tag}.usearch.tmp"
    graph.save(str(temporary))
    os.replace(temporary, folder / f"ann-{tag}.usearch")
    return tag, len(ids)


def ann_search(path: Path, query: Array, count: int) -> Array:
    """Up to ``count`` record ids, nearest first by the graph's (float16) inner product."""
    graph = _view(path)
    graph.expansion_search = max(EXPANSION_SEARCH, count)
    matches = graph.search(np.ascontiguousarray(query, dtype=np.float32), count)
    return np.asarray(matches.keys, dtype=np.int64)


def _view(path: Path) -> Any:
    """The graph at ``path``, memory-mapped once per process: a file is never changed under
    its name (every write takes a new tag), so a mapping stays valid while it is open."""
    if path not in _VIEWS:
        # Key lookups build a hash table of every id when the file is mapped (0.34 s of
        # 0.43 at a million rows); searches do not need them.
        graph = _usearch()(ndim=VECTOR_DIMS, metric="ip", dtype="f16", enable_key_lookups=False)
        graph.view(str(path))
        _VIEWS.clear()
        _VIEWS[path] = graph
    return _VIEWS[path]


_VIEWS: dict[Path, Any] = {}
