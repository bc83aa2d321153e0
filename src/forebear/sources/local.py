"""Local files and folders.

Files are read with ``os.pread`` rather than through a memory map: a map keeps
every page it ever touched in the process's resident set (and the kernel's
read-around maps far more than a row slice asks for), so reading a 7B model
layer by layer would show as gigabytes of RSS although each read is copied out
and dropped. ``pread`` goes through the page cache, which the kernel reclaims
freely, and leaves RSS to what forebear holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from forebear.errors import CorruptCheckpointError, InputNotFoundError, LimitExceededError
from forebear.sources.base import check_range


class LocalFile:
    """A local file behind ``ByteSource``; a read copies only the requested range."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        try:
            self._file = open(self._path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise InputNotFoundError(
                "no such file", path=self._path, hint="check the path"
            ) from None
        except IsADirectoryError:
            raise InputNotFoundError(
                "is a folder, expected a file", path=self._path, hint="name the weights file"
            ) from None
        except PermissionError:
            raise InputNotFoundError(
                "permission denied", path=self._path, hint="check the file's permissions"
            ) from None
        self._size = os.fstat(self._file.fileno()).st_size

    @property
    def name(self) -> str:
        return str(self._path)

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        check_range(str(self._path), self._size, offset, length)
        if length == 0:
            return b""
        if self._file.closed:
            raise ValueError(f"{self._path}: read after close")
        first = os.pread(self._file.fileno(), length, offset)
        if len(first) == length:
            return first
        pieces, done = [first], len(first)
        while done < length:  # pread may return less than asked (large reads, signals)
            more = os.pread(self._file.fileno(), length - done, offset + done)
            if not more:
                raise CorruptCheckpointError(
                    f"file ended at byte {offset + done}, expected {offset + length}",
                    path=self._path,
                    hint="the file changed or was truncated while being read; download it again",
                )
            pieces.append(more)
            done += len(more)
        return b"".join(pieces)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalDirectory:
    """A local folder behind ``Location``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        if not self._path.is_dir():
            raise InputNotFoundError("no such folder", path=self._path, hint="check the path")

    @property
    def name(self) -> str:
        return str(self._path)

    @property
    def path(self) -> Path:
        return self._path

    def _resolve(self, relpath: str) -> Path:
        # Index files name shards; a hostile index must not reach outside the folder.
        target = (self._path / relpath).resolve()
        root = self._path.resolve()
        if root != target and root not in target.parents:
            raise CorruptCheckpointError(
                f"file name {relpath!r} points outside the model folder",
                path=self._path,
                hint="the index file is malformed or hostile; do not use this checkpoint",
            )
        return target

    def exists(self, relpath: str) -> bool:
        return self._resolve(relpath).is_file()

    def list_files(self) -> list[str]:
        return sorted(p.name for p in self._path.iterdir() if p.is_file())

    def open(self, relpath: str) -> LocalFile:
        target = self._resolve(relpath)
        if not target.is_file():
            raise InputNotFoundError(
                f"{relpath} is missing from the model folder",
                path=self._path,
                hint="download the missing file or fix the index",
            )
        return LocalFile(target)

    def read_bytes(self, relpath: str, limit: int) -> bytes:
        target = self._resolve(relpath)
        if not target.is_file():
            raise InputNotFoundError(
                f"{relpath} is missing from the model folder",
                path=self._path,
                hint="download the missing file",
            )
        size = target.stat().st_size
        if size > limit:
            raise LimitExceededError(
                f"{relpath} is {size} bytes, over the {limit}-byte limit for this kind of file",
                path=self._path,
                hint="the file is not what its name says",
            )
        return target.read_bytes()


def open_local(path: str | os.PathLike[str]) -> LocalFile:
    return LocalFile(path)
