"""Local files, memory-mapped, and local folders."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from types import TracebackType

from forebear.errors import CorruptCheckpointError, InputNotFoundError, LimitExceededError
from forebear.sources.base import check_range


class LocalFile:
    """A local file behind ``ByteSource``; reads copy only the requested range out of a map."""

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
        # mmap refuses empty files; an empty file simply has nothing to read.
        self._map = (
            mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self._size else None
        )

    @property
    def name(self) -> str:
        return str(self._path)

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        check_range(str(self._path), self._size, offset, length)
        if length == 0 or self._map is None:
            return b""
        return self._map[offset : offset + length]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
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
