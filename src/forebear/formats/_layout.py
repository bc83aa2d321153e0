"""The shape shared by every dequantised layout: one logical tensor built from stored parts.

Owns only the ``Layout`` record and the float dtypes a scale may be stored in, so that
``formats.quantized`` (GPTQ, AWQ and the reader) and ``formats.fp8`` can both build layouts
without importing each other. It owns no bit layout and reads no bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from forebear.formats.base import Array, CheckpointReader, TensorInfo

__all__ = ["FLOAT_DTYPES", "Layout"]

FLOAT_DTYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class Layout:
    """One logical tensor built from stored parts; ``rows`` dequantises output rows."""

    info: TensorInfo
    rows: Callable[[CheckpointReader, int, int], Array]
