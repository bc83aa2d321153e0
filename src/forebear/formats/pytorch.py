"""PyTorch zip checkpoints (``torch.save`` since 1.6), read without torch or running pickle code.

The zip holds ``<archive>/data.pkl`` (the object tree, unpickled against an
allowlist by ``forebear.formats.unpickle``) and one uncompressed entry per
storage, ``<archive>/data/<key>``. Tensor bytes never go through ``zipfile``:
each storage's data offset is taken from its local header
(``forebear.formats.torchzip``) and tensors are read by byte range from the
``ByteSource``. Before anything is decompressed, ``torchzip`` checks the
archive from its directory records alone; here ``data.pkl`` is then held to
``max_pickle_bytes``.

This module owns what the archive's entries mean (which folder holds
``data.pkl``, the small version records, which entry backs each storage),
tensor layouts (offsets, strides, tied storages) and finding the checkpoint in
a folder. It does not own the zip structure and its limits
(``forebear.formats.torchzip``), the pickle allowlist
(``forebear.formats.unpickle``) or the tensor-naming rule
(``forebear.formats.torch_names``).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from forebear.errors import (
    CorruptCheckpointError,
    InputNotFoundError,
    LimitExceededError,
    UnsupportedFormatError,
)
from forebear.formats.base import Array, BaseReader, CheckpointReader, Span, TensorInfo
from forebear.formats.dtypes import DTYPES, DType, decode
from forebear.formats.sharded import open_indexed
from forebear.formats.torch_names import TensorRecord, name_tensors
from forebear.formats.torchzip import (
    HOSTILE_HINT,
    check_directory_size,
    data_offset,
    index_entries,
    read_bounded,
    zip_errors,
)

# Kept importable here under its old name: tests/test_formats_pytorch.py imports it.
from forebear.formats.torchzip import directory_extent as _directory_extent  # noqa: F401
from forebear.formats.unpickle import load_data_pkl
from forebear.sources.base import ByteSource, Location
from forebear.sources.fileobj import SourceFile

__all__ = ["MAX_ENTRIES", "MAX_PICKLE_BYTES", "PyTorchReader", "open_pytorch_folder"]

MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 65_536

# How far a view may outgrow the bytes it is built from (stride-0 broadcasts, empty shapes).
_MAX_VIEW_EXCESS = 1 << 30
_SMALL_RECORD_BYTES = 256

# Small records torch.save writes beside data.pkl, kept as metadata (the id is provenance).
_SMALL_RECORDS = {
    "version": "pytorch.version",
    ".data/version": "pytorch.data_version",
    ".format_version": "pytorch.format_version",
    ".storage_alignment": "pytorch.storage_alignment",
    ".data/serialization_id": "pytorch.serialization_id",
    "byteorder": "pytorch.byteorder",
}

_LEGACY_HINT = (
    "in a trusted sandbox with torch, load it and re-save it with "
    "safetensors.torch.save_file (or torch.save, which writes the zip format)"
)
_DAMAGED_HINT = "the file is truncated or was edited; download it again"


@dataclass(frozen=True)
class _Layout:
    """Where one tensor's elements are: a storage's first byte in the file, then a strided view."""

    dtype: DType
    base: int
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


class PyTorchReader(BaseReader):
    """One ``torch.save`` zip checkpoint; tensor names follow ``forebear.formats.torch_names``."""

    def __init__(
        self,
        source: ByteSource,
        *,
        max_pickle_bytes: int = MAX_PICKLE_BYTES,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._source = source
        self._name = source.name
        self._format = "pytorch"
        try:
            self._open(max_pickle_bytes, max_entries)
        except BaseException:
            source.close()
            raise

    def _open(self, max_pickle_bytes: int, max_entries: int) -> None:
        _check_signature(self._source)
        check_directory_size(self._source, max_entries)
        with zip_errors(self._name), zipfile.ZipFile(SourceFile(self._source)) as archive:
            self._entries = index_entries(archive, self._name, max_entries)
            self._prefix = _archive_prefix(self._entries, self._name)
            pickle_info = self._entries[f"{self._prefix}/data.pkl"]
            pickled = _read_pickle(archive, pickle_info, max_pickle_bytes, self._name)
            metadata = _small_records(archive, self._entries, self._prefix, self._name)
        root = load_data_pkl(pickled, path=self._name, max_tensors=max_entries)
        # Shared sub-dicts can make the walk revisit entries; four visits per allowed entry.
        records, leaves = name_tensors(
            root, path=self._name, max_tensors=max_entries, max_visits=4 * max_entries
        )
        self._metadata = {**leaves, **metadata, "pytorch.archive": self._prefix}
        self._bases: dict[str, int] = {}
        self._layouts = {name: self._layout(name, record) for name, record in records.items()}
        self._tensors = {name: self._info(name, layout) for name, layout in self._layouts.items()}

    def _storage_base(self, key: str, nbytes: int) -> int:
        """The file offset of storage ``key``'s first byte, checked to hold ``nbytes``."""
        entry_name = f"{self._prefix}/data/{key}"
        info = self._entries.get(entry_name)
        if info is None:
            raise CorruptCheckpointError(
                f"data.pkl names storage {key!r} but the zip has no entry {entry_name!r}",
                path=self._name,
                hint=_DAMAGED_HINT,
            )
        if key not in self._bases:
            self._bases[key] = data_offset(self._source, info, self._name)
        if nbytes > info.file_size:
            raise CorruptCheckpointError(
                f"storage {key!r} is declared as {nbytes} bytes; its entry holds {info.file_size}",
                path=self._name,
                hint=_DAMAGED_HINT,
            )
        return self._bases[key]

    def _layout(self, name: str, record: TensorRecord) -> _Layout:
        assert record.dtype.forebear is not None  # the unpickler refuses undecodable types
        dtype = DTYPES[record.dtype.forebear]
        base = self._storage_base(record.storage.key, record.storage.nbytes)
        layout = _Layout(dtype, base, record.offset, record.shape, record.strides)
        end = _extent(layout.offset, layout.shape, layout.strides)
        if end * dtype.itemsize > record.storage.nbytes:
            raise CorruptCheckpointError(
                f"tensor {name!r} reaches byte {end * dtype.itemsize} of storage "
                f"{record.storage.key!r}, which holds {record.storage.nbytes}",
                path=self._name,
                hint=_DAMAGED_HINT,
            )
        # Reading materialises the view; a zero dimension still shapes numpy's allocation.
        stored = max(0, end - layout.offset) * dtype.itemsize
        logical = math.prod(max(n, 1) for n in layout.shape) * dtype.itemsize
        if logical > stored + _MAX_VIEW_EXCESS:
            raise LimitExceededError(
                f"tensor {name!r} is a {logical}-byte view of {stored} stored bytes",
                path=self._name,
                hint="materialise broadcast tensors before saving; the file may be hostile",
            )
        return layout

    def _info(self, name: str, layout: _Layout) -> TensorInfo:
        itemsize = layout.dtype.itemsize
        end = _extent(layout.offset, layout.shape, layout.strides)
        span = Span(self._name, layout.base, 0)
        if end:
            start = layout.base + layout.offset * itemsize
            span = Span(self._name, start, (end - layout.offset) * itemsize)
        return TensorInfo(name, layout.dtype.name, layout.shape, (span,))

    def read(self, name: str) -> Array:
        self.info(name)
        layout = self._layouts[name]
        return self._gather(layout, layout.offset, layout.shape)

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        self.row_range(name, start, stop)
        layout = self._layouts[name]
        offset = layout.offset + start * layout.strides[0]
        return self._gather(layout, offset, (stop - start, *layout.shape[1:]))

    def _gather(self, layout: _Layout, offset: int, shape: tuple[int, ...]) -> Array:
        """The view ``(offset, shape, layout.strides)`` read from the file as a new array."""
        dtype, itemsize = layout.dtype, layout.dtype.itemsize
        end = _extent(offset, shape, layout.strides)
        if end == 0:
            return decode(b"", dtype, shape)
        raw = self._source.read(layout.base + offset * itemsize, (end - offset) * itemsize)
        if _is_contiguous(shape, layout.strides):
            return decode(raw, dtype, shape)
        # A transposed or tied view: lay the strided elements out contiguously, then decode.
        stored = np.frombuffer(raw, dtype=dtype.storage)
        byte_strides = tuple(stride * itemsize for stride in layout.strides)
        view = as_strided(stored, shape=shape, strides=byte_strides, writeable=False)
        return decode(np.ascontiguousarray(view).tobytes(), dtype, shape)

    def close(self) -> None:
        self._source.close()


def _extent(offset: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """One past the last storage element the view touches; 0 for an empty view."""
    if any(n == 0 for n in shape):
        return 0
    return offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 1


def _is_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    expected = 1
    for n, stride in zip(reversed(shape), reversed(strides), strict=True):
        if n != 1 and stride != expected:
            return False
        expected *= n
    return True


def _check_signature(source: ByteSource) -> None:
    if source.size == 0:
        raise CorruptCheckpointError("file is empty", path=source.name, hint="download it again")
    head = source.read(0, min(4, source.size))
    if head[:1] == b"\x80":  # a pickle protocol opcode: torch.save before the zip format
        raise UnsupportedFormatError(
            "legacy (pre-1.6) PyTorch pickle format is not supported",
            path=source.name,
            hint=_LEGACY_HINT,
        )
    if head[:2] != b"PK":
        raise UnsupportedFormatError(
            f"not a PyTorch zip checkpoint (it starts with {head!r})",
            path=source.name,
            hint="check that the file is a torch.save checkpoint and that the download is complete",
        )


def _archive_prefix(entries: dict[str, zipfile.ZipInfo], path: str) -> str:
    """The archive folder that holds ``data.pkl`` (torch names it after the saved file)."""
    prefixes = sorted(name[: -len("/data.pkl")] for name in entries if name.endswith("/data.pkl"))
    prefixes = [prefix for prefix in prefixes if prefix and "/" not in prefix]
    if not prefixes:
        raise CorruptCheckpointError(
            "zip holds no <archive>/data.pkl, so it is not a PyTorch checkpoint",
            path=path,
            hint="check the file: torch.save writes data.pkl into every checkpoint",
        )
    if len(prefixes) > 1:
        raise CorruptCheckpointError(
            f"zip holds several data.pkl records ({', '.join(prefixes[:3])})",
            path=path,
            hint=HOSTILE_HINT,
        )
    prefix = prefixes[0]
    if f"{prefix}/constants.pkl" in entries:
        raise UnsupportedFormatError(
            "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint",
            path=path,
            hint="save the model's state_dict() with torch.save or safetensors instead",
        )
    return prefix


def _read_pickle(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: str) -> bytes:
    if info.file_size > limit:
        raise LimitExceededError(
            f"{info.filename} is {info.file_size} bytes, over the {limit}-byte limit for data.pkl",
            path=path,
            hint="raise max_pickle_bytes if this is a genuine checkpoint",
        )
    return read_bounded(archive, info, info.file_size)


def _small_records(
    archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], prefix: str, path: str
) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for record, key in _SMALL_RECORDS.items():
        info = entries.get(f"{prefix}/{record}")
        if info is not None and info.file_size <= _SMALL_RECORD_BYTES:
            raw = read_bounded(archive, info, info.file_size)
            metadata[key] = raw.decode("ascii", errors="replace").strip()
    byteorder = metadata.get("pytorch.byteorder", "little")
    if byteorder != "little":
        raise UnsupportedFormatError(
            f"tensor data is stored in {byteorder!r} byte order; forebear reads little-endian",
            path=path,
            hint="re-save the checkpoint on a little-endian machine, or as safetensors",
        )
    return metadata


# Files that sit beside weights in training folders but hold no weights.
_NOT_WEIGHTS = frozenset(
    {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"}
)
_INDEX = "pytorch_model.bin.index.json"
_SINGLE = "pytorch_model.bin"


def open_pytorch_folder(location: Location) -> CheckpointReader:
    """A folder's PyTorch weights: the sharded index, ``pytorch_model.bin``, or its one file."""
    if location.exists(_INDEX):
        return open_indexed(location, _INDEX, "pytorch", PyTorchReader)
    if location.exists(_SINGLE):
        return PyTorchReader(location.open(_SINGLE))
    candidates = [
        name
        for name in location.list_files()
        if name.endswith((".bin", ".pt", ".pth")) and name not in _NOT_WEIGHTS
    ]
    if len(candidates) != 1:
        found = f"found {', '.join(candidates[:5])}" if candidates else "found none"
        raise InputNotFoundError(
            f"no {_INDEX}, no {_SINGLE} and not one *.bin/*.pt/*.pth file ({found})",
            path=location.name,
            hint="name the weights file directly",
        )
    return PyTorchReader(location.open(candidates[0]))
