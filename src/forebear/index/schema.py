"""The index file: one SQLite database, its tables, and the numbered migrations between them.

``MIGRATIONS[n]`` takes a database from schema ``n`` to ``n + 1``; the number a
file is at lives in ``PRAGMA user_version``. Opening applies the missing ones in
order, all in one ``BEGIN IMMEDIATE`` transaction (so two processes opening an
old file at once migrate it once, and a killed migration leaves the old schema).
A file at a higher number was written by a newer forebear and is refused, as is
a file that is not SQLite or is someone else's SQLite.

Connections run in WAL mode (readers never block the writer, a killed writer
leaves nothing half-written) with a busy timeout, and manage their own
transactions (``isolation_level=None``). This module owns the file's shape;
``store`` reads and writes records in it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from forebear.errors import ForebearError, InputNotFoundError, UnsupportedFormatError

__all__ = ["BUSY_TIMEOUT_S", "MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "connect", "migrate"]

SCHEMA = "forebear.index"
BUSY_TIMEOUT_S = 60.0

_V1 = (
    """CREATE TABLE records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the vector cache keys on it
        ref TEXT NOT NULL,
        revision TEXT NOT NULL,                -- '' when unknown (a local folder)
        fingerprint_version INTEGER NOT NULL,
        family TEXT,
        hidden INTEGER,
        structure TEXT NOT NULL,               -- JSON
        base_models TEXT NOT NULL,             -- JSON list, from the model card
        license TEXT,
        from_scratch INTEGER NOT NULL,
        card_evidence TEXT,
        vector BLOB NOT NULL,                  -- float32 little-endian
        bytes_read INTEGER NOT NULL,
        created TEXT NOT NULL,
        forebear_version TEXT NOT NULL,
        blob_sha256 TEXT,
        blob BLOB,                             -- last: reads that skip it skip its pages
        UNIQUE (ref, revision, fingerprint_version)
    )""",
    # Ids of removed records with the generation that removed them: the vector
    # cache drops exactly those instead of rebuilding.
    "CREATE TABLE removed (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL)",
    # ``uid`` tells the vector cache of this file from one left by another file at this path.
    f"INSERT INTO meta VALUES ('schema', '{SCHEMA}'), ('generation', 0), "
    "('uid', lower(hex(randomblob(8))))",
)
_V2 = (
    # ``ls --family`` and scans that restrict a family would otherwise read every row.
    "CREATE INDEX records_family ON records (family)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)

_WAY_OUT = "pass another --index (or FOREBEAR_INDEX), or move this file away"


def connect(path: str | os.PathLike[str], *, create: bool) -> sqlite3.Connection:
    """An open, migrated index database (created when ``create`` and missing)."""
    target = Path(path)
    if not target.exists():
        if not create:
            raise InputNotFoundError(
                "no index here", path=target, hint="add a model with `forebear index add MODEL`"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        connection.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across process kills
        if str(mode).lower() != "wal":
            raise ForebearError(
                f"SQLite refused WAL mode (journal mode {mode!r})",
                path=target,
                hint="put the index on a local disk (WAL needs shared memory, not NFS)",
            )
        migrate(connection, target)
    except sqlite3.OperationalError as error:
        connection.close()
        raise ForebearError(
            f"cannot open the index ({error})",
            path=target,
            hint="check the file's permissions and free space, or pass another --index",
        ) from None
    except sqlite3.DatabaseError as error:
        connection.close()
        raise UnsupportedFormatError(
            f"not a forebear index (SQLite says: {error})", path=target, hint=_WAY_OUT
        ) from None
    except BaseException:
        connection.close()
        raise
    return connection


def migrate(connection: sqlite3.Connection, path: Path, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to ``target``; returns the version before."""
    # One read transaction: the version and the tables from the same snapshot, or a writer
    # committing its migration in between makes a fresh index look foreign.
    connection.execute("BEGIN")
    try:
        before = _version(connection)
        _refuse_foreign(connection, path, before)
    finally:
        connection.execute("COMMIT")
    if before >= target:
        return before
    connection.execute("BEGIN IMMEDIATE")
    try:
        current = _version(connection)  # another process may have migrated meanwhile
        _refuse_foreign(connection, path, current)
        for number in range(current, target):
            for statement in MIGRATIONS[number]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number + 1}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return before


def _version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def _refuse_foreign(connection: sqlite3.Connection, path: Path, version: int) -> None:
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    if version == 0:
        if tables:
            raise UnsupportedFormatError(
                "is a SQLite database but not a forebear index", path=path, hint=_WAY_OUT
            )
        return
    if "meta" not in tables or _schema_name(connection) != SCHEMA:
        raise UnsupportedFormatError(
            "is a SQLite database but not a forebear index", path=path, hint=_WAY_OUT
        )
    if version > SCHEMA_VERSION:
        raise UnsupportedFormatError(
            f"index schema {version} was written by a newer forebear "
            f"(this one reads up to {SCHEMA_VERSION})",
            path=path,
            hint="upgrade forebear (pip install -U forebear), or pass another --index",
        )


def _schema_name(connection: sqlite3.Connection) -> str | None:
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return None if row is None else str(row[0])
