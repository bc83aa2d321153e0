"""A ByteSource over bytes that records every read, to prove which bytes a reader touched."""

from __future__ import annotations

from forebear.sources import MemorySource


class RecordingSource(MemorySource):
    def __init__(self, data: bytes, name: str = "memory") -> None:
        super().__init__(data, name)
        self.reads: list[tuple[int, int]] = []
        self.closed = False

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return super().read(offset, length)

    def close(self) -> None:
        self.closed = True
