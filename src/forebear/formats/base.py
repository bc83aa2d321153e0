"""The ``CheckpointReader`` protocol and the records it returns.

A reader lists tensors (name, dtype, numpy-order shape, byte spans), reads one
tensor, or reads a slice of rows (axis 0) while touching only the bytes those
rows need where the layout allows. Shapes are always numpy order: a GGUF
``ne = [in, out]`` tensor is listed as ``(out, in)``. Readers decode to numpy;
dequantised and reduced-precision float types come back as float32.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from forebear.errors import TensorNotFoundError

__all__ = ["BaseReader", "CheckpointReader", "Span", "TensorInfo"]

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Span:
    """A byte range inside one file of the checkpoint."""

    file: str
    offset: int
    length: int


@dataclass(frozen=True)
class TensorInfo:
    """One logical tensor.

    ``dtype`` is the stored type: a safetensors name (``BF16``), a GGML type
    (``Q4_K``) or a packed layout (``GPTQ_INT4``). ``spans`` lists every byte range
    the tensor is built from: one for a plain tensor, several for a packed
    layout whose scales and zeros live in other tensors.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    spans: tuple[Span, ...]
    parts: tuple[str, ...] = field(default=())  # stored tensors a packed layout is built from

    @property
    def nbytes(self) -> int:
        return sum(span.length for span in self.spans)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@runtime_checkable
class CheckpointReader(Protocol):
    @property
    def name(self) -> str:
        """The path or URL shown in messages."""
        ...

    @property
    def format(self) -> str:
        """``safetensors``, ``pytorch``, ``gguf``, ``memory`` …"""
        ...

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Format-level key/values (safetensors ``__metadata__``, GGUF KV pairs)."""
        ...

    def tensors(self) -> Mapping[str, TensorInfo]: ...

    def read(self, name: str) -> Array: ...

    def read_rows(self, name: str, start: int, stop: int) -> Array: ...

    def close(self) -> None: ...


class BaseReader:
    """Shared behaviour: lookup with a clear error, row-range checks, context management.

    Subclasses set ``_name``/``_format``/``_metadata``/``_tensors`` and implement
    ``read`` and ``read_rows``.
    """

    _name: str
    _format: str
    _metadata: Mapping[str, Any]
    _tensors: Mapping[str, TensorInfo]

    @property
    def name(self) -> str:
        return self._name

    @property
    def format(self) -> str:
        return self._format

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise TensorNotFoundError(
                f"no tensor named {name!r}",
                path=self._name,
                hint="run `forebear inspect` to list the tensors it holds",
            ) from None

    def row_range(self, name: str, start: int, stop: int) -> TensorInfo:
        """Validate ``[start, stop)`` against axis 0 and return the tensor's info."""
        info = self.info(name)
        if not info.shape:
            raise ValueError(f"{name} is a scalar and has no rows")
        if not 0 <= start <= stop <= info.shape[0]:
            raise IndexError(f"rows {start}:{stop} are outside {name}'s {info.shape[0]} rows")
        return info

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def close(self) -> None:
        """Release files; the default holds none."""

    def __enter__(self) -> BaseReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
