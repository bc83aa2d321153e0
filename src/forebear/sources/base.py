"""The two protocols every byte source implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from forebear.errors import CorruptCheckpointError


@runtime_checkable
class ByteSource(Protocol):
    """One file, read by byte range.

    ``read`` returns exactly ``length`` bytes or raises ``CorruptCheckpointError``
    naming the file; it never returns a short read.
    """

    @property
    def name(self) -> str:
        """The path or URL shown in messages."""
        ...

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class Location(Protocol):
    """A folder of files addressed by relative POSIX paths."""

    @property
    def name(self) -> str: ...

    def exists(self, relpath: str) -> bool: ...

    def list_files(self) -> list[str]:
        """Relative paths of the files directly in this folder, sorted."""
        ...

    def open(self, relpath: str) -> ByteSource: ...

    def read_bytes(self, relpath: str, limit: int) -> bytes:
        """The whole file, refused with ``LimitExceededError`` when over ``limit`` bytes."""
        ...


def check_range(name: str, size: int, offset: int, length: int) -> None:
    """Refuse a read outside ``[0, size)``: the one bounds check every source applies."""
    if offset < 0 or length < 0 or offset + length > size:
        raise CorruptCheckpointError(
            f"byte range {offset}..{offset + length} is outside the file ({size} bytes)",
            path=name,
            hint="the file is truncated or its header is wrong; download it again",
        )
