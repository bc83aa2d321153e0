"""Remote models behind ``Location`` and ``ByteSource``: hub repositories and HTTP(S) URLs.

A ``RemoteLocation`` is a folder on a server: a hub repository pinned to one
commit (``forebear.sources.hub.open_hub`` lists it from the hub's API), or a URL
prefix whose files are found by HEAD (``open_url``). A ``RemoteFile`` reads one
of its files by HTTP Range requests: a read the range store cannot answer
fetches what is missing (all of the first and last ``READ_AHEAD`` bytes when it
falls there, so that a header's length and its body, or a zip's directory, come
in one request), and ``prefetch`` fetches the ranges a
reader is about to ask for, merged and in parallel over at most ``connections``
requests. What is fetched is kept in a ``RangeStore`` under the range cache
(``forebear.paths.default_range_cache()``), keyed by the remote, the commit,
the file's path, its ETag and its size, so a second run of the same job fetches
nothing. A file without an ETag is cached only for the life of its location.

This module owns folders, files and their caches; requests are ``http``'s,
range bookkeeping is ``ranges``'.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from forebear.errors import (
    CorruptCheckpointError,
    InputNotFoundError,
    LimitExceededError,
    RemoteError,
)
from forebear.paths import default_range_cache
from forebear.sources.base import check_range
from forebear.sources.http import Http, Probe, RangeFetcher, RetryPolicy, Traffic, check_online
from forebear.sources.ranges import CorruptBlockError, RangeStore, plan_requests

__all__ = ["READ_AHEAD", "RemoteFile", "RemoteLocation", "open_url"]

READ_AHEAD = 64 * 1024
DEFAULT_CONNECTIONS = 8
# What a URL folder is asked for by HEAD when a reader wants its listing.
_PROBED = (
    "config.json",
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "quantize_config.json",
    "quant_config.json",
)
_CACHE_ATTEMPTS = 3


class RemoteFile:
    """One remote file behind ``ByteSource``, with ``prefetch`` for ranges about to be read."""

    def __init__(
        self,
        name: str,
        size: int,
        fetcher: RangeFetcher,
        store: RangeStore,
        http: Http,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self._name = name
        self._size = size
        self._fetcher = fetcher
        self._store = store
        self._http = http
        self._connections = connections
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        check_range(self._name, self._size, offset, length)
        if length == 0:
            return b""
        if self._closed:
            raise ValueError(f"{self._name}: read after close")
        for _ in range(_CACHE_ATTEMPTS):
            if self._store.missing(offset, length):
                self._fetch(plan_requests(self._store, [self._window(offset, length)]))
            try:
                data, cached = self._store.read(offset, length)
            except CorruptBlockError:
                continue  # the damaged block is gone; its bytes are fetched again
            self._http.count(bytes_cached=cached)
            return data
        raise RemoteError(
            "cached ranges keep failing their checks",
            path=self._name,
            hint=f"delete the range cache ({default_range_cache()}) and run again",
        )

    def _window(self, offset: int, length: int) -> tuple[int, int]:
        """What a missed read fetches: its range, widened to the file's first or last
        ``READ_AHEAD`` bytes when it falls in them, where headers and zip directories make
        many small reads."""
        start, end = offset, offset + length
        if start < READ_AHEAD:
            end = max(end, min(READ_AHEAD, self._size))
        if end > self._size - READ_AHEAD:
            start, end = min(start, max(self._size - READ_AHEAD, 0)), self._size
        return start, end - start

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Fetch the ``(offset, length)`` ranges not held yet, merged across small gaps, in
        parallel; later ``read`` calls inside them are answered without a request."""
        for offset, length in ranges:
            check_range(self._name, self._size, offset, length)
        self._fetch(plan_requests(self._store, ranges))

    def _fetch(self, requests: list[tuple[int, int]]) -> None:
        def one(piece: tuple[int, int]) -> None:
            self._store.put(piece[0], self._fetcher.fetch(*piece))

        if len(requests) <= 1:
            for piece in requests:
                one(piece)
            return
        with ThreadPoolExecutor(min(self._connections, len(requests))) as pool:
            futures = [pool.submit(one, piece) for piece in requests]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def close(self) -> None:
        self._closed = True


def _check_relpath(relpath: str, where: str) -> None:
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or "\\" in relpath or {"", ".", ".."} & set(parts):
        raise CorruptCheckpointError(
            f"file name {relpath!r} points outside the model folder",
            path=where,
            hint="the index file is malformed or hostile; do not use this checkpoint",
        )


class RemoteLocation:
    """A folder on a server behind ``Location``.

    ``files`` lists it (a hub repository: path → size and ETag); None means a URL
    prefix whose files are found by HEAD. ``urls`` overrides the URL of single files.
    ``cache`` is the range cache's root, or None to keep ranges only while open.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        http: Http,
        *,
        files: Mapping[str, Probe] | None,
        revision: str | None,
        cache: Path | None,
        identity: str,
        urls: Mapping[str, str] | None = None,
    ) -> None:
        self._name = name
        self._base = base_url
        self._http = http
        self._files = None if files is None else dict(files)
        self._probed: dict[str, Probe | None] = {}
        self._urls = dict(urls or {})
        self._revision = revision
        self._cache = cache
        self._identity = identity
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._opened: dict[str, tuple[RangeFetcher, RangeStore]] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def revision(self) -> str | None:
        """The commit every file is read at (hub repositories), else None."""
        return self._revision

    def traffic(self) -> Traffic:
        return self._http.traffic()

    def url(self, relpath: str) -> str:
        return self._urls.get(relpath) or self._base + quote(relpath, safe="/")

    def _entry(self, relpath: str) -> Probe | None:
        _check_relpath(relpath, self._name)
        if self._files is not None:
            return self._files.get(relpath)
        if relpath not in self._probed:
            self._probed[relpath] = self._http.probe(self.url(relpath), self._where(relpath))
        return self._probed[relpath]

    def _where(self, relpath: str) -> str:
        return f"{self._name.rstrip('/')}/{relpath}"

    def exists(self, relpath: str) -> bool:
        return self._entry(relpath) is not None

    def list_files(self) -> list[str]:
        if self._files is not None:
            return sorted(path for path in self._files if "/" not in path)
        with ThreadPoolExecutor(DEFAULT_CONNECTIONS) as pool:
            found = list(pool.map(self.exists, _PROBED))
        return sorted(
            {
                *(p for p, ok in zip(_PROBED, found, strict=True) if ok),
                *(p for p, probe in self._probed.items() if probe),
            }
        )

    def open(self, relpath: str) -> RemoteFile:
        entry = self._entry(relpath)
        if entry is None:
            raise InputNotFoundError(
                f"{relpath} is missing from {self._name}",
                path=self._where(relpath),
                hint="check the name and the revision, or fix the index that names it",
            )
        if entry.size is None:
            raise RemoteError(
                "the server does not say how large the file is",
                path=self._where(relpath),
                hint="download it and give the local path",
            )
        with self._lock:
            if relpath not in self._opened:
                fetcher = RangeFetcher(
                    self._http, self.url(relpath), self._where(relpath), entry.size, entry.etag
                )
                self._opened[relpath] = (fetcher, RangeStore(self._store_folder(relpath, entry)))
            fetcher, store = self._opened[relpath]
        return RemoteFile(self._where(relpath), entry.size, fetcher, store, self._http)

    def _store_folder(self, relpath: str, entry: Probe) -> Path:
        key = json.dumps([self._identity, self._revision, relpath, entry.etag, entry.size])
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        if self._cache is not None and entry.etag is not None:
            return self._cache / digest[:2] / digest
        if self._temporary is None:  # no validator: a later run could not trust these bytes
            self._temporary = tempfile.TemporaryDirectory(prefix="forebear-ranges-")
        return Path(self._temporary.name) / digest

    def read_bytes(self, relpath: str, limit: int) -> bytes:
        entry = self._entry(relpath)
        if entry is not None and entry.size is not None and entry.size > limit:
            raise LimitExceededError(
                f"{relpath} is {entry.size} bytes, over the {limit}-byte limit for this kind "
                "of file",
                path=self._name,
                hint="the file is not what its name says",
            )
        source = self.open(relpath)
        return source.read(0, source.size)

    def close(self) -> None:
        """Remove the ranges kept only for this location; the range cache stays."""
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return default_range_cache() if cache_dir is None else Path(cache_dir)


def open_url(
    url: str,
    *,
    token: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[RemoteLocation, str | None]:
    """The folder of an ``http(s)://`` URL and the file it names (None for a URL ending in
    ``/``). ``token`` is sent as a bearer token to the URL's own host only."""
    check_online(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputNotFoundError("is not an http(s) URL", path=url, hint="give a full URL")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = Http(url, headers, retry or RetryPolicy(), "pass --token for a server that needs one")
    folder, _, last = url.partition("?")[0].rpartition("/")
    relpath = unquote(last) or None
    if relpath is not None and parts.query:  # a signed URL: no folder to look into beside it
        probe = http.probe(url, url)
        files = {relpath: probe} if probe is not None else {}
        location = RemoteLocation(
            url,
            folder + "/",
            http,
            files=files,
            revision=None,
            cache=cache_root(cache_dir),
            identity=f"url:{url}",
            urls={relpath: url},
        )
        return location, relpath
    location = RemoteLocation(
        folder + "/",
        folder + "/",
        http,
        files=None,
        revision=None,
        cache=cache_root(cache_dir),
        identity=f"url:{folder}/",
    )
    return location, relpath
