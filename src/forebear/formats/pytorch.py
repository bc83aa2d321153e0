"""PyTorch zip checkpoints (``torch.save`` since 1.6), read without torch or running pickle code.

The zip holds ``<archive>/data.pkl`` (the object tree, unpickled against an
allowlist by ``forebear.formats.unpickle``) and one uncompressed entry per
storage, ``<archive>/data/<key>``. Tensor bytes never go through ``zipfile``:
each storage's data offset is taken from its *local* header (torch pads the
local extra field to align data, so the central directory's lengths are not
enough) and tensors are read by byte range from the ``ByteSource``.

Before anything is decompressed the archive is checked from its directory
records alone: the entry count and directory size against ``max_entries``,
``data.pkl`` against ``max_pickle_bytes``, every compressed entry's declared
size against its compressed size (zip bombs), entry names (no ``..``, no
absolute paths), and storages must be stored uncompressed.

This module owns the zip, tensor layouts (offsets, strides, tied storages) and
finding the checkpoint in a folder; it does not own the pickle allowlist.
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from forebear.errors import (
    CorruptCheckpointError,
    ForebearError,
    InputNotFoundError,
    LimitExceededError,
    UnsupportedFormatError,
)
from forebear.formats.base import Array, BaseReader, CheckpointReader, Span, TensorInfo
from forebear.formats.dtypes import DTYPES, DType, decode
from forebear.formats.sharded import open_indexed
from forebear.formats.unpickle import TensorRecord, load_data_pkl, name_tensors
from forebear.sources.base import ByteSource, Location
from forebear.sources.fileobj import SourceFile

__all__ = ["MAX_ENTRIES", "MAX_PICKLE_BYTES", "PyTorchReader", "open_pytorch_folder"]

MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 65_536

# A torch central-directory record is ~100 bytes; more per allowed entry means padding or a trick.
_DIRECTORY_BYTES_PER_ENTRY = 256
# Deflate tops out near 1032:1; honest pickles and metadata compress far less than 100:1.
_MAX_COMPRESSION_RATIO = 100
_RATIO_FLOOR = 1 << 20  # below this declared size a high ratio cannot hurt
_READ_CHUNK = 1 << 20
# How far a view may outgrow the bytes it is built from (stride-0 broadcasts, empty shapes).
_MAX_VIEW_EXCESS = 1 << 30
_SMALL_RECORD_BYTES = 256

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_END_RECORD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")

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
_HOSTILE_HINT = "the file is damaged or hostile; do not use it"
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
    """One ``torch.save`` zip checkpoint; tensor names follow ``forebear.formats.unpickle``."""

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
        _check_directory_size(self._source, max_entries)
        with _zip_errors(self._name), zipfile.ZipFile(SourceFile(self._source)) as archive:
            self._entries = _index_entries(archive, self._name, max_entries)
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
            self._bases[key] = _data_offset(self._source, info, self._name)
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


@contextmanager
def _zip_errors(path: str) -> Iterator[None]:
    """Turns what ``zipfile`` and ``zlib`` raise on bad bytes into ``CorruptCheckpointError``."""
    try:
        yield
    except ForebearError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise CorruptCheckpointError(
            f"not a readable zip archive ({error})",
            path=path,
            hint="the file is truncated or damaged; download it again",
        ) from None
    except (struct.error, NotImplementedError, KeyError, IndexError, OverflowError) as error:
        raise CorruptCheckpointError(
            f"not a readable zip archive ({type(error).__name__}: {error})",
            path=path,
            hint="the file is truncated or damaged; download it again",
        ) from None


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


def _check_directory_size(source: ByteSource, max_entries: int) -> None:
    """Refuse an oversized central directory from its end record, before zipfile reads it."""
    found = _directory_extent(source)
    if found is None:
        return  # no end record: zipfile reports the damage
    entries, directory_bytes = found
    if entries > max_entries:
        raise LimitExceededError(
            f"zip holds {entries} entries, over the limit of {max_entries}",
            path=source.name,
            hint="raise max_entries if this is a genuine checkpoint",
        )
    limit = max_entries * _DIRECTORY_BYTES_PER_ENTRY
    if directory_bytes > limit:
        raise LimitExceededError(
            f"zip central directory is {directory_bytes} bytes, over the limit of {limit}",
            path=source.name,
            hint="raise max_entries if this is a genuine checkpoint",
        )


def _directory_extent(source: ByteSource) -> tuple[int, int] | None:
    """(entry count, central directory bytes) from the end record, zip64 where present."""
    tail_length = min(source.size, _END_RECORD.size + 0xFFFF)
    tail_start = source.size - tail_length
    tail = source.read(tail_start, tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _END_RECORD.size > len(tail):
        return None
    fields = _END_RECORD.unpack_from(tail, at)
    entries, directory_bytes, directory_offset = fields[4], fields[5], fields[6]
    if entries != 0xFFFF and 0xFFFFFFFF not in (directory_bytes, directory_offset):
        return entries, directory_bytes
    # Saturated fields defer to the zip64 record; without one, zipfile uses them as they are.
    locator_at = tail_start + at - _ZIP64_LOCATOR.size
    record_at = locator_at - _ZIP64_END_RECORD.size
    if record_at < 0:
        return entries, directory_bytes
    if _ZIP64_LOCATOR.unpack(source.read(locator_at, _ZIP64_LOCATOR.size))[0] != b"PK\x06\x07":
        return entries, directory_bytes
    record = _ZIP64_END_RECORD.unpack(source.read(record_at, _ZIP64_END_RECORD.size))
    if record[0] != b"PK\x06\x06":
        return entries, directory_bytes
    return record[7], record[8]


def _index_entries(
    archive: zipfile.ZipFile, path: str, max_entries: int
) -> dict[str, zipfile.ZipInfo]:
    """Every entry by name, after the checks that need only the central directory."""
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise LimitExceededError(
            f"zip holds {len(infos)} entries, over the limit of {max_entries}",
            path=path,
            hint="raise max_entries if this is a genuine checkpoint",
        )
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if _escapes_archive(name):
            raise CorruptCheckpointError(
                f"zip entry name {name!r} is absolute or climbs out of the archive ('..')",
                path=path,
                hint=_HOSTILE_HINT,
            )
        if name in entries:
            raise CorruptCheckpointError(
                f"zip holds two entries named {name!r}", path=path, hint=_HOSTILE_HINT
            )
        if info.flag_bits & 0x1:
            raise UnsupportedFormatError(
                f"zip entry {name!r} is encrypted",
                path=path,
                hint="torch.save never encrypts; decrypt the archive or obtain the original",
            )
        declared, compressed = info.file_size, max(info.compress_size, 1)
        if declared > _RATIO_FLOOR and declared > compressed * _MAX_COMPRESSION_RATIO:
            raise LimitExceededError(
                f"zip entry {name!r} declares {declared} bytes from {info.compress_size} "
                f"compressed (over {_MAX_COMPRESSION_RATIO}:1), a zip bomb",
                path=path,
                hint=_HOSTILE_HINT,
            )
        entries[name] = info
    return entries


def _escapes_archive(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or name[1:2] == ":" or ".." in parts


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
            hint=_HOSTILE_HINT,
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
    return _read_bounded(archive, info, info.file_size)


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> bytes:
    """An entry's bytes, decompressed in chunks so no step can exceed ``size``."""
    chunks: list[bytes] = []
    remaining = size
    with archive.open(info) as stream:
        while remaining > 0:
            chunk = stream.read(min(remaining, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    if remaining:
        raise EOFError(f"{info.filename} is {remaining} bytes shorter than its directory says")
    return b"".join(chunks)


def _small_records(
    archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], prefix: str, path: str
) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for record, key in _SMALL_RECORDS.items():
        info = entries.get(f"{prefix}/{record}")
        if info is not None and info.file_size <= _SMALL_RECORD_BYTES:
            raw = _read_bounded(archive, info, info.file_size)
            metadata[key] = raw.decode("ascii", errors="replace").strip()
    byteorder = metadata.get("pytorch.byteorder", "little")
    if byteorder != "little":
        raise UnsupportedFormatError(
            f"tensor data is stored in {byteorder!r} byte order; forebear reads little-endian",
            path=path,
            hint="re-save the checkpoint on a little-endian machine, or as safetensors",
        )
    return metadata


def _data_offset(source: ByteSource, info: zipfile.ZipInfo, path: str) -> int:
    """Where a stored entry's bytes begin in the file, from its local header."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise UnsupportedFormatError(
            f"tensor storage {info.filename!r} is compressed; torch.save stores tensor data "
            "uncompressed",
            path=path,
            hint="re-save the checkpoint with torch.save or as safetensors",
        )
    if info.file_size != info.compress_size:
        raise CorruptCheckpointError(
            f"tensor storage {info.filename!r} has different stored and declared sizes",
            path=path,
            hint=_HOSTILE_HINT,
        )
    header = source.read(info.header_offset, _LOCAL_HEADER.size)
    fields = _LOCAL_HEADER.unpack(header)
    name_length, extra_length = int(fields[9]), int(fields[10])
    name = source.read(info.header_offset + _LOCAL_HEADER.size, name_length)
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"  # as zipfile decoded it
    if fields[0] != b"PK\x03\x04" or name != info.orig_filename.encode(encoding, "replace"):
        raise CorruptCheckpointError(
            f"the local header of {info.filename!r} does not match the central directory",
            path=path,
            hint=_HOSTILE_HINT,
        )
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + info.file_size > source.size:
        raise CorruptCheckpointError(
            f"tensor storage {info.filename!r} runs past the end of the file",
            path=path,
            hint="the file is truncated; download it again",
        )
    return start


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
