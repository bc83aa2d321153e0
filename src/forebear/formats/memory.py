"""An in-memory reader: a dict of arrays behind ``CheckpointReader`` (tests, synthetic models)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from forebear.formats.base import Array, BaseReader, Span, TensorInfo

_NUMPY_TO_NAME = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


class MemoryReader(BaseReader):
    def __init__(
        self,
        arrays: Mapping[str, Array],
        *,
        name: str = "<memory>",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._name = name
        self._format = "memory"
        self._metadata = dict(metadata or {})
        self._arrays = {key: np.ascontiguousarray(value) for key, value in arrays.items()}
        self._tensors = {
            key: TensorInfo(
                name=key,
                dtype=_NUMPY_TO_NAME.get(value.dtype, value.dtype.str),
                shape=tuple(value.shape),
                spans=(Span(name, 0, value.nbytes),),
            )
            for key, value in self._arrays.items()
        }

    def read(self, name: str) -> Array:
        self.info(name)
        return self._arrays[name].copy()

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        self.row_range(name, start, stop)
        return self._arrays[name][start:stop].copy()
