"""Element types of stored tensors and their decoding to numpy.

Names follow safetensors (``F32``, ``BF16``, ``F8_E4M3`` …). Types numpy lacks are
decoded to float32 exactly: bfloat16 is the top half of a float32, and the two
fp8 types go through a 256-entry table. This module owns decoding of plain
element types only; block-quantised types live with their formats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DTYPES", "DType", "decode", "dtype_info"]


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int
    storage: np.dtype[np.generic]  # how the bytes are laid out (little-endian)
    is_float: bool


def _dt(name: str, numpy_name: str, is_float: bool) -> DType:
    storage = np.dtype(numpy_name).newbyteorder("<")
    return DType(name, storage.itemsize, storage, is_float)


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        _dt("F64", "f8", True),
        _dt("F32", "f4", True),
        _dt("F16", "f2", True),
        _dt("BF16", "u2", True),
        _dt("F8_E4M3", "u1", True),
        _dt("F8_E5M2", "u1", True),
        _dt("I64", "i8", False),
        _dt("I32", "i4", False),
        _dt("I16", "i2", False),
        _dt("I8", "i1", False),
        _dt("U64", "u8", False),
        _dt("U32", "u4", False),
        _dt("U16", "u2", False),
        _dt("U8", "u1", False),
        _dt("BOOL", "?", False),
    )
}


def dtype_info(name: str) -> DType | None:
    return DTYPES.get(name)


def _e4m3fn_table() -> npt.NDArray[np.float32]:
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> 3) & 0xF
    mantissa = (codes & 0x7).astype(np.float64)
    normal = (1.0 + mantissa / 8.0) * np.exp2(exponent.astype(np.float64) - 7.0)
    subnormal = (mantissa / 8.0) * np.exp2(-6.0)
    values = sign * np.where(exponent == 0, subnormal, normal)
    # E4M3FN has no infinities; only S.1111.111 is NaN.
    values[(exponent == 15) & ((codes & 0x7) == 7)] = np.nan
    return values.astype(np.float32)


def _e5m2_table() -> npt.NDArray[np.float32]:
    # E5M2 is the high byte of an IEEE half: same exponent width and bias.
    halves = (np.arange(256, dtype=np.uint16) << 8).view(np.float16)
    return halves.astype(np.float32)


_FP8_TABLES = {"F8_E4M3": _e4m3fn_table(), "F8_E5M2": _e5m2_table()}


def decode(raw: bytes, dtype: DType, shape: tuple[int, ...]) -> npt.NDArray[np.generic]:
    """Bytes in ``dtype``'s layout → a writable array of ``shape``.

    F16/F32/F64 and integers keep their type; BF16 and fp8 become float32.
    """
    stored = np.frombuffer(raw, dtype=dtype.storage).reshape(shape)
    if dtype.name == "BF16":
        widened = stored.astype(np.uint32)
        widened <<= 16  # in place: one float32-sized buffer, not two
        return widened.view(np.float32)
    table = _FP8_TABLES.get(dtype.name)
    if table is not None:
        return table[stored]
    return stored.astype(dtype.storage.newbyteorder("="), copy=True)
