"""What the loopback hub serves: repositories at one commit, LFS blobs, static files.

``HubContent`` holds the files (``bytes``, a ``Path`` or any ``VirtualFile``: an
object with ``size`` and ``read(offset, length)``, whose bytes are made on demand)
and answers a request path with an ``Answer``: a file to stream, a JSON listing, a
redirect or a hub-style error. Weights (by suffix) and files over the LFS threshold
are LFS files: ``resolve`` redirects them to ``/lfs/{key}``. ETags follow the hub:
an LFS file's sha256, a small file's git blob id (a stable digest for paths and
virtual files, which are never read whole). ``forebear.bench.hub_server`` owns the
HTTP side: ranges, auth, faults, latency and counters.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote

__all__ = ["Answer", "FileData", "HubContent", "Repo", "ServedFile", "VirtualFile", "read_data"]

_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".onnx")


@runtime_checkable
class VirtualFile(Protocol):
    """Bytes made on demand: any object with a ``size`` and ``read(offset, length)``."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


FileData = bytes | Path | VirtualFile


@dataclass
class ServedFile:
    data: FileData
    size: int
    etag: str  # sha256 for LFS files, git blob id for others (virtual/path: a stable digest)
    lfs: bool
    key: str  # where /lfs/ serves it; kept when the file is replaced in place


@dataclass
class Repo:
    files: dict[str, ServedFile]
    sha: str
    refs: tuple[str, ...]
    token: str | None
    card: dict[str, object] | None


def _size(data: FileData) -> int:
    if isinstance(data, bytes):
        return len(data)
    if isinstance(data, Path):
        return data.stat().st_size
    return data.size


def read_data(data: FileData, offset: int, length: int) -> bytes:
    if isinstance(data, bytes):
        return data[offset : offset + length]
    if isinstance(data, Path):
        with open(data, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    return data.read(offset, length)


def _file(path: str, data: FileData, lfs_threshold: int, salt: str) -> ServedFile:
    size = _size(data)
    lfs = path.endswith(_LFS_SUFFIXES) or size > lfs_threshold
    if isinstance(data, bytes):
        etag = (
            hashlib.sha256(data).hexdigest()
            if lfs
            else hashlib.sha1(b"blob %d\0" % size + data, usedforsecurity=False).hexdigest()
        )
    else:
        stamp = data.stat().st_mtime_ns if isinstance(data, Path) else getattr(data, "etag", "")
        etag = hashlib.sha256(f"{salt}:{path}:{size}:{stamp}".encode()).hexdigest()
    return ServedFile(data, size, etag, lfs, etag)


def _card(files: Mapping[str, ServedFile]) -> dict[str, object] | None:
    readme = files.get("README.md")
    if readme is None or readme.size > 1 << 20:
        return None
    text = read_data(readme.data, 0, readme.size).decode("utf-8", "replace")
    if not text.startswith("---"):
        return None
    from huggingface_hub import RepoCard

    data: dict[str, object] = RepoCard(text, ignore_metadata_errors=True).data.to_dict()  # type: ignore[no-untyped-call]
    return data


@dataclass(frozen=True)
class Answer:
    """What a path resolves to: a file to stream, a JSON body, a redirect or an error."""

    status: int
    file: ServedFile | None = None
    repo: Repo | None = None  # checked for its token; names the commit in X-Repo-Commit
    body: dict[str, object] | None = None
    code: str | None = None  # X-Error-Code of a 404
    location: str | None = None


class HubContent:
    """Repositories, LFS blobs and static files, answered by path; safe across threads."""

    def __init__(self, lfs_threshold: int, static: Mapping[str, FileData]) -> None:
        self.lfs_threshold = lfs_threshold
        self._lock = threading.Lock()
        self._repos: dict[str, Repo] = {}
        self._lfs: dict[str, ServedFile] = {}
        self._static = {p: _file(p, d, lfs_threshold, "static") for p, d in static.items()}

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileData],
        *,
        token: str | None = None,
        refs: Sequence[str] = ("main",),
    ) -> str:
        """Serve ``repo_id`` at one commit (``refs`` name it too); returns its sha."""
        made = {p: _file(p, d, self.lfs_threshold, repo_id) for p, d in files.items()}
        listing = json.dumps([repo_id, sorted((p, f.etag) for p, f in made.items())])
        sha = hashlib.sha1(listing.encode(), usedforsecurity=False).hexdigest()
        with self._lock:
            self._repos[repo_id] = Repo(made, sha, tuple(refs), token, _card(made))
            self._lfs.update({f.key: f for f in made.values() if f.lfs})
        return sha

    def replace(self, path: str, data: FileData, repo_id: str | None = None) -> None:
        """Swap a file's bytes in place (same commit, same URLs, a new ETag)."""
        with self._lock:
            files = self._static if repo_id is None else self._repos[repo_id].files
            old = files[path]
            new = _file(path, data, self.lfs_threshold, f"{repo_id}:{time.time_ns()}")
            new.lfs, new.key = old.lfs, old.key
            files[path] = new
            if new.lfs:
                self._lfs[new.key] = new

    def route(self, path: str) -> tuple[str, Answer]:
        """The kind of a request path (api, resolve, lfs, static) and its answer."""
        parts = [unquote(p) for p in path.split("/")[1:]]
        if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
            revision = parts[5] if len(parts) == 6 and parts[4] == "revision" else None
            return "api", self._listing(f"{parts[2]}/{parts[3]}", revision)
        if len(parts) >= 5 and parts[2] == "resolve":
            return "resolve", self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        with self._lock:
            if len(parts) == 2 and parts[0] == "lfs" and parts[1] in self._lfs:
                return "lfs", Answer(200, file=self._lfs[parts[1]])
            found = self._static.get("/".join(parts))
        return "static", Answer(200, file=found) if found else Answer(404, code="EntryNotFound")

    def _repo(self, repo_id: str, revision: str | None) -> Repo | Answer:
        with self._lock:
            repo = self._repos.get(repo_id)
        if repo is None:
            return Answer(404, code="RepoNotFound")
        if revision is not None and revision not in (repo.sha, *repo.refs):
            return Answer(404, repo=repo, code="RevisionNotFound")
        return repo

    def _listing(self, repo_id: str, revision: str | None) -> Answer:
        repo = self._repo(repo_id, revision)
        if isinstance(repo, Answer):
            return repo
        siblings = [
            {"rfilename": path, "size": f.size, "blobId": f.etag}
            | ({"lfs": {"sha256": f.etag, "size": f.size, "pointerSize": 134}} if f.lfs else {})
            for path, f in sorted(repo.files.items())
        ]
        body: dict[str, object] = {
            "_id": repo.sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": repo.token is not None,
            "gated": False,
            "disabled": False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "siblings": siblings,
        }
        if repo.card is not None:
            body["cardData"] = repo.card
        return Answer(200, repo=repo, body=body)

    def _resolve(self, repo_id: str, revision: str, path: str) -> Answer:
        repo = self._repo(repo_id, revision)
        if isinstance(repo, Answer):
            return repo
        found = repo.files.get(path)
        if found is None:
            return Answer(404, repo=repo, code="EntryNotFound")
        if found.lfs:
            return Answer(302, file=found, repo=repo, location=f"/lfs/{found.key}")
        return Answer(200, file=found, repo=repo)
