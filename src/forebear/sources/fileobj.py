"""A read-only, seekable file object over a ``ByteSource`` (for ``zipfile``)."""

from __future__ import annotations

import io

from forebear.sources.base import ByteSource


class SourceFile(io.RawIOBase):
    def __init__(self, source: ByteSource) -> None:
        super().__init__()
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        position = base + offset
        if position < 0:
            raise OSError("seek before the start of the file")
        self._pos = position
        return position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        length = max(0, min(len(buffer), self._source.size - self._pos))
        if length:
            buffer[:length] = self._source.read(self._pos, length)
        self._pos += length
        return length
