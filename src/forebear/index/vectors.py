"""The vector cache: every current record's retrieval vector in flat files beside the index.

A scan at a million entries cannot pull a million vectors out of SQLite per
query, so ``<index>.vectors/`` holds them as memory-mappable files:

- ``vectors-<epoch>.f32``: (rows, VECTOR_DIMS) float32, in record-id order;
- ``rows-<epoch>.i64``: (rows, 2) int64, each row's record id and hidden size;
- ``removed.i64``: ids of records removed since the files were written (tombstones);
- ``ann-<tag>.usearch``: the ANN graph over the first ``ann_rows`` rows (``search``);
- ``manifest.json``: which files are current and up to which index generation.

The database is the source of truth; the cache only follows it. Every write to
the index bumps ``meta.generation`` in the same transaction, and logs removed
ids in ``removed``; a refresh reads, in one read transaction, what changed
since the manifest's generation: new rows (ids only grow) are appended, removed
ids become tombstones, and past ``REBUILD_FRACTION`` tombstones (or any doubt:
another file, another fingerprint version, short files) the files are rebuilt
under a new epoch. Rows past the manifest's count and files of other epochs
are never read, so a process killed mid-refresh leaves a usable cache; the
manifest is replaced atomically, and a file lock keeps refreshes one at a time
(an ANN graph, minutes to build at a million rows, is built outside the lock
and named in the manifest only if the cache is still at the epoch it covers).
Where the folder cannot be written, vectors are read into memory instead.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from forebear.fingerprint.sketch import FINGERPRINT_VERSION
from forebear.fingerprint.vector import VECTOR_DIMS
from forebear.formats.base import Array
from forebear.index.ann import extend_graph

__all__ = ["REBUILD_FRACTION", "TAIL_LIMIT", "CacheState", "VectorCache", "VectorSnapshot"]

CACHE_FORMAT = 1
REBUILD_FRACTION = 0.1
TAIL_LIMIT = 20_000  # rows past the ANN graph searched exactly before the graph is extended
_FETCH = 8192
_LOCK_TIMEOUT_S = 600.0  # a refresh of a million rows takes seconds; a minute-long one is stuck


@dataclass(frozen=True)
class CacheState:
    """What ``manifest.json`` says; the files it names hold exactly ``rows`` rows."""

    uid: str
    generation: int
    rows: int
    max_id: int
    epoch: str
    ann_rows: int = 0
    ann_tag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "fingerprint_version": FINGERPRINT_VERSION,
            "dims": VECTOR_DIMS,
            **self.__dict__,
        }


@dataclass(frozen=True)
class VectorSnapshot:
    """The vectors a query searches: sorted ids, their hidden sizes (-1: unknown), vectors."""

    ids: Array  # (rows,) int64, ascending
    hidden: Array  # (rows,) int64
    vectors: Array  # (rows, VECTOR_DIMS) float32, memory-mapped when cached
    removed: Array  # (r,) int64, ascending: ids no longer in the index
    ann_path: Path | None  # the ANN graph over the first ``ann_rows`` rows
    ann_rows: int


class VectorCache:
    """The cache folder of one index file (see the module docstring)."""

    def __init__(self, db_path: Path) -> None:
        self.folder = Path(f"{db_path}.vectors")

    def snapshot(
        self,
        connection: sqlite3.Connection,
        *,
        ann_over: int | None = None,
        tail: int = TAIL_LIMIT,
    ) -> VectorSnapshot:
        """Refresh the files if the index moved on, then map them. With ``ann_over``, also
        bring the ANN graph up to date once the cache holds more rows than that, leaving
        at most ``tail`` rows past it (searched exactly)."""
        try:
            self.folder.mkdir(exist_ok=True)
            with self._lock():
                state = self._refresh(connection, self._manifest())
                if ann_over is None or state.rows <= ann_over or self._graph_ok(state, tail):
                    return self._open(state)
                mapped = self._open(state)
            # Minutes at a million rows: built unlocked, so queries meanwhile are not held.
            self._extend(state, mapped)
            with self._lock():
                return self._open(self._manifest() or state)
        except OSError:
            # A read-only place, or a lock held for minutes: correct, only not fast.
            return _memory_snapshot(connection)

    def _lock(self) -> FileLock:
        return FileLock(self.folder / "lock", timeout=_LOCK_TIMEOUT_S)

    def _graph_ok(self, state: CacheState, tail: int) -> bool:
        graph = None if state.ann_tag is None else self._ann_path(state.ann_tag)
        return graph is not None and graph.exists() and state.rows - state.ann_rows <= tail

    def _extend(self, state: CacheState, mapped: VectorSnapshot) -> None:
        """Write a graph over ``mapped``'s rows and name it in the manifest, unless the
        cache moved to another epoch (or a better graph) meanwhile."""
        old = None if state.ann_tag is None else self._ann_path(state.ann_tag)
        base = old if old is not None and old.exists() else None
        start = state.ann_rows if base is not None else 0
        tag, rows = extend_graph(self.folder, base, mapped.ids, mapped.vectors, start)
        with self._lock():
            now = self._manifest()
            if now is None or now.epoch != state.epoch or now.ann_rows >= rows:
                self._ann_path(tag).unlink(missing_ok=True)
                return
            self._write_manifest(replace(now, ann_rows=rows, ann_tag=tag))
        if now.ann_tag is not None and now.ann_tag != tag:
            self._ann_path(now.ann_tag).unlink(missing_ok=True)  # its mappers keep it

    def _ann_path(self, tag: str) -> Path:
        return self.folder / f"ann-{tag}.usearch"

    def _manifest(self) -> CacheState | None:
        try:
            raw = json.loads((self.folder / "manifest.json").read_text(encoding="utf-8"))
            fixed = {
                "format": CACHE_FORMAT,
                "fingerprint_version": FINGERPRINT_VERSION,
                "dims": VECTOR_DIMS,
            }
            if any(raw.pop(key, None) != value for key, value in fixed.items()):
                return None
            state = CacheState(**raw)
            if not _well_typed(state):
                return None
            vectors = self._file("vectors", state.epoch, "f32").stat().st_size
            keys = self._file("rows", state.epoch, "i64").stat().st_size
        except (OSError, ValueError, TypeError, AttributeError):
            return None  # missing or damaged: the cache is rebuilt, never trusted
        if vectors < state.rows * 4 * VECTOR_DIMS or keys < state.rows * 16:
            return None
        return state

    def _write_manifest(self, state: CacheState) -> None:
        temporary = self.folder / "manifest.json.tmp"
        temporary.write_text(json.dumps(state.to_json()), encoding="utf-8")
        os.replace(temporary, self.folder / "manifest.json")

    def _file(self, kind: str, epoch: str, ext: str) -> Path:
        return self.folder / f"{kind}-{epoch}.{ext}"

    def _refresh(self, connection: sqlite3.Connection, state: CacheState | None) -> CacheState:
        connection.execute("BEGIN")  # one snapshot of the index for everything read below
        try:
            uid, generation = _meta(connection)
            if state is not None and state.uid == uid and state.generation == generation:
                return state
            # A lower generation is an older copy of the file put back: nothing can be kept.
            if state is not None and state.uid == uid and state.generation < generation:
                appended = self._append(connection, state, generation)
                if appended is not None:
                    return appended
            return self._rebuild(connection, uid, generation)
        finally:
            connection.execute("COMMIT")

    def _append(
        self, connection: sqlite3.Connection, state: CacheState, generation: int
    ) -> CacheState | None:
        gone = connection.execute(
            "SELECT id FROM removed WHERE generation > ? AND id <= ?",
            (state.generation, state.max_id),
        ).fetchall()
        removed = np.union1d(self._removed(), np.array([g[0] for g in gone], dtype=np.int64))
        if len(removed) > REBUILD_FRACTION * max(state.rows, 1000):
            return None
        _write_array(self.folder / "removed.i64", removed)  # tombstones are true at any time
        rows, max_id = state.rows, state.max_id
        with (
            open(self._file("vectors", state.epoch, "f32"), "r+b") as vectors,
            open(self._file("rows", state.epoch, "i64"), "r+b") as keys,
        ):
            vectors.truncate(rows * 4 * VECTOR_DIMS)  # drop what a killed refresh left past rows
            keys.truncate(rows * 16)
            vectors.seek(0, os.SEEK_END)
            keys.seek(0, os.SEEK_END)
            for ids, hidden, block in _fetch(connection, state.max_id):
                vectors.write(block.tobytes())
                keys.write(np.stack([ids, hidden], axis=1).tobytes())
                rows, max_id = rows + len(ids), int(ids[-1])
        fresh = replace(state, generation=generation, rows=rows, max_id=max_id)
        self._write_manifest(fresh)
        return fresh

    def _rebuild(self, connection: sqlite3.Connection, uid: str, generation: int) -> CacheState:
        epoch = secrets.token_hex(6)
        rows, max_id = 0, 0
        with (
            open(self._file("vectors", epoch, "f32"), "wb") as vectors,
            open(self._file("rows", epoch, "i64"), "wb") as keys,
        ):
            for ids, hidden, block in _fetch(connection, 0):
                vectors.write(block.tobytes())
                keys.write(np.stack([ids, hidden], axis=1).tobytes())
                rows, max_id = rows + len(ids), int(ids[-1])
        _write_array(self.folder / "removed.i64", np.zeros(0, dtype=np.int64))
        fresh = CacheState(uid, generation, rows, max_id, epoch)
        self._write_manifest(fresh)
        for kind in ("vectors-*.f32", "rows-*.i64", "ann-*.usearch"):
            for stale in self.folder.glob(kind):
                if not stale.name.startswith((f"vectors-{epoch}.", f"rows-{epoch}.")):
                    stale.unlink(missing_ok=True)  # a reader that mapped it keeps its mapping
        return fresh

    def _removed(self) -> Array:
        path = self.folder / "removed.i64"
        return np.fromfile(path, dtype=np.int64) if path.exists() else np.zeros(0, np.int64)

    def _open(self, state: CacheState) -> VectorSnapshot:
        if state.rows == 0:
            return _empty()
        vectors = np.memmap(
            self._file("vectors", state.epoch, "f32"),
            dtype=np.float32,
            mode="r",
            shape=(state.rows, VECTOR_DIMS),
        )
        keys = np.fromfile(
            self._file("rows", state.epoch, "i64"), dtype=np.int64, count=state.rows * 2
        ).reshape(state.rows, 2)
        ann = None if state.ann_tag is None else self._ann_path(state.ann_tag)
        usable = ann is not None and ann.exists()
        return VectorSnapshot(
            keys[:, 0].copy(),
            keys[:, 1].copy(),
            vectors,
            self._removed(),
            ann if usable else None,
            state.ann_rows if usable else 0,
        )


def _well_typed(state: CacheState) -> bool:
    counts = (state.generation, state.rows, state.max_id, state.ann_rows)
    return (
        all(type(n) is int and n >= 0 for n in counts)
        and isinstance(state.uid, str)
        and isinstance(state.epoch, str)
        and state.epoch.isalnum()
        and state.ann_rows <= state.rows
        and (state.ann_tag is None or (isinstance(state.ann_tag, str) and state.ann_tag.isalnum()))
    )


def _meta(connection: sqlite3.Connection) -> tuple[str, int]:
    values = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    return str(values["uid"]), int(values["generation"])


def _fetch(connection: sqlite3.Connection, after: int) -> Any:
    """(ids, hidden, vectors) blocks of the current version's rows with id > ``after``."""
    cursor = connection.execute(
        "SELECT id, coalesce(hidden, -1), vector FROM records "
        "WHERE id > ? AND fingerprint_version = ? ORDER BY id",
        (after, FINGERPRINT_VERSION),
    )
    while batch := cursor.fetchmany(_FETCH):
        ids = np.fromiter((row[0] for row in batch), dtype=np.int64, count=len(batch))
        hidden = np.fromiter((row[1] for row in batch), dtype=np.int64, count=len(batch))
        block = np.frombuffer(b"".join(row[2] for row in batch), dtype="<f4")
        yield ids, hidden, block.reshape(len(batch), VECTOR_DIMS)


def _write_array(path: Path, values: Array) -> None:
    temporary = path.with_name(path.name + ".tmp")
    np.ascontiguousarray(values, dtype=np.int64).tofile(temporary)
    os.replace(temporary, path)


def _empty() -> VectorSnapshot:
    none = np.zeros(0, dtype=np.int64)
    return VectorSnapshot(none, none, np.zeros((0, VECTOR_DIMS), np.float32), none, None, 0)


def _memory_snapshot(connection: sqlite3.Connection) -> VectorSnapshot:
    connection.execute("BEGIN")
    try:
        blocks = list(_fetch(connection, 0))
    finally:
        connection.execute("COMMIT")
    if not blocks:
        return _empty()
    ids, hidden, vectors = (np.concatenate([b[i] for b in blocks]) for i in range(3))
    return VectorSnapshot(ids, hidden, vectors, np.zeros(0, np.int64), None, 0)
