"""Byte ranges of a remote file: merging them into requests, and keeping what was fetched.

``plan_requests`` turns the ranges a reader asks for into the requests worth
sending: ranges closer than ``gap`` bytes are merged (at most ``gap`` bytes
wasted per merge), what is already held is left out, and long pieces are split
so that no request carries more than ``max_request`` bytes.

``RangeStore`` keeps the fetched ranges of one file as block files in one
folder: a block is written to a temporary name and renamed, and its name
carries its offset, length and a BLAKE2b digest, so a block that was cut short
or damaged on disk is found on first use, deleted and fetched again. Blocks may
overlap; an index of disjoint segments (each the part of one block first to
cover it) answers "what is held for this range" by bisection. The folder is
never trimmed: it grows by what the analyses fetched, which is a small share
of each file, and deleting it (or any block in it) is always safe.

This module owns the bookkeeping only; it sends no request.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_GAP", "MAX_REQUEST_BYTES", "RangeStore", "merge_ranges", "plan_requests"]

# A merge may fetch this many unwanted bytes; two requests cost more in latency than 4 KiB.
DEFAULT_GAP = 4 * 1024
MAX_REQUEST_BYTES = 8 * 1024 * 1024

_BLOCK_NAME = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)-([0-9a-f]{32})\.blk$")


def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def merge_ranges(ranges: Sequence[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """``(offset, length)`` ranges sorted, with overlapping ones and ones less than ``gap``
    bytes apart merged; empty ranges dropped."""
    merged: list[tuple[int, int]] = []
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        if merged and offset <= merged[-1][0] + merged[-1][1] + gap:
            start, size = merged[-1]
            merged[-1] = (start, max(start + size, offset + length) - start)
        else:
            merged.append((offset, length))
    return merged


def _split(offset: int, length: int, limit: int) -> list[tuple[int, int]]:
    end = offset + length
    return [(start, min(limit, end - start)) for start in range(offset, end, limit)]


@dataclass(frozen=True)
class _Block:
    offset: int
    length: int
    path: Path
    digest: str
    fresh: bool  # fetched by this process: its bytes do not count as served from the cache


class CorruptBlockError(Exception):
    """A block whose file no longer matches its name; it has been dropped from the store."""


class RangeStore:
    """The fetched ranges of one file, as block files under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._starts: list[int] = []  # segment starts, sorted, parallel to _segments
        self._segments: list[tuple[int, int, _Block]] = []  # disjoint (start, end, block)
        self._verified: set[Path] = set()
        if folder.is_dir():
            found = []
            for entry in folder.iterdir():
                match = _BLOCK_NAME.match(entry.name)
                if match:
                    offset, length = int(match[1], 16), int(match[2], 16)
                    found.append(_Block(offset, length, entry, match[3], fresh=False))
            for block in sorted(found, key=lambda b: (b.offset, -b.length)):
                self._index(block)

    def _index(self, block: _Block) -> None:
        """Add the parts of ``block`` no segment covers yet (called under the lock)."""
        for start, end in self._gaps(block.offset, block.offset + block.length):
            at = bisect.bisect_left(self._starts, start)
            self._starts.insert(at, start)
            self._segments.insert(at, (start, end, block))

    def _gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        gaps, position = [], start
        at = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while position < end and at < len(self._segments):
            seg_start, seg_end, _ = self._segments[at]
            if seg_end <= position:
                at += 1
                continue
            if seg_start >= end:
                break
            if seg_start > position:
                gaps.append((position, seg_start))
            position = max(position, seg_end)
            at += 1
        if position < end:
            gaps.append((position, end))
        return gaps

    def missing(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The ``(offset, length)`` parts of the range that no block holds."""
        with self._lock:
            return [(a, b - a) for a, b in self._gaps(offset, offset + length)]

    def put(self, offset: int, data: bytes) -> None:
        """Keep ``data`` (the file's bytes from ``offset``) as a block, written atomically."""
        if not data:
            return
        digest = _digest(data)
        path = self._folder / f"{offset:x}-{len(data):x}-{digest}.blk"
        self._folder.mkdir(parents=True, exist_ok=True)
        temporary = self._folder / f".{uuid.uuid4().hex}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, path)
        block = _Block(offset, len(data), path, digest, fresh=True)
        with self._lock:
            self._verified.add(path)
            self._index(block)

    def read(self, offset: int, length: int) -> tuple[bytes, int]:
        """The bytes of a range every part of which is held, and how many of them came from
        blocks of an earlier run. ``CorruptBlockError`` when a block fails its check."""
        with self._lock:
            at = max(bisect.bisect_right(self._starts, offset) - 1, 0)
            pieces = []
            position, end = offset, offset + length
            while position < end:
                if at >= len(self._segments) or self._segments[at][0] > position:
                    # Only a block dropped since the caller's ``missing`` leaves a hole here.
                    raise CorruptBlockError(f"bytes {position}.. are no longer held")
                _, seg_end, block = self._segments[at]
                at += 1
                if seg_end <= position:
                    continue
                take = min(seg_end, end) - position
                pieces.append((block, position - block.offset, take))
                position += take
        chunks, cached = [], 0
        for block, start, take in pieces:
            chunks.append(self._read_block(block, start, take))
            cached += 0 if block.fresh else take
        return b"".join(chunks), cached

    def _read_block(self, block: _Block, start: int, length: int) -> bytes:
        try:
            if block.path not in self._verified:
                whole = block.path.read_bytes()
                if len(whole) != block.length or _digest(whole) != block.digest:
                    raise OSError("block does not match its name")
                self._verified.add(block.path)
                return whole[start : start + length]
            with open(block.path, "rb") as handle:
                data = os.pread(handle.fileno(), length, start)
            if len(data) != length:
                raise OSError("block is shorter than its name says")
            return data
        except OSError:
            self._drop(block)
            raise CorruptBlockError(str(block.path)) from None

    def _drop(self, block: _Block) -> None:
        with self._lock:
            kept = [(s, e, b) for s, e, b in self._segments if b is not block]
            self._segments = kept
            self._starts = [s for s, _, _ in kept]
            self._verified.discard(block.path)
        block.path.unlink(missing_ok=True)


def plan_requests(
    store: RangeStore,
    ranges: Sequence[tuple[int, int]],
    *,
    gap: int = DEFAULT_GAP,
    max_request: int = MAX_REQUEST_BYTES,
) -> list[tuple[int, int]]:
    """The requests that fetch every byte of ``ranges`` the store lacks: merged across small
    gaps, then split at ``max_request`` bytes."""
    wanted = [part for offset, length in ranges for part in store.missing(offset, length)]
    return [piece for merged in merge_ranges(wanted, gap) for piece in _split(*merged, max_request)]
