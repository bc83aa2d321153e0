"""The reference index: known models' fingerprints in one SQLite file, and what reads them.

``Index`` owns reading and writing records (``schema`` owns the file's shape,
``vectors`` and ``search`` the retrieval). Every write is one ``BEGIN
IMMEDIATE`` transaction that also bumps ``meta.generation`` (and logs removed
ids), so a process killed mid-write leaves the index as it was before that
write, and the vector cache can tell exactly what changed. Readers see a
consistent snapshot while a writer works (WAL); writers wait for each other
up to ``BUSY_TIMEOUT_S``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from types import TracebackType

import numpy as np

from forebear.errors import CorruptCheckpointError, ForebearError, InputNotFoundError
from forebear.fingerprint.io import fingerprint_from_bytes
from forebear.fingerprint.sketch import FINGERPRINT_VERSION, Fingerprint
from forebear.fingerprint.vector import VECTOR_DIMS
from forebear.index.ann import ann_available
from forebear.index.card import CardClaims
from forebear.index.record import Candidate, IndexRecord, check_record, utc_now
from forebear.index.schema import BUSY_TIMEOUT_S, connect
from forebear.index.search import Search, graph_threshold, nearest
from forebear.index.vectors import TAIL_LIMIT, VectorCache
from forebear.paths import default_index_path

__all__ = ["ADD_CHUNK", "Index"]

ADD_CHUNK = 5000  # records per transaction in add_many: short locks, few commits
_COLUMNS = (
    "ref",
    "revision",
    "fingerprint_version",
    "family",
    "hidden",
    "structure",
    "base_models",
    "license",
    "from_scratch",
    "card_evidence",
    "vector",
    "bytes_read",
    "created",
    "forebear_version",
    "blob_sha256",
    "blob",
)
_READ = ", ".join(_COLUMNS[:-1])  # everything but the blob
_INSERT = (
    f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (ref, revision, fingerprint_version) DO NOTHING"
)
_BUMP = "UPDATE meta SET value = value + 1 WHERE key = 'generation'"
_KEY = "ref = ? AND revision = ? AND fingerprint_version = ?"


class Index:
    """An open index file. Use ``Index.open``; close it (or use ``with``)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._connection = connection
        self._cache = VectorCache(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> Index:
        """The index at ``path`` (default: ``default_index_path()``), migrated to this
        forebear's schema; created when missing unless ``create`` is False."""
        target = Path(path) if path is not None else default_index_path()
        return cls(target, connect(target, create=create))

    def add(self, record: IndexRecord, *, replace: bool = False) -> bool:
        """Store ``record``; False when its key is present (and ``replace`` is not set)."""
        check_record(record, str(self.path))
        with self._write() as connection:
            if replace:
                self._delete(connection, _KEY, record.key)
            added = connection.execute(_INSERT, _row(record)).rowcount == 1
            if added:
                connection.execute(_BUMP)
        return added

    def add_many(self, records: Iterable[IndexRecord], *, chunk: int = ADD_CHUNK) -> int:
        """Store records whose keys are absent, ``chunk`` to a transaction; returns how many."""
        added, pending = 0, iter(records)
        while batch := list(islice(pending, chunk)):
            for record in batch:
                check_record(record, str(self.path))
            with self._write() as connection:
                before = connection.total_changes
                connection.executemany(_INSERT, [_row(record) for record in batch])
                fresh = connection.total_changes - before
                if fresh:
                    connection.execute(_BUMP)
            added += fresh
        return added

    def get(
        self,
        ref: str,
        revision: str | None = None,
        *,
        fingerprint_version: int | None = FINGERPRINT_VERSION,
    ) -> IndexRecord | None:
        """The record of ``ref`` at ``revision`` (any revision: the newest), without its blob;
        ``fingerprint_version=None`` accepts records of any fingerprint version."""
        sql, params = f"SELECT {_READ} FROM records WHERE ref = ?", list[object]([ref])
        if revision is not None:
            sql, params = sql + " AND revision = ?", [*params, revision]
        if fingerprint_version is not None:
            sql, params = sql + " AND fingerprint_version = ?", [*params, fingerprint_version]
        row = self._connection.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
        return None if row is None else _record(row, self.path)

    def remove(self, ref: str, revision: str | None = None) -> int:
        """Remove ``ref``'s records (at ``revision`` only, when given); returns how many."""
        where, params = (
            ("ref = ?", (ref,))
            if revision is None
            else ("ref = ? AND revision = ?", (ref, revision))
        )
        with self._write() as connection:
            return self._delete(connection, where, params)

    def records(self, *, family: str | None = None) -> Iterator[IndexRecord]:
        """Every record (of ``family``), oldest first, without blobs."""
        sql, params = f"SELECT {_READ} FROM records", tuple[str, ...]()
        if family is not None:
            sql, params = sql + " WHERE family = ?", (family,)
        cursor = self._connection.execute(sql + " ORDER BY id", params)
        while batch := cursor.fetchmany(1000):
            yield from (_record(row, self.path) for row in batch)

    def records_with_blobs(self) -> Iterator[IndexRecord]:
        """Every record with its blob (for export), oldest first."""
        cursor = self._connection.execute(
            f"SELECT {_READ}, CAST(blob AS BLOB) FROM records ORDER BY id"
        )
        while batch := cursor.fetchmany(64):
            yield from (_record(row, self.path) for row in batch)

    def load_fingerprint(self, record: IndexRecord) -> Fingerprint:
        """The record's fingerprint, its SHA-256 checked against the one stored with it."""
        blob, digest = record.blob, record.blob_sha256
        if blob is None:
            row = self._connection.execute(
                f"SELECT CAST(blob AS BLOB), blob_sha256 FROM records WHERE {_KEY}", record.key
            ).fetchone()
            if row is None:
                raise InputNotFoundError(
                    f"record {record.label!r} is no longer in the index",
                    path=self.path,
                    hint="run the scan again",
                )
            blob, digest = row
        hint = f"re-add it with `forebear index add {record.ref} --force`"
        if blob is None:
            raise ForebearError(
                f"record {record.label!r} holds no fingerprint (vector only)",
                path=self.path,
                hint=hint,
            )
        if hashlib.sha256(blob).hexdigest() != digest:
            raise CorruptCheckpointError(
                f"record {record.label!r}: its fingerprint blob fails its SHA-256 (damaged)",
                path=self.path,
                hint=hint,
            )
        try:
            return fingerprint_from_bytes(blob, f"record {record.label!r}")
        except CorruptCheckpointError as error:
            raise CorruptCheckpointError(error.message, path=self.path, hint=hint) from None

    def candidates(
        self,
        vector: np.ndarray,
        *,
        k: int = 20,
        min_hidden: int | None = None,
        exclude: Collection[str] = (),
        search: Search = Search.auto,
    ) -> list[Candidate]:
        """The ``k`` records nearest ``vector`` (a retrieval vector) that pass the structural
        filter, best first; ``exclude`` names refs to leave out."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape != (VECTOR_DIMS,) or not np.all(np.isfinite(query)):
            raise ValueError(f"a query vector has {VECTOR_DIMS} finite values, got {query.shape}")
        method = Search(search)
        # Only a forced ANN search may build the graph; auto uses it when warm() made it.
        snapshot = self._cache.snapshot(
            self._connection, ann_over=0 if method is Search.ann else None
        )
        hits = nearest(
            snapshot, query, k, min_hidden=min_hidden, excluded=self._ids_of(exclude), method=method
        )
        found = self._by_id([rid for rid, _ in hits])
        return [Candidate(found[rid], score) for rid, score in hits if rid in found]

    def warm(self, search: Search = Search.auto, *, tail: int = TAIL_LIMIT) -> None:
        """Bring the vector cache and, past its threshold, the ANN graph up to date now, so
        the next scan does not pay for it; up to ``tail`` newest rows may stay outside the
        graph (they are searched exactly, and extending a large graph rewrites it)."""
        method = Search(search)
        if method is Search.auto and not ann_available():
            method = Search.exact  # usearch is missing: exact search is still correct
        self._cache.snapshot(self._connection, ann_over=graph_threshold(method), tail=tail)

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every record to an export file (see ``transfer``); returns how many."""
        from forebear.index.transfer import export_index

        return export_index(self, path)

    def import_(self, path: str | os.PathLike[str]) -> int:
        """Add the records of an export file whose keys are absent; returns how many."""
        from forebear.index.transfer import import_index

        return import_index(self, path).added

    def generation(self) -> int:
        """A number that changes with every write to the index."""
        row = self._connection.execute("SELECT value FROM meta WHERE key = 'generation'")
        return int(row.fetchone()[0])

    def __len__(self) -> int:
        return int(self._connection.execute("SELECT count(*) FROM records").fetchone()[0])

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise _busy(self.path, error) from None
        try:
            yield connection
            connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            connection.execute("ROLLBACK")
            raise _busy(self.path, error) from None
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _delete(
        self, connection: sqlite3.Connection, where: str, params: tuple[object, ...]
    ) -> int:
        connection.execute(_BUMP)
        connection.execute(
            "INSERT OR REPLACE INTO removed (id, generation) SELECT id, "
            f"(SELECT value FROM meta WHERE key = 'generation') FROM records WHERE {where}",
            params,
        )
        return connection.execute(f"DELETE FROM records WHERE {where}", params).rowcount

    def _ids_of(self, refs: Collection[str]) -> np.ndarray:
        found: list[int] = []
        listed = list(refs)
        for first in range(0, len(listed), 500):
            part = listed[first : first + 500]
            marks = ", ".join("?" * len(part))
            rows = self._connection.execute(f"SELECT id FROM records WHERE ref IN ({marks})", part)
            found.extend(row[0] for row in rows)
        return np.array(sorted(found), dtype=np.int64)

    def _by_id(self, ids: list[int]) -> dict[int, IndexRecord]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = self._connection.execute(
            f"SELECT id, {_READ} FROM records WHERE id IN ({marks})", ids
        ).fetchall()
        return {row[0]: _record(row[1:], self.path) for row in rows}


def _busy(path: Path, error: sqlite3.OperationalError) -> ForebearError:
    if "locked" in str(error) or "busy" in str(error):
        return ForebearError(
            f"the index stayed locked by another writer for {BUSY_TIMEOUT_S:.0f} s",
            path=path,
            hint="wait for the other forebear process to finish, or pass another --index",
        )
    return ForebearError(
        f"cannot write the index ({error})",
        path=path,
        hint="check free space and the file's permissions",
    )


def _row(record: IndexRecord) -> tuple[object, ...]:
    card = record.card
    return (
        record.ref,
        record.revision or "",
        record.fingerprint_version,
        record.family,
        record.hidden,
        json.dumps(dict(record.structure), sort_keys=True),
        json.dumps(list(card.base_models)),
        card.license,
        int(card.from_scratch),
        card.evidence,
        np.ascontiguousarray(record.vector, dtype="<f4").tobytes(),
        int(record.bytes_read),
        record.created or utc_now(),
        record.forebear_version,
        record.blob_sha256,
        record.blob,
    )


def _record(row: tuple[object, ...], path: Path) -> IndexRecord:
    """A record from a row of ``_COLUMNS`` (the blob last, and only when selected)."""
    field = dict(zip(_COLUMNS, row, strict=False))
    try:
        bases = json.loads(str(field["base_models"]))
        card = CardClaims(
            tuple(bases), _text(field["license"]), bool(field["from_scratch"]),
            _text(field["card_evidence"]),
        )  # fmt: skip
        shape = json.loads(str(field["structure"]))
        vector = np.frombuffer(field["vector"], dtype="<f4").astype(np.float32)  # type: ignore[call-overload]
        if not isinstance(shape, dict) or vector.shape != (VECTOR_DIMS,):
            raise ValueError("malformed")
    except (ValueError, TypeError):
        raise CorruptCheckpointError(
            f"record {field['ref']!r} is malformed (its structure, card or vector does not parse)",
            path=path,
            hint=f"remove it with `forebear index rm {field['ref']}` and add it again",
        ) from None
    blob = field.get("blob")
    return IndexRecord(
        ref=str(field["ref"]),
        revision=_text(field["revision"]) or None,
        fingerprint_version=int(str(field["fingerprint_version"])),
        family=_text(field["family"]),
        structure=shape,
        card=card,
        vector=vector,
        blob=blob if isinstance(blob, bytes) else None,
        blob_sha256=_text(field["blob_sha256"]),
        bytes_read=int(str(field["bytes_read"])),
        created=str(field["created"]),
        forebear_version=str(field["forebear_version"]),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)
