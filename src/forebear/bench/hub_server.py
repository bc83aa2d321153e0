"""A hub-like HTTP server on loopback, for tests and benchmarks of remote reading.

``HubServer`` serves, from a background thread on ``127.0.0.1`` (port chosen by
the system), what huggingface_hub asks of a hub ``endpoint``:

* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: ``id``,
  ``sha``, ``siblings`` (``rfilename``, ``size``, ``blobId``, ``lfs``) and ``cardData``
  when the README has front matter;
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: small files directly with
  ``ETag`` (the git blob id), ``X-Repo-Commit`` and Range support; weights (by
  suffix) and files over ``lfs_threshold`` as a 302 to ``/lfs/{key}`` carrying
  ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and ``X-Repo-Commit``;
* hub-style errors: 404 with ``X-Error-Code`` ``RepoNotFound``,
  ``RevisionNotFound`` or ``EntryNotFound``; 401 for a repository given a token
  when the request carries none or another.

``static`` files are served at ``/{path}`` as a plain web server would (for
``http(s)://`` URL tests). Every answer supports single ``bytes=`` ranges (206,
``Content-Range``, 416) and streams in chunks of at most 8 MiB, so a
``VirtualFile`` of any size is never held whole. ``latency`` delays every
request; ``faults`` inject failures (see ``Fault``). ``stats()`` counts requests
and body bytes served. A file can be swapped in place (``replace``) to play a
server whose file changes under a reader.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import quote, urlsplit

from forebear.bench.hub_content import (
    FileData,
    HubContent,
    Repo,
    ServedFile,
    VirtualFile,
    read_data,
)

__all__ = ["Fault", "FileData", "HubServer", "ServerStats", "VirtualFile"]

CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Fault:
    """A failure to inject into requests of one ``target``.

    ``kind``: ``status`` answers ``status`` (with ``Retry-After`` when given);
    ``drop`` closes the connection before any answer; ``short`` promises the full
    Content-Length, sends half and closes; ``truncate`` answers a well-formed 206 of
    half the asked length. ``target``: ``range`` (any GET with a Range header),
    ``api``, ``resolve``, ``lfs``, ``static`` or ``any``. The first ``first`` matching
    requests fail; after them each fails with ``probability`` (seeded by the server).
    """

    kind: Literal["status", "drop", "short", "truncate"]
    target: Literal["range", "api", "resolve", "lfs", "static", "any"] = "range"
    first: int = 0
    probability: float = 0.0
    status: int = 503
    retry_after: float | None = None


@dataclass(frozen=True)
class ServerStats:
    requests: int
    bytes_served: int  # body bytes written (also those of answers cut short)
    by_kind: Mapping[str, int]  # requests per target: api, resolve, lfs, static, range
    faults: int  # requests a fault was injected into


class HubServer:
    """The server; use as a context manager (or ``start``/``close``)."""

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, FileData]] | None = None,
        *,
        static: Mapping[str, FileData] | None = None,
        tokens: Mapping[str, str] | None = None,
        latency: float = 0.0,
        faults: Sequence[Fault] = (),
        seed: int = 0,
        lfs_threshold: int = 10 * 1024 * 1024,
    ) -> None:
        self.latency = latency
        self.content = HubContent(lfs_threshold, static or {})
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.set_faults(faults)
        self.reset_stats()
        for repo_id, files in (repos or {}).items():
            self.add_repo(repo_id, files, token=(tokens or {}).get(repo_id))
        self._httpd: ThreadingHTTPServer | None = None

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileData],
        *,
        token: str | None = None,
        refs: Sequence[str] = ("main",),
    ) -> str:
        """Serve ``repo_id`` at one commit (``refs`` name it too); returns its sha. A repo
        given a ``token`` answers 401 to requests without ``Authorization: Bearer TOKEN``."""
        return self.content.add_repo(repo_id, files, token=token, refs=refs)

    def replace(self, path: str, data: FileData, repo_id: str | None = None) -> None:
        """Swap a file's bytes in place (same commit, same URLs, a new ETag)."""
        self.content.replace(path, data, repo_id)

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Inject these faults from now on (their counts start again)."""
        with self._lock:
            self._faults = list(faults)
            self._seen = [0] * len(self._faults)

    def reset_stats(self) -> None:
        with self._lock:
            self._kinds: Counter[str] = Counter()
            self._requests = self._bytes = self._injected = 0

    def stats(self) -> ServerStats:
        with self._lock:
            return ServerStats(self._requests, self._bytes, dict(self._kinds), self._injected)

    def _count(self, kind: str, ranged: bool, streams: bool) -> Fault | None:
        """Count a request and decide whether a fault hits it (a ``short`` or ``truncate``
        fault only hits an answer that streams a file body)."""
        with self._lock:
            self._requests += 1
            self._kinds[kind] += 1
            if ranged:
                self._kinds["range"] += 1
            for index, fault in enumerate(self._faults):
                if fault.target not in ("any", kind) and not (fault.target == "range" and ranged):
                    continue
                if fault.kind in ("short", "truncate") and not streams:
                    continue
                self._seen[index] += 1
                if self._seen[index] <= fault.first or self._rng.random() < fault.probability:
                    self._injected += 1
                    return fault
        return None

    def _served(self, count: int) -> None:
        with self._lock:
            self._bytes += count

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it in a with block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        """The URL of a static file (or of any path on the server)."""
        return f"{self.endpoint}/{quote(path.lstrip('/'))}"

    def start(self) -> HubServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _byte_range(header: str | None, size: int) -> tuple[int, int] | Literal["bad"] | None:
    """(first, last) of a single ``bytes=`` range; None: no range; "bad": unsatisfiable."""
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if not first:
            count = int(last)
            return (max(size - count, 0), size - 1) if count > 0 and size else "bad"
        start, end = int(first), (int(last) if last else size - 1)
    except ValueError:
        return "bad"  # also several ranges: this server answers one range only
    return (start, min(end, size - 1)) if start <= end and start < size else "bad"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, each small answer on a
    # kept-alive connection waits for the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Silent: tests read ``stats()``, not logs."""

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        if hub.latency:
            time.sleep(hub.latency)
        kind, answer = hub.content.route(urlsplit(self.path).path)
        streams = answer.file is not None and answer.location is None
        fault = hub._count(kind, self.command == "GET" and "Range" in self.headers, streams)
        if fault is not None and fault.kind in ("drop", "status"):
            return self._fail(hub, fault)
        if answer.repo is not None and not self._authorised(hub, answer.repo):
            return
        headers = {} if answer.repo is None else {"X-Repo-Commit": answer.repo.sha}
        if answer.body is not None:
            data = json.dumps(answer.body).encode()
            return self._send(hub, 200, data, headers, "application/json")
        if answer.status == 404:
            return self._send(hub, 404, b"not found", headers | {"X-Error-Code": str(answer.code)})
        assert answer.file is not None
        if answer.location is not None:
            linked = {
                "X-Linked-Etag": f'"{answer.file.etag}"',
                "X-Linked-Size": str(answer.file.size),
            }
            location = {"Location": hub.endpoint + answer.location}
            return self._send(hub, 302, b"", headers | linked | location)
        self._send_file(hub, answer.file, headers, fault)

    def _authorised(self, hub: HubServer, repo: Repo) -> bool:
        given = self.headers.get("Authorization")
        if repo.token is None or given == f"Bearer {repo.token}":
            return True
        message = "Invalid credentials in Authorization header" if given else "Repository not found"
        headers = {"X-Error-Message": message} | ({} if given else {"X-Error-Code": "RepoNotFound"})
        self._send(hub, 401, message.encode(), headers)
        return False

    def _fail(self, hub: HubServer, fault: Fault) -> None:
        if fault.kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        self._send(hub, fault.status, b"injected failure", headers)

    def _send(
        self,
        hub: HubServer,
        status: int,
        data: bytes,
        headers: Mapping[str, str],
        content_type: str = "text/plain",
    ) -> None:
        self.send_response(status)
        headers = {**headers, "Content-Type": content_type, "Content-Length": str(len(data))}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)
            hub._served(len(data))

    def _send_file(
        self, hub: HubServer, target: ServedFile, headers: Mapping[str, str], fault: Fault | None
    ) -> None:
        size = target.size
        wanted = _byte_range(self.headers.get("Range") if self.command == "GET" else None, size)
        if wanted == "bad":
            return self._send(hub, 416, b"", {**headers, "Content-Range": f"bytes */{size}"})
        first, last = wanted if wanted is not None else (0, size - 1)
        length = last - first + 1
        cut = fault is not None and fault.kind in ("short", "truncate")
        sent = length // 2 if cut else length
        promised = sent if fault is not None and fault.kind == "truncate" else length
        self.send_response(206 if wanted is not None else 200)
        headers = {
            **headers,
            "ETag": f'"{target.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(promised),
        }
        if wanted is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self._stream(hub, target, first, sent)
        if sent < promised:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _stream(self, hub: HubServer, target: ServedFile, first: int, length: int) -> None:
        done = 0
        try:
            while done < length:
                piece = read_data(target.data, first + done, min(CHUNK, length - done))
                self.wfile.write(piece)
                done += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            hub._served(done)
