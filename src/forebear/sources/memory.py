"""Bytes held in memory behind ``ByteSource`` (tests, fuzzing, small downloads)."""

from __future__ import annotations

from forebear.sources.base import check_range


class MemorySource:
    def __init__(self, data: bytes, name: str = "<memory>") -> None:
        self._data = bytes(data)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        check_range(self._name, len(self._data), offset, length)
        return self._data[offset : offset + length]

    def close(self) -> None:
        """Nothing to release."""
