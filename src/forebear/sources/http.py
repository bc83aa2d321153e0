"""HTTP for remote sources: ranged GETs and probes, retried, checked and counted.

Requests go through huggingface_hub's shared session (``get_session()``), so its
offline switch, proxies and client settings apply to hub repositories and plain
URLs alike. A request that fails in a way that may pass — a dropped connection,
a timeout, 408, 429, a 5xx, a body shorter than promised, a Content-Range that
does not answer the request — is retried with bounded exponential backoff
(``RetryPolicy``; a 429's ``Retry-After`` is honoured up to ``max_wait``). Once
the attempts are spent, or at once for a refusal (401, 403), a missing file
(404) or a file that changed on the server (another ETag or size than the
first answer gave), a ``ForebearError`` says so. Bytes are returned only when
the status, the Content-Range and the length all match the request: a fault
is retried or reported, never passed on as data.

This module owns one file's requests (``RangeFetcher``) and the counters
(``Traffic``); caching and merging live in ``ranges``, folders in ``remote``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TypeVar
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import constants, get_session
from huggingface_hub.errors import OfflineModeIsEnabled

from forebear.errors import InputNotFoundError, RemoteError

__all__ = [
    "Http",
    "Probe",
    "RangeFetcher",
    "RetryPolicy",
    "Traffic",
    "Transient",
    "check_online",
    "normalize_etag",
]

T = TypeVar("T")

_RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_OFFLINE_HINT = "unset HF_HUB_OFFLINE to read it from the network, or give a local copy"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a request is tried: ``attempts`` in all, waiting ``base_wait`` seconds
    after the first failure, doubling up to ``max_wait``; ``timeout`` per network step."""

    attempts: int = 6
    base_wait: float = 0.5
    max_wait: float = 8.0
    timeout: float = 60.0

    def wait(self, failures: int, retry_after: float | None) -> float:
        backoff = min(self.max_wait, self.base_wait * 2.0 ** (failures - 1))
        return backoff if retry_after is None else min(self.max_wait, max(retry_after, backoff))


@dataclass(frozen=True)
class Traffic:
    """What a remote location cost: HTTP requests sent (retries and redirects included),
    body bytes received, and bytes served from blocks an earlier run had cached."""

    requests: int = 0
    retries: int = 0
    bytes_fetched: int = 0
    bytes_cached: int = 0


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {field.name: 0 for field in fields(Traffic)}

    def add(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._values[key] += delta

    def snapshot(self) -> Traffic:
        with self._lock:
            return Traffic(**self._values)


class Transient(Exception):
    """A failure worth another attempt."""

    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.retry_after = retry_after


def normalize_etag(value: str | None) -> str | None:
    """An ETag without its weak marker and quotes (``W/"abc"`` → ``abc``)."""
    if not value:
        return None
    value = value.strip()
    value = value[2:] if value.startswith("W/") else value
    return value.strip('"') or None


def check_online(ref: str) -> None:
    """Refuse a remote reference while huggingface_hub's offline mode is on."""
    if constants.is_offline_mode():
        raise RemoteError(
            "offline mode is on (HF_HUB_OFFLINE), so it cannot be fetched",
            path=ref,
            hint=_OFFLINE_HINT,
        )


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


@dataclass(frozen=True)
class Probe:
    """What a HEAD says of a file: its size and validator, None when absent."""

    size: int | None
    etag: str | None


class Http:
    """Requests to one remote (a hub repository or a URL prefix), sharing headers, retry
    policy and counters. ``headers`` (authorization included) go only to ``origin``."""

    def __init__(
        self, origin: str, headers: Mapping[str, str], retry: RetryPolicy, auth_hint: str
    ) -> None:
        self._origin = _origin(origin)
        self._headers = dict(headers)
        self.retry = retry
        self.auth_hint = auth_hint
        self._counter = _Counter()

    def traffic(self) -> Traffic:
        return self._counter.snapshot()

    def count(self, **deltas: int) -> None:
        self._counter.add(**deltas)

    def headers_for(self, url: str) -> dict[str, str]:
        # A redirect target elsewhere (a CDN's signed URL) must not receive the token.
        own = _origin(url) == self._origin
        return {**(self._headers if own else {}), "Accept-Encoding": "identity"}

    def retrying(self, name: str, what: str, call: Callable[[], T]) -> T:
        """``call()``, again after each ``Transient`` failure until the attempts run out."""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call()
            except Transient as fault:
                if attempt == self.retry.attempts:
                    raise RemoteError(
                        f"{what} failed {attempt} times (last: {fault})",
                        path=name,
                        hint="the server or the network is failing; try again later "
                        "(what was fetched is cached)",
                    ) from None
                self.count(retries=1)
                time.sleep(self.retry.wait(attempt, fault.retry_after))
        raise AssertionError("unreachable")

    @contextmanager
    def send(self, method: str, url: str, headers: Mapping[str, str]) -> Iterator[httpx2.Response]:
        """One request, its body left to read; network failures become ``Transient``."""
        session = get_session()
        request = session.build_request(
            method, url, headers=dict(headers), timeout=self.retry.timeout
        )
        try:
            response = session.send(request, stream=True, follow_redirects=True)
        except OfflineModeIsEnabled:
            raise RemoteError(
                "offline mode is on (HF_HUB_OFFLINE)", path=url, hint=_OFFLINE_HINT
            ) from None
        except httpx2.TransportError as error:
            self.count(requests=1)
            raise Transient(f"{type(error).__name__}: {error}") from None
        self.count(requests=1 + len(response.history))
        try:
            yield response
        finally:
            response.close()

    def refuse(self, response: httpx2.Response, name: str) -> None:
        """Raise for a status that no retry can mend, or ``Transient`` for one that may pass."""
        status = response.status_code
        if status in _RETRIED_STATUS:
            raise Transient(f"HTTP {status}", _retry_after(response))
        if status in (401, 403):
            raise RemoteError(
                f"the server refused access (HTTP {status})", path=name, hint=self.auth_hint
            )
        if status in (404, 410):
            raise InputNotFoundError(
                "is not on the server (HTTP 404)",
                path=name,
                hint="check the name, the revision or the URL",
            )
        raise RemoteError(
            f"unexpected answer HTTP {status}",
            path=name,
            hint="the server does not serve this file as expected",
        )

    def probe(self, url: str, name: str) -> Probe | None:
        """HEAD ``url`` (redirects followed): None when the file is not there."""

        def head() -> Probe | None:
            with self.send("HEAD", url, self.headers_for(url)) as response:
                if response.status_code in (404, 410):
                    return None
                if response.status_code != 200:
                    self.refuse(response, name)
                return _probe_of(response)

        return self.retrying(name, "HEAD", head)


def _probe_of(response: httpx2.Response) -> Probe:
    chain = [*response.history, response]
    linked = [normalize_etag(r.headers.get("X-Linked-Etag")) for r in chain]
    sizes = [r.headers.get("X-Linked-Size") for r in chain]
    sizes.append(response.headers.get("Content-Length"))
    size = next((int(s) for s in sizes if s is not None and s.isdigit()), None)
    etag = next((e for e in linked if e), None) or normalize_etag(response.headers.get("ETag"))
    return Probe(size, etag)


class RangeFetcher:
    """Ranged GETs of one file of known ``size``, checked against the first answer.

    ``etag`` is the validator the listing gave (a hub's LFS sha256 or blob id), checked
    against every ``X-Linked-Etag`` on the way; the final server's own ETag is pinned at
    its first answer. The URL a redirect led to is remembered and asked directly next
    time, and forgotten when it stops answering (an expired signed URL).
    """

    def __init__(self, http: Http, url: str, name: str, size: int, etag: str | None) -> None:
        self._http = http
        self._url = url
        self._name = name
        self._size = size
        self._linked = etag
        self._pinned: str | None = None
        self._direct: str | None = None
        self._lock = threading.Lock()

    def fetch(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)``, exactly, or a ``ForebearError``."""
        return self._http.retrying(
            self._name,
            f"GET bytes {offset}-{offset + length - 1}",
            lambda: self._attempt(offset, length),
        )

    def _attempt(self, offset: int, length: int) -> bytes:
        direct = self._direct
        url = direct or self._url
        headers = {**self._http.headers_for(url), "Range": f"bytes={offset}-{offset + length - 1}"}
        with self._http.send("GET", url, headers) as response:
            if direct is not None and response.status_code in (401, 403, 404, 410):
                self._direct = None  # an expired redirect target: ask the original URL again
                raise Transient(f"HTTP {response.status_code} from the redirect target")
            self._check_status(response, offset, length)
            self._check_identity(response)
            body = self._body(response, length)
            if response.history and self._direct is None:
                self._direct = str(response.url)
        return body

    def _check_status(self, response: httpx2.Response, offset: int, length: int) -> None:
        status = response.status_code
        if status == 200 and offset == 0 and length == self._size:
            return  # the whole file asked for: a server may answer without Content-Range
        if status == 200:
            raise RemoteError(
                "the server ignores Range requests",
                path=self._name,
                hint="download the file and give its local path",
            )
        if status == 416:
            self._changed(f"the server says bytes {offset}.. are outside the file")
        if status != 206:
            self._http.refuse(response, self._name)
        found = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not found:
            raise Transient("a 206 answer without a usable Content-Range")
        first, last, total = int(found[1]), int(found[2]), found[3]
        if total != "*" and int(total) != self._size:
            self._changed(f"it is now {total} bytes, not {self._size}")
        if (first, last) != (offset, offset + length - 1):
            raise Transient(f"asked for bytes {offset}-{offset + length - 1}, got {first}-{last}")

    def _check_identity(self, response: httpx2.Response) -> None:
        for step in (*response.history, response):
            linked = normalize_etag(step.headers.get("X-Linked-Etag"))
            if linked and self._linked and linked != self._linked:
                self._changed(f"its ETag is now {linked}, not {self._linked}")
        etag = normalize_etag(response.headers.get("ETag"))
        if etag is None:
            return
        with self._lock:
            if self._pinned is None:
                self._pinned = etag
        if etag != self._pinned:
            self._changed(f"its ETag is now {etag}, not {self._pinned}")

    def _body(self, response: httpx2.Response, length: int) -> bytes:
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > length:
                    break
        except httpx2.TransportError as error:  # a dropped connection or a short body
            raise Transient(f"{type(error).__name__} after {len(body)} bytes") from None
        finally:
            self._http.count(bytes_fetched=len(body))
        if len(body) != length:
            raise Transient(f"got {len(body)} bytes of {length}")
        return bytes(body)

    def _changed(self, why: str) -> None:
        raise RemoteError(
            f"the file changed on the server while being read ({why})",
            path=self._name,
            hint="run again; pin a commit (org/name@sha) so that every read sees one version",
        )
