"""The safetensors format: its header, parsed and validated by hand, and folders of such files.

A file is an 8-byte little-endian header length, a UTF-8 JSON header, then the
data section. The header maps tensor names to ``dtype``, ``shape`` and
``data_offsets`` (relative to the data section) plus an optional
``__metadata__`` of strings. Opening reads the header and nothing else; every
claim it makes is checked against the file before any tensor is read, so a
hostile header fails with a ``ForebearError`` instead of a wrong array or an
allocation the size of its lie.

This module owns the byte layout only. Shards listed by an index go through
``formats.sharded``; element decoding through ``formats.dtypes``; packed
quantised layouts stored in safetensors through ``formats.quantized``.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from forebear.errors import (
    CorruptCheckpointError,
    InputNotFoundError,
    LimitExceededError,
    UnsupportedFormatError,
)
from forebear.formats.base import Array, BaseReader, CheckpointReader, Span, TensorInfo
from forebear.formats.dtypes import decode, dtype_info
from forebear.formats.sharded import CompositeReader, open_indexed
from forebear.sources.base import ByteSource, Location

__all__ = [
    "INDEX_NAME",
    "MAX_HEADER_BYTES",
    "SafetensorsReader",
    "open_safetensors_folder",
]

# The reference implementation refuses headers over 100 MB; a real one is a few MB at most.
MAX_HEADER_BYTES = 100 * 1024 * 1024
INDEX_NAME = "model.safetensors.index.json"

_PREFIX_BYTES = 8
# numpy's own limits; only an empty tensor can declare more without failing the length check.
_MAX_AXES = 64
_MAX_ELEMENTS = 2**60
_HINT_REDOWNLOAD = "the file is damaged or not safetensors; download it again"


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; a header that names a tensor twice is
    # ambiguous about which bytes it means, so it is refused outright.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


class SafetensorsReader(BaseReader):
    """One ``.safetensors`` file; owns ``source`` and closes it in ``close()``."""

    def __init__(self, source: ByteSource, *, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self._source = source
        self._name = source.name
        self._format = "safetensors"
        try:
            header = self._read_header(max_header_bytes)
            self._metadata = self._parse_metadata(header.pop("__metadata__", {}))
            self._tensors = self._parse_entries(header)
        except BaseException:
            source.close()
            raise

    def _fail(self, message: str, hint: str = _HINT_REDOWNLOAD) -> CorruptCheckpointError:
        return CorruptCheckpointError(message, path=self._name, hint=hint)

    def _read_header(self, max_header_bytes: int) -> dict[str, Any]:
        size = self._source.size
        if size < _PREFIX_BYTES:
            raise self._fail(
                f"file is {size} bytes, too short for the 8-byte header length (truncated)"
            )
        (length,) = struct.unpack("<Q", self._source.read(0, _PREFIX_BYTES))
        if length > max_header_bytes:
            raise LimitExceededError(
                f"header declares {length} bytes, over the {max_header_bytes}-byte limit",
                path=self._name,
                hint="the file is not safetensors or is hostile; do not use it",
            )
        if _PREFIX_BYTES + length > size:
            raise self._fail(
                f"header declares {length} bytes but the file has only "
                f"{size - _PREFIX_BYTES} after the length (truncated)"
            )
        self._data_start = _PREFIX_BYTES + length
        return self._parse_json(self._source.read(_PREFIX_BYTES, length))

    def _parse_json(self, raw: bytes) -> dict[str, Any]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise self._fail(f"header is not UTF-8 (byte {error.start})") from None
        try:
            document = json.loads(text, object_pairs_hook=_refuse_duplicates)
        except _DuplicateKeyError as error:
            raise self._fail(f"header lists {error.key!r} twice") from None
        except RecursionError:
            raise self._fail("header JSON is nested too deeply") from None
        except ValueError as error:  # JSONDecodeError, and ints over the digit limit
            raise self._fail(f"header is not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise self._fail(f"header is a JSON {type(document).__name__}, expected an object")
        return document

    def _parse_metadata(self, value: object) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._fail("__metadata__ must map strings to strings")
        return dict(value)

    def _parse_entries(self, header: Mapping[str, Any]) -> dict[str, TensorInfo]:
        data_size = self._source.size - self._data_start
        tensors = {
            name: self._parse_entry(name, entry, data_size) for name, entry in header.items()
        }
        self._check_overlaps(tensors)
        return tensors

    def _parse_entry(self, name: str, entry: object, data_size: int) -> TensorInfo:
        if not isinstance(entry, dict):
            raise self._fail(f"header entry for {name!r} is not an object")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in entry:
                raise self._fail(f"header entry for {name!r} has no {key}")
        dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype_name, str):
            raise self._fail(f"dtype of {name!r} is not a string")
        dtype = dtype_info(dtype_name)
        if dtype is None:
            raise UnsupportedFormatError(
                f"tensor {name!r} has dtype {dtype_name!r}, which forebear cannot decode",
                path=self._name,
                hint="convert the checkpoint to F32, F16 or BF16",
            )
        if not _is_int_list(shape) or any(dim < 0 for dim in shape):
            raise self._fail(f"shape of {name!r} is not a list of non-negative integers")
        if len(shape) > _MAX_AXES or math.prod(max(dim, 1) for dim in shape) > _MAX_ELEMENTS:
            raise self._fail(f"shape of {name!r} is beyond what an array can hold")
        if not _is_int_list(offsets) or len(offsets) != 2:
            raise self._fail(f"data_offsets of {name!r} is not a pair of integers")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise self._fail(f"data_offsets of {name!r} are [{begin}, {end}], not ordered")
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise self._fail(
                f"tensor {name!r} is {dtype_name} {shape} = {expected} bytes "
                f"but data_offsets span {end - begin}"
            )
        if end > data_size:
            raise self._fail(
                f"tensor {name!r} ends at data byte {end}, beyond the {data_size}-byte data "
                "section (truncated)"
            )
        span = Span(self._name, self._data_start + begin, end - begin)
        return TensorInfo(name=name, dtype=dtype_name, shape=tuple(shape), spans=(span,))

    def _check_overlaps(self, tensors: Mapping[str, TensorInfo]) -> None:
        # Zero-length tensors own no bytes and may sit anywhere, even inside another.
        ranged = sorted(
            (info.spans[0].offset, info.spans[0].length, name)
            for name, info in tensors.items()
            if info.spans[0].length
        )
        for (offset, length, name), (next_offset, _, next_name) in itertools.pairwise(ranged):
            if offset + length > next_offset:
                raise self._fail(f"tensors {name!r} and {next_name!r} overlap in the data section")

    def read(self, name: str) -> Array:
        info = self.info(name)
        span = info.spans[0]
        return self._decode(info, self._source.read(span.offset, span.length), info.shape)

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        info = self.row_range(name, start, stop)
        stride = math.prod(info.shape[1:]) * self._itemsize(info)
        raw = self._source.read(info.spans[0].offset + start * stride, (stop - start) * stride)
        return self._decode(info, raw, (stop - start, *info.shape[1:]))

    def prefetch_rows(self, name: str, runs: Sequence[tuple[int, int]]) -> None:
        """Hint that rows ``[start, stop)`` of each run are about to be read: a source that
        can fetch ahead (``prefetch``, a remote file) fetches their bytes in one go."""
        prefetch = getattr(self._source, "prefetch", None)
        if prefetch is None:
            return
        info = self.info(name)
        stride = math.prod(info.shape[1:]) * self._itemsize(info)
        base = info.spans[0].offset
        prefetch([(base + start * stride, (stop - start) * stride) for start, stop in runs])

    @staticmethod
    def _itemsize(info: TensorInfo) -> int:
        dtype = dtype_info(info.dtype)
        assert dtype is not None  # checked when the header was parsed
        return dtype.itemsize

    @staticmethod
    def _decode(info: TensorInfo, raw: bytes, shape: tuple[int, ...]) -> Array:
        dtype = dtype_info(info.dtype)
        assert dtype is not None  # checked when the header was parsed
        return decode(raw, dtype, shape)

    def close(self) -> None:
        self._source.close()


def _is_int_list(value: object) -> bool:
    # bool is an int subclass, and JSON true must not pass as a dimension of 1.
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    )


def _index_file(location: Location, files: list[str]) -> str | None:
    indexes = [name for name in files if name.endswith(".safetensors.index.json")]
    if INDEX_NAME in indexes:
        return INDEX_NAME
    if len(indexes) > 1:
        raise UnsupportedFormatError(
            f"several safetensors index files and no {INDEX_NAME}: {', '.join(indexes)}",
            path=location.name,
            hint="name the weights file to read instead of the folder",
        )
    return indexes[0] if indexes else None


def open_safetensors_folder(location: Location) -> CheckpointReader:
    """The safetensors checkpoint in a folder: indexed shards, one file, or several files.

    An index (``model.safetensors.index.json`` first) wins; without one, a single
    ``*.safetensors`` file is read alone and several are read as one checkpoint.
    """
    files = location.list_files()
    index = _index_file(location, files)
    if index is not None:
        return open_indexed(location, index, "safetensors", SafetensorsReader)
    shards = [name for name in files if name.endswith(".safetensors")]
    if not shards:
        raise InputNotFoundError(
            "no .safetensors file in the folder",
            path=location.name,
            hint="check the folder, or convert the checkpoint to safetensors",
        )
    if len(shards) == 1:
        return SafetensorsReader(location.open(shards[0]))
    readers: list[CheckpointReader] = []
    try:
        for relpath in shards:
            readers.append(SafetensorsReader(location.open(relpath)))
        return CompositeReader(location.name, "safetensors", readers)
    except BaseException:
        for reader in readers:
            reader.close()
        raise
