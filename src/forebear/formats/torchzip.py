"""The zip container of a ``torch.save`` checkpoint, checked from its directory records alone.

Before ``zipfile`` reads the central directory, its end record (zip64 where
present) is read here and the entry count and directory size are held to
``max_entries``. Then every entry is checked without decompressing anything:
names may not be absolute or climb out with ``..``, names may not repeat,
nothing may be encrypted, and a compressed entry may not declare far more
bytes than it stores (a zip bomb). Entries are read in bounded chunks, and a
stored entry's data offset comes from its *local* header, because torch pads
the local extra field to align data and the central directory's lengths are
not enough to find it.

This module owns the zip structure only. What the entries mean (``data.pkl``,
the storages, the small version records) belongs to
``forebear.formats.pytorch``; the pickle belongs to ``forebear.formats.unpickle``.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from forebear.errors import (
    CorruptCheckpointError,
    ForebearError,
    LimitExceededError,
    UnsupportedFormatError,
)
from forebear.sources.base import ByteSource

__all__ = [
    "HOSTILE_HINT",
    "check_directory_size",
    "data_offset",
    "directory_extent",
    "index_entries",
    "read_bounded",
    "zip_errors",
]

HOSTILE_HINT = "the file is damaged or hostile; do not use it"

# A torch central-directory record is ~100 bytes; more per allowed entry means padding or a trick.
_DIRECTORY_BYTES_PER_ENTRY = 256
# Deflate tops out near 1032:1; honest pickles and metadata compress far less than 100:1.
_MAX_COMPRESSION_RATIO = 100
_RATIO_FLOOR = 1 << 20  # below this declared size a high ratio cannot hurt
_READ_CHUNK = 1 << 20

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_END_RECORD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")


@contextmanager
def zip_errors(path: str) -> Iterator[None]:
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


def check_directory_size(source: ByteSource, max_entries: int) -> None:
    """Refuse an oversized central directory from its end record, before zipfile reads it."""
    found = directory_extent(source)
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


def directory_extent(source: ByteSource) -> tuple[int, int] | None:
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


def index_entries(
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
        _check_entry(info, entries, path)
        entries[info.filename] = info
    return entries


def _check_entry(info: zipfile.ZipInfo, seen: dict[str, zipfile.ZipInfo], path: str) -> None:
    name = info.filename
    if _escapes_archive(name):
        raise CorruptCheckpointError(
            f"zip entry name {name!r} is absolute or climbs out of the archive ('..')",
            path=path,
            hint=HOSTILE_HINT,
        )
    if name in seen:
        raise CorruptCheckpointError(
            f"zip holds two entries named {name!r}", path=path, hint=HOSTILE_HINT
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
            hint=HOSTILE_HINT,
        )


def _escapes_archive(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or name[1:2] == ":" or ".." in parts


def read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> bytes:
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


def data_offset(source: ByteSource, info: zipfile.ZipInfo, path: str) -> int:
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
            hint=HOSTILE_HINT,
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
            hint=HOSTILE_HINT,
        )
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + info.file_size > source.size:
        raise CorruptCheckpointError(
            f"tensor storage {info.filename!r} runs past the end of the file",
            path=path,
            hint="the file is truncated; download it again",
        )
    return start
