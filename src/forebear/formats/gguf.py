"""GGUF files (llama.cpp): the header parsed from ranged reads, every ggml type dequantised.

This module owns the GGUF layout: the header (magic, version, key/value
metadata, tensor infos) read through a ``ByteSource`` without trusting any
declared count, the tensor data addressed by byte range, and the row order
llama.cpp's converter gives the q and k projections of llama-family models,
which it undoes so rows line up with the Hugging Face checkpoint. It uses the
``gguf`` package only for constants and for dequantising blocks; it does not
know what a tensor name means beyond GGUF's own ``blk.N.attn_q`` scheme.

Shapes are numpy order (GGUF's ``ne`` reversed). ``read`` keeps F16, F32, F64
and the integer types as stored and turns BF16 and every block-quantised type
into float32.
"""

from __future__ import annotations

import functools
import itertools
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf import quants as ggml_quants

from forebear.errors import CorruptCheckpointError, LimitExceededError, UnsupportedFormatError
from forebear.formats.base import Array, BaseReader, Span, TensorInfo
from forebear.formats.dtypes import DTYPES, decode
from forebear.sources.base import ByteSource, Location

__all__ = [
    "LEGACY_PERMUTED_ARCHITECTURES",
    "MAX_METADATA_BYTES",
    "PERMUTED_ARCHITECTURES",
    "GGUFCheckpointReader",
    "GGUFReader",
    "can_dequantize",
    "find_gguf",
    "hf_row_order",
    "open_gguf_file",
]

# general.architecture values whose blk.N.attn_q / attn_k weights and biases llama.cpp's
# convert_hf_to_gguf.py stores with LlamaModel.permute: per group of rows,
# reshape(groups, 2, rows // groups // 2, ...).swapaxes(1, 2), q grouped by head_count and
# k by head_count_kv. "llama" covers LlamaForCausalLM, Mistral, Mixtral, Llava's text model
# and InternLM3; "mistral3" covers Ministral3 / Mistral3 converted from HF. Files converted
# from Mistral's own consolidated format skip the permutation because those weights are
# already in this order, so un-permuting still yields HF order. arcee, granite, granitemoe,
# granitehybrid and nanbeige inherit LlamaModel with undo_permute on; deci, internlm2
# (after splitting wqkv) and llada call the same permute themselves.
# Left out because their converters keep HF's order: llama4, apertus, smollm3, afmoe and
# cogvlm (undo_permute off or bypassed), and every non-llama family (qwen, gemma, phi …).
PERMUTED_ARCHITECTURES: frozenset[str] = frozenset(
    {
        "llama",
        "mistral3",
        "arcee",
        "deci",
        "granite",
        "granitemoe",
        "granitehybrid",
        "internlm2",
        "llada",
        "nanbeige",
    }
)
# Converters that use the older _reverse_hf_permute, which groups k's rows by
# head_count // head_count_kv instead of head_count_kv when the two counts differ.
LEGACY_PERMUTED_ARCHITECTURES: frozenset[str] = frozenset({"baichuan", "minicpm"})

MAX_METADATA_BYTES = 64 * 1024 * 1024  # header bytes: big vocabularies take a few MiB
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_MAGIC = b"GGUF"
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 8  # arrays of arrays; real files use none
_WINDOW = 1 << 20  # the header is fetched in reads of this size, not field by field
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, value type, one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset
_QK_TENSOR = re.compile(r"blk\.(\d+)\.attn_(q|k)\.(weight|bias)")

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
_PLAIN_TYPES = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})
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
class _Stored:
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
class _Header:
    version: int
    metadata: dict[str, Any]
    alignment: int
    data_offset: int
    tensors: list[_Stored]


def _parse_header(source: ByteSource, limit: int) -> _Header:
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
    return _Header(version, metadata, alignment, data_offset, tensors)


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


def _tensor_info(cursor: _Cursor, index: int, alignment: int) -> _Stored:
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
    return _Stored(name, ne, qtype, offset)


def _check_ranges(tensors: list[_Stored], data_offset: int, source: ByteSource) -> None:
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


def hf_row_order(n_rows: int, groups: int) -> npt.NDArray[np.intp]:
    """For each Hugging Face row, the stored row that holds it after ``LlamaModel.permute``.

    The converter moved row ``a * d/2 + j`` of each group of ``d`` rows to ``2 * j + a``.
    """
    size = n_rows // groups
    rows = np.arange(n_rows, dtype=np.intp)
    group, within = np.divmod(rows, size)
    half, position = np.divmod(within, size // 2)
    order: npt.NDArray[np.intp] = group * size + 2 * position + half
    return order


def _head_count(metadata: Mapping[str, Any], key: str, layer: int) -> int | None:
    value = metadata.get(key)
    if isinstance(value, list):  # per-layer counts (deci, granitehybrid)
        value = value[layer] if layer < len(value) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _qk_groups(arch: str, metadata: Mapping[str, Any], name: str, path: str) -> int | None:
    """How many head groups the converter permuted ``name`` by; None when it left it alone."""
    legacy = arch in LEGACY_PERMUTED_ARCHITECTURES
    match = _QK_TENSOR.fullmatch(name)
    if match is None or not (legacy or arch in PERMUTED_ARCHITECTURES):
        return None
    layer = int(match.group(1))
    n_head = _head_count(metadata, f"{arch}.attention.head_count", layer)
    n_kv = _head_count(metadata, f"{arch}.attention.head_count_kv", layer)
    if n_head is None or n_head <= 0:
        raise CorruptCheckpointError(
            f"{arch}.attention.head_count is missing for layer {layer}, so the rows of "
            f"{name!r} cannot be put back in Hugging Face order",
            path=path,
            hint="pass undo_qk_permutation=False to read the rows as stored",
        )
    if match.group(2) == "q" or n_kv is None or n_kv == n_head:
        return n_head
    return n_head // n_kv if legacy else n_kv


@functools.cache
def can_dequantize(qtype: GGMLQuantizationType) -> bool:
    """Whether forebear can decode ``qtype`` (plain types, or blocks gguf-py dequantises)."""
    if qtype.name in _PLAIN_TYPES:
        return True
    try:
        ggml_quants.dequantize(np.zeros(GGML_QUANT_SIZES[qtype][1], np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _output_dtype(qtype: GGMLQuantizationType) -> np.dtype[Any]:
    plain = DTYPES.get(qtype.name)
    if plain is None or qtype.name == "BF16":
        return np.dtype(np.float32)
    return plain.storage.newbyteorder("=")


@dataclass(frozen=True)
class _Entry:
    stored: _Stored
    start: int  # absolute byte offset
    shape: tuple[int, ...]
    row_order: npt.NDArray[np.intp] | None  # HF row -> stored row, when un-permuting


class GGUFReader(BaseReader):
    """One GGUF file; takes ownership of ``source``.

    ``unpermuted`` names the tensors whose rows were put back in Hugging Face
    order (see ``PERMUTED_ARCHITECTURES``); ``undo_qk_permutation=False`` reads
    every tensor as stored.
    """

    def __init__(
        self,
        source: ByteSource,
        *,
        undo_qk_permutation: bool = True,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> None:
        self._source = source
        self._name = source.name
        self._format = "gguf"
        try:
            header = _parse_header(source, max_metadata_bytes)
            self._entries = self._plan(header, undo_qk_permutation)
        except BaseException:
            source.close()
            raise
        self._header = header
        self._metadata = header.metadata
        self._tensors = {
            name: TensorInfo(
                name=name,
                dtype=entry.stored.qtype.name,
                shape=entry.shape,
                spans=(Span(source.name, entry.start, entry.stored.nbytes),),
            )
            for name, entry in self._entries.items()
        }

    def _plan(self, header: _Header, undo: bool) -> dict[str, _Entry]:
        arch = header.metadata.get("general.architecture")
        entries: dict[str, _Entry] = {}
        for stored in header.tensors:
            shape = tuple(reversed(stored.ne))
            groups = (
                _qk_groups(arch, header.metadata, stored.name, self._name)
                if undo and isinstance(arch, str)
                else None
            )
            order = None if groups is None else self._row_order(stored.name, shape[0], groups)
            entries[stored.name] = _Entry(stored, header.data_offset + stored.offset, shape, order)
        return entries

    def _row_order(self, name: str, n_rows: int, groups: int) -> npt.NDArray[np.intp]:
        if groups <= 0 or n_rows % groups or (n_rows // groups) % 2:
            raise CorruptCheckpointError(
                f"tensor {name!r} has {n_rows} rows, which do not split into {groups} heads "
                "of an even size",
                path=self._name,
                hint="the head counts in the metadata are wrong; pass undo_qk_permutation=False",
            )
        return hf_row_order(n_rows, groups)

    @property
    def version(self) -> int:
        return self._header.version

    @property
    def alignment(self) -> int:
        return self._header.alignment

    @property
    def data_offset(self) -> int:
        return self._header.data_offset

    @property
    def architecture(self) -> str | None:
        arch = self._metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def unpermuted(self) -> frozenset[str]:
        return frozenset(n for n, e in self._entries.items() if e.row_order is not None)

    def read(self, name: str) -> Array:
        self.info(name)
        entry = self._entries[name]
        values = self._decode(entry, 0, entry.stored.numel).reshape(entry.shape)
        return values if entry.row_order is None else values[entry.row_order]

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        self.row_range(name, start, stop)
        entry = self._entries[name]
        if entry.row_order is None:
            return self._stored_rows(entry, start, stop)
        wanted = entry.row_order[start:stop]
        needed = np.unique(wanted)
        # Consecutive stored rows are fetched in one read; a whole head is one run.
        breaks = np.flatnonzero(np.diff(needed) != 1) + 1
        runs = np.split(needed, breaks) if needed.size else []
        parts = [self._stored_rows(entry, int(run[0]), int(run[-1]) + 1) for run in runs]
        if not parts:
            return self._stored_rows(entry, 0, 0)
        gathered = np.concatenate(parts)
        return gathered[np.searchsorted(needed, wanted)]

    def _stored_rows(self, entry: _Entry, start: int, stop: int) -> Array:
        row_size = int(np.prod(entry.shape[1:], dtype=np.int64))
        values = self._decode(entry, start * row_size, stop * row_size)
        return values.reshape((stop - start, *entry.shape[1:]))

    def _decode(self, entry: _Entry, first: int, last: int) -> Array:
        """Values ``[first, last)`` of the flat tensor, reading only the blocks that hold them."""
        qtype = entry.stored.qtype
        if not can_dequantize(qtype):
            raise UnsupportedFormatError(
                f"tensor {entry.stored.name!r} is stored as {qtype.name}, which the gguf "
                "package cannot dequantise",
                path=self._name,
                hint="re-quantise the model to another type, or update the gguf package",
            )
        if last == first:
            return np.empty(0, dtype=_output_dtype(qtype))
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        block_first, block_last = first // block_size, -(-last // block_size)
        raw = self._source.read(
            entry.start + block_first * type_size, (block_last - block_first) * type_size
        )
        plain = DTYPES.get(qtype.name)
        if plain is not None:
            return decode(raw, plain, (last - first,))
        blocks = ggml_quants.dequantize(np.frombuffer(raw, dtype=np.uint8), qtype)
        skip = first - block_first * block_size
        return np.array(blocks.reshape(-1)[skip : skip + last - first], dtype=np.float32)

    def close(self) -> None:
        self._source.close()


GGUFCheckpointReader = GGUFReader


def open_gguf_file(
    source: ByteSource,
    *,
    undo_qk_permutation: bool = True,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
) -> GGUFReader:
    """The reader for one GGUF file; takes ownership of ``source``."""
    return GGUFReader(
        source, undo_qk_permutation=undo_qk_permutation, max_metadata_bytes=max_metadata_bytes
    )


def find_gguf(location: Location) -> list[str]:
    """The ``.gguf`` files directly in ``location``, sorted."""
    return [f for f in location.list_files() if f.lower().endswith(".gguf")]
