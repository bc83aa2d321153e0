"""The GGUF header: magic, version, key/value metadata and tensor infos, read from a ``ByteSource``.

This module owns parsing and validating the header without trusting any
declared count: every count is checked against the bytes left in the file and
the metadata limit before anything that size is allocated, tensor infos are
checked for shape, ggml type, alignment, overlap and file bounds. It produces a
``GGUFHeader`` holding the metadata and one ``StoredTensor`` per tensor (GGUF
``ne`` order, data offset relative to the data section). It does not read
tensor data, dequantise, or reorder rows; ``forebear.formats.gguf`` does that.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from forebear.errors import CorruptCheckpointError, LimitExceededError, UnsupportedFormatError
from forebear.sources.base import ByteSource

__all__ = [
    "DEFAULT_ALIGNMENT",
    "MAX_METADATA_BYTES",
    "SUPPORTED_VERSIONS",
    "GGUFHeader",
    "StoredTensor",
    "parse_header",
]

MAX_METADATA_BYTES = 64 * 1024 * 1024  # header bytes: big vocabularies take a few MiB
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_MAGIC = b"GGUF"
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 8  # arrays of arrays; real files use none
_WINDOW = 1 << 20  # the header is fetched in reads of this size, not field by field
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, value type, one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset

_SCALARS: dict[int, np.dtype[Any]] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("<u1"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
# The smallest encoding of a string (its length) and of an array (item type and count).
_MIN_VALUE_BYTES: dict[int, int] = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 4 + 8}
_TRUNCATED_HINT = "the file is truncated; download it again"
_CORRUPT_HINT = "the file is damaged or was not written by a GGUF writer; download it again"


class _Cursor:
    """Sequential header reads through a window, checked against the file and the limit."""

    def __init__(self, source: ByteSource, limit: int) -> None:
        self._source = source
        self._limit = limit
        self.pos = 0
        self._window = b""
        self._window_start = 0

    @property
    def path(self) -> str:
        return self._source.name

    @property
    def remaining(self) -> int:
        return self._source.size - self.pos

    def require(self, nbytes: int, what: str) -> None:
        """Refuse ``nbytes`` more header bytes before anything that size is allocated."""
        if nbytes > self.remaining:
            raise CorruptCheckpointError(
                f"{what} needs {nbytes} bytes but only {self.remaining} remain in the file",
                path=self._source.name,
                hint=_TRUNCATED_HINT,
            )
        if self.pos + nbytes > self._limit:
            raise LimitExceededError(
                f"the GGUF header passes the {self._limit}-byte metadata limit in {what}",
                path=self._source.name,
                hint="raise max_metadata_bytes if you trust this file",
            )

    def take(self, nbytes: int, what: str) -> bytes:
        self.require(nbytes, what)
        offset = self.pos - self._window_start
        if offset + nbytes > len(self._window):
            length = min(max(nbytes, _WINDOW), self.remaining)
            self._window = self._source.read(self.pos, length)
            self._window_start, offset = self.pos, 0
        self.pos += nbytes
        return self._window[offset : offset + nbytes]

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def text(self, what: str, *, strict: bool) -> str:
        raw = self.take(self.u64(f"the length of {what}"), what)
        try:
            # Token strings may hold stray bytes; keep them losslessly rather than refuse.
            return raw.decode("utf-8", "strict" if strict else "surrogateescape")
        except UnicodeDecodeError:
            raise CorruptCheckpointError(
                f"{what} is not valid UTF-8", path=self._source.name, hint=_CORRUPT_HINT
            ) from None


def _value(cursor: _Cursor, vtype: int, what: str, depth: int = 0) -> Any:
    _check_value_type(cursor, vtype, what, depth)
    scalar = _SCALARS.get(vtype)
    if scalar is not None:
        item = np.frombuffer(cursor.take(scalar.itemsize, what), dtype=scalar)[0].item()
        return bool(item) if vtype == GGUFValueType.BOOL else item
    if vtype == GGUFValueType.STRING:
        return cursor.text(what, strict=False)
    return _array(cursor, what, depth)


def _check_value_type(cursor: _Cursor, vtype: int, what: str, depth: int) -> None:
    if vtype in _SCALARS or vtype == GGUFValueType.STRING:
        return
    if vtype != GGUFValueType.ARRAY:
        message = f"{what} has unknown value type {vtype}"
    elif depth >= _MAX_NESTING:
        message = f"{what} nests arrays deeper than {_MAX_NESTING} levels"
    else:
        return
    raise CorruptCheckpointError(message, path=cursor.path, hint=_CORRUPT_HINT)


def _array(cursor: _Cursor, what: str, depth: int) -> list[Any]:
    item_type = cursor.u32(f"the item type of {what}")
    _check_value_type(cursor, item_type, f"{what}[]", depth + 1)
    count = cursor.u64(f"the item count of {what}")
    scalar = _SCALARS.get(item_type)
    smallest = scalar.itemsize if scalar is not None else _MIN_VALUE_BYTES[item_type]
    cursor.require(count * smallest, f"{what} ({count} items)")
    if scalar is None:
        return [_value(cursor, item_type, f"{what}[{i}]", depth + 1) for i in range(count)]
    items = np.frombuffer(cursor.take(count * scalar.itemsize, what), dtype=scalar)
    if item_type == GGUFValueType.BOOL:
        return [bool(x) for x in items]
    values: list[Any] = items.tolist()
    return values


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as the header declares it."""

    name: str
    ne: tuple[int, ...]
    qtype: GGMLQuantizationType
    offset: int  # relative to the start of the data section

    @property
    def numel(self) -> int:
        return int(np.prod(self.ne, dtype=object))

    @property
    def nbytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.numel // block_size * type_size


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    alignment: int
    data_offset: int
    tensors: list[StoredTensor]


def parse_header(source: ByteSource, limit: int) -> GGUFHeader:
    cursor = _Cursor(source, limit)
    magic = cursor.take(4, "the magic bytes")
    if magic != _MAGIC:
        raise UnsupportedFormatError(
            "not a GGUF file (bad magic)",
            path=source.name,
            hint=f"it starts with {magic!r}, not b'GGUF'; name the .gguf weights file",
        )
    version = cursor.u32("the version")
    _check_version(version, source.name)
    n_tensors = cursor.u64("the tensor count")
    n_kv = cursor.u64("the key/value count")
    cursor.require(n_kv * _MIN_KV_BYTES, f"{n_kv} key/value pairs")
    cursor.require(n_tensors * _MIN_TENSOR_INFO_BYTES, f"{n_tensors} tensor infos")
    metadata: dict[str, Any] = {}
    for index in range(n_kv):
        key = cursor.text(f"metadata key #{index}", strict=True)
        if key in metadata:
            raise CorruptCheckpointError(
                f"metadata key {key!r} appears twice", path=source.name, hint=_CORRUPT_HINT
            )
        metadata[key] = _value(cursor, cursor.u32(f"the type of {key}"), f"metadata {key!r}")
    alignment = _alignment(metadata, source.name)
    cursor.require(n_tensors * _MIN_TENSOR_INFO_BYTES, f"{n_tensors} tensor infos")
    tensors = [_tensor_info(cursor, index, alignment) for index in range(n_tensors)]
    data_offset = -(-cursor.pos // alignment) * alignment
    _check_ranges(tensors, data_offset, source)
    return GGUFHeader(version, metadata, alignment, data_offset, tensors)


def _check_version(version: int, path: str) -> None:
    if version in SUPPORTED_VERSIONS:
        return
    if version & 0xFFFF == 0 and int.from_bytes(version.to_bytes(4, "little"), "big") < 0x10000:
        raise UnsupportedFormatError(
            "big-endian GGUF files are not supported",
            path=path,
            hint="convert the model again without --bigendian",
        )
    raise UnsupportedFormatError(
        f"GGUF version {version} is not supported (forebear reads versions 2 and 3)",
        path=path,
        hint="convert the model again with a current llama.cpp",
    )


def _alignment(metadata: Mapping[str, Any], path: str) -> int:
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise CorruptCheckpointError(
            f"general.alignment must be a positive power of two, got {value!r}",
            path=path,
            hint=_CORRUPT_HINT,
        )
    return value


def _tensor_info(cursor: _Cursor, index: int, alignment: int) -> StoredTensor:
    path = cursor.path
    name = cursor.text(f"the name of tensor #{index}", strict=True)
    n_dims = cursor.u32(f"the dimension count of {name!r}")
    if not 0 < n_dims <= _MAX_DIMS:
        raise CorruptCheckpointError(
            f"tensor {name!r} has {n_dims} dimensions; GGUF allows 1 to {_MAX_DIMS}",
            path=path,
            hint=_CORRUPT_HINT,
        )
    ne = tuple(cursor.u64(f"the shape of {name!r}") for _ in range(n_dims))
    signed = [n - (1 << 64) if n >= 1 << 63 else n for n in ne]
    if any(n <= 0 for n in signed):
        raise CorruptCheckpointError(
            f"tensor {name!r} has dimensions {signed}; every dimension must be positive",
            path=path,
            hint=_CORRUPT_HINT,
        )
    code = cursor.u32(f"the type of {name!r}")
    try:
        qtype = GGMLQuantizationType(code)
    except ValueError:
        raise UnsupportedFormatError(
            f"tensor {name!r} has unknown ggml type {code}",
            path=path,
            hint="update forebear and the gguf package; this type is newer than they are",
        ) from None
    block_size = GGML_QUANT_SIZES[qtype][0]
    if ne[0] % block_size:
        raise CorruptCheckpointError(
            f"tensor {name!r} has rows of {ne[0]} values, not a multiple of the "
            f"{qtype.name} block size {block_size}",
            path=path,
            hint=_CORRUPT_HINT,
        )
    offset = cursor.u64(f"the data offset of {name!r}")
    if offset % alignment:
        raise CorruptCheckpointError(
            f"tensor {name!r} starts at data offset {offset}, not a multiple of the "
            f"alignment {alignment}",
            path=path,
            hint=_CORRUPT_HINT,
        )
    return StoredTensor(name, ne, qtype, offset)


def _check_ranges(tensors: list[StoredTensor], data_offset: int, source: ByteSource) -> None:
    seen: set[str] = set()
    for tensor in tensors:
        if tensor.name in seen:
            raise CorruptCheckpointError(
                f"tensor {tensor.name!r} appears twice in the header",
                path=source.name,
                hint=_CORRUPT_HINT,
            )
        seen.add(tensor.name)
        end = data_offset + tensor.offset + tensor.nbytes
        if end > source.size:
            raise CorruptCheckpointError(
                f"tensor {tensor.name!r} has data at bytes {data_offset + tensor.offset}..{end}, "
                f"beyond the end of the file ({source.size} bytes)",
                path=source.name,
                hint=_TRUNCATED_HINT,
            )
    ordered = sorted(tensors, key=lambda t: t.offset)
    for first, second in itertools.pairwise(ordered):
        if first.offset + first.nbytes > second.offset:
            raise CorruptCheckpointError(
                f"tensors {first.name!r} and {second.name!r} overlap (data offsets "
                f"{first.offset}..{first.offset + first.nbytes} and {second.offset}..)",
                path=source.name,
                hint=_CORRUPT_HINT,
            )
