"""The response cache: every answer a model gave, kept so that a re-run costs nothing.

One SQLite file (WAL journal, so two processes may share it: one writes while others
read) maps a key to a JSON answer. The key is the sha256 of everything that decides
the answer: the client's identity (an endpoint and model name, or a local folder and
the sha256 of its files), the kind of query, the prompt and every parameter (top-k,
temperature, seed, token limit, system prompt). Credentials are never part of it.

A file that is not a readable response cache stops the run with a
``ResponseCacheError`` naming it; nothing is ever wiped to make room. This module
owns the file; which answers may be cached (a sampled one only under a seed) is the
clients' decision.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from forebear.errors import ForebearError

__all__ = ["ResponseCache", "ResponseCacheError", "cache_key"]

_FORMAT = "forebear-response-cache"
_VERSION = "1"
_HINT = "delete the file (its answers are re-queried) or give another cache path"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class ResponseCacheError(ForebearError, ValueError):
    """A response cache file that cannot be read or written as one."""

    exit_code = 5


def cache_key(
    identity: Mapping[str, Any], kind: str, prompt: str, params: Mapping[str, Any]
) -> str:
    """The sha256 (hex) naming one answer: who answered, what was asked, and how."""
    payload = {"identity": identity, "kind": kind, "prompt": prompt, "params": params}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers by key in one SQLite file, shared safely between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, check_same_thread=False, isolation_level=None
            )
        except (OSError, sqlite3.Error) as error:
            raise self._error(f"cannot open the response cache ({error})") from None
        try:
            self._prepare()
        except sqlite3.Error as error:
            self._db.close()
            raise self._error(f"is not a readable response cache ({error})") from None

    def _error(self, message: str) -> ResponseCacheError:
        return ResponseCacheError(message, path=self.path, hint=_HINT)

    def _prepare(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)
            rows = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
            if not rows:
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("format", _FORMAT), ("version", _VERSION)]
                )
            elif rows.get("format") != _FORMAT:
                raise sqlite3.DatabaseError("an SQLite file of another kind")
            elif rows.get("version") != _VERSION:
                raise sqlite3.DatabaseError(f"cache format version {rows.get('version')}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The cached answers among ``keys`` (absent keys are left out)."""
        found: dict[str, Any] = {}
        with self._lock:
            try:
                for start in range(0, len(keys), 500):
                    chunk = list(keys[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT key, value FROM answers WHERE key IN ({marks})"
                    found.update(self._db.execute(query, chunk).fetchall())
            except sqlite3.Error as error:
                raise self._error(f"cannot be read ({error})") from None
        return {key: self._decode(key, value) for key, value in found.items()}

    def _decode(self, key: str, value: str) -> Any:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise self._error(f"holds an unreadable answer (key {key[:12]}…)") from None

    def get(self, key: str) -> Any | None:
        """The cached answer under ``key``, or None."""
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Store answers (one transaction); a key already there keeps its first answer."""
        rows = [(key, json.dumps(value, ensure_ascii=False)) for key, value in items]
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?)", rows)
            except sqlite3.Error as error:
                raise self._error(f"cannot be written ({error})") from None

    def put(self, key: str, value: Any) -> None:
        self.put_many([(key, value)])

    def __len__(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
