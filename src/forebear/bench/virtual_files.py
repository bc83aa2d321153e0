"""Files whose bytes are computed on demand, and a ``Location`` over a folder of them.

A ``VirtualFile`` is anything with ``size`` and ``read(offset, length)``: the
loopback hub server serves it, and ``VirtualLocation`` lets forebear open a
folder of them without a server. Small files are ``MemorySource`` (from
``forebear.sources.memory``); ``VirtualSafetensors`` is a safetensors file of
any size whose header is exact and whose data bytes are generated per
64 KiB block of each tensor, so any range costs O(range) to produce and nothing
larger than a block is ever held.

A block's bytes are a pure function of (seed, the tensor's content key, its
shape, the block index): the same range reads the same bytes in any order,
split any way, in any process. The file a tensor sits in is deliberately not
part of the key, so re-sharding (or a second tensor that shares a content key,
as DeepSeek-V3's MTP layer shares the embedding) keeps the values.

Values are drawn through a 65536-entry table per ``Fill`` (uniform 16-bit draws
looked up in the quantiles of the fill's distribution), which keeps them sane
for their dtype: FP8 e4m3 codes are never NaN, scales are positive and finite.
This module owns the byte layout and the values; which tensors a model has
belongs to ``bench.virtual``.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np

from forebear.errors import InputNotFoundError, LimitExceededError
from forebear.formats.base import Array
from forebear.formats.dtypes import DTYPES, decode
from forebear.sources.base import check_range

__all__ = [
    "BLOCK_BYTES",
    "Fill",
    "TensorSpec",
    "VirtualFile",
    "VirtualLocation",
    "VirtualSafetensors",
    "VirtualSource",
]

BLOCK_BYTES = 64 * 1024
_LEVELS = 1 << 16  # one uniform uint16 per element picks its value from the fill's table
# The safetensors library writes tensors sorted by dtype, larger types first (its Dtype
# enum order, descending), then by name; these are the ranks of the dtypes written here.
_DTYPE_RANK = {"F32": 0, "BF16": 1, "F8_E4M3": 2}


@runtime_checkable
class VirtualFile(Protocol):
    """A file that exists only as a size and a way to read any byte range of it."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class Fill(Enum):
    """A tensor's value distribution; the dtype follows from it."""

    FP8_WEIGHT = "fp8_weight"  # e4m3 codes ~ N(0, 4²) rounded to the nearest code, never NaN
    BLOCK_SCALE = "block_scale"  # F32 log-uniform in [1e-3, 1e-2]: weights ≈ N(0, 0.004…0.04²)
    BF16_WEIGHT = "bf16_weight"  # N(0, 0.02²)
    NORM = "norm"  # BF16 N(1, 0.05²): RMSNorm scales near one
    ROUTER_BIAS = "router_bias"  # F32 N(0, 0.01²): DeepSeek-V3's e_score_correction_bias

    @property
    def dtype(self) -> str:
        return _FILL_DTYPES[self]

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize


_FILL_DTYPES = {
    Fill.FP8_WEIGHT: "F8_E4M3",
    Fill.BLOCK_SCALE: "F32",
    Fill.BF16_WEIGHT: "BF16",
    Fill.NORM: "BF16",
    Fill.ROUTER_BIAS: "F32",
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a virtual file; ``content`` keys its values (default: its name)."""

    name: str
    shape: tuple[int, ...]
    fill: Fill
    content: str = ""
    # Derived once: a 690 GB repository lays out 91,991 of these several times over.
    dtype: str = field(init=False, compare=False)
    nbytes: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", self.fill.dtype)
        object.__setattr__(self, "nbytes", math.prod(self.shape) * self.fill.itemsize)

    @property
    def key(self) -> str:
        return self.content or self.name


def _normal_quantiles(mean: float, std: float) -> Array:
    """The ``_LEVELS`` mid-quantiles of N(mean, std²): a table that turns uniform into normal."""
    unit = statistics.NormalDist()
    z = np.array([unit.inv_cdf((k + 0.5) / _LEVELS) for k in range(_LEVELS)])
    return mean + std * z


def _bf16_bits(values: Array) -> Array:
    """float values → bfloat16 bit patterns, rounded to nearest even."""
    bits = values.astype("<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2")


def _fp8_codes(std: float) -> Array:
    """e4m3 codes whose values are N(0, std²) rounded to the nearest code (NaN codes excluded)."""
    values = decode(bytes(range(256)), DTYPES["F8_E4M3"], (256,)).astype(np.float64)
    # NaN (0x7F, 0xFF) never drawn; -0 (0x80) left out so zero has one code.
    codes = np.array([c for c in range(256) if not np.isnan(values[c]) and c != 0x80])
    order = codes[np.argsort(values[codes], kind="stable")]
    ordered = values[order]
    edges = (ordered[1:] + ordered[:-1]) / 2
    cdf = np.array([0.5 * (1 + math.erf(e / (std * math.sqrt(2)))) for e in edges])
    picks = np.searchsorted(cdf, (np.arange(_LEVELS) + 0.5) / _LEVELS)
    return order[picks].astype("<u1")


@functools.cache
def _table(fill: Fill) -> Array:
    """The 65536 stored element values a uniform uint16 indexes for ``fill`` (read-only)."""
    if fill is Fill.FP8_WEIGHT:
        table = _fp8_codes(4.0)
    elif fill is Fill.BLOCK_SCALE:
        exponents = -3 + (np.arange(_LEVELS) + 0.5) / _LEVELS
        table = (10.0**exponents).astype("<f4").view("<u4")
    elif fill is Fill.BF16_WEIGHT:
        table = _bf16_bits(_normal_quantiles(0.0, 0.02))
    elif fill is Fill.NORM:
        table = _bf16_bits(_normal_quantiles(1.0, 0.05))
    else:
        table = _normal_quantiles(0.0, 0.01).astype("<f4").view("<u4")
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=64)
def _block(seed: int, spec: TensorSpec, index: int) -> Array:
    """Bytes ``[index * BLOCK_BYTES, …)`` of ``spec``'s data (read-only uint8)."""
    per_block = BLOCK_BYTES // spec.fill.itemsize
    count = min(per_block, math.prod(spec.shape) - index * per_block)
    material = f"{seed}\0{spec.key}\0{spec.shape}\0{spec.fill.name}\0{index}".encode()
    key = int.from_bytes(hashlib.blake2b(material, digest_size=16).digest(), "little")
    rng = np.random.Generator(np.random.Philox(key=key))
    draws = np.frombuffer(rng.bytes(2 * count), dtype="<u2")
    data: Array = _table(spec.fill).take(draws).view(np.uint8)
    data.setflags(write=False)
    return data


def safetensors_header(specs: Sequence[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length and JSON header the safetensors library writes for ``specs`` in
    order: compact JSON, ``__metadata__`` first, spaces to an 8-byte boundary."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for spec in specs:
        header[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


@dataclass(frozen=True)
class _Placed:
    spec: TensorSpec
    start: int  # absolute offset in the file


class VirtualSafetensors:
    """A safetensors file of ``tensors`` whose data is generated from ``seed`` on demand.

    Tensors are laid out as the safetensors library lays them out (dtype rank, then
    name), so the bytes equal what it would write for the same arrays.
    """

    def __init__(
        self,
        tensors: Sequence[TensorSpec],
        *,
        seed: int = 0,
        name: str = "<virtual>.safetensors",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        ordered = sorted(tensors, key=lambda s: (_DTYPE_RANK.get(s.dtype, -1), s.name))
        self._name = name
        self._seed = seed
        self._header = safetensors_header(
            ordered, {"format": "pt"} if metadata is None else metadata
        )
        placed, offset = [], len(self._header)
        for spec in ordered:
            placed.append(_Placed(spec, offset))
            offset += spec.nbytes
        self._placed = [p for p in placed if p.spec.nbytes]
        self._starts = [p.start for p in self._placed]
        self._size = offset

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._size

    @property
    def header(self) -> bytes:
        return self._header

    @property
    def etag(self) -> str:
        """A stable digest of what the file holds (seed and header: they fix every byte),
        for a server to send where a real hub sends the file's sha256."""
        return hashlib.sha256(b"%d\0" % self._seed + self._header).hexdigest()

    def tensors(self) -> list[TensorSpec]:
        """The tensors, in file order (zero-size tensors left out)."""
        return [p.spec for p in self._placed]

    def read(self, offset: int, length: int) -> bytes:
        check_range(self._name, self._size, offset, length)
        out = np.empty(length, dtype=np.uint8)
        end = offset + length
        head = min(end, len(self._header))
        if offset < head:
            out[: head - offset] = np.frombuffer(self._header[offset:head], dtype=np.uint8)
        position = max(offset, len(self._header))
        index = bisect.bisect_right(self._starts, position) - 1
        while position < end:
            placed = self._placed[index]
            stop = min(end, placed.start + placed.spec.nbytes)
            self._fill(
                placed, position - placed.start, stop - placed.start, out[position - offset :]
            )
            position, index = stop, index + 1
        return out.tobytes()

    def _fill(self, placed: _Placed, low: int, high: int, out: Array) -> None:
        """Write bytes ``[low, high)`` of one tensor's data to the front of ``out``."""
        written = 0
        for index in range(low // BLOCK_BYTES, (high - 1) // BLOCK_BYTES + 1):
            base = index * BLOCK_BYTES
            data = _block(self._seed, placed.spec, index)
            piece = data[max(low, base) - base : min(high, base + len(data)) - base]
            out[written : written + len(piece)] = piece
            written += len(piece)

    def close(self) -> None:
        """Nothing to release."""


class VirtualSource:
    """A ``VirtualFile`` seen as a ``ByteSource`` named ``name``."""

    def __init__(self, file: VirtualFile, name: str) -> None:
        self._file = file
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._file.size

    def read(self, offset: int, length: int) -> bytes:
        check_range(self._name, self._file.size, offset, length)
        return self._file.read(offset, length)

    def close(self) -> None:
        """Nothing to release: the file belongs to its folder."""


class VirtualLocation:
    """A folder of virtual files behind ``Location``; paths are the dictionary's keys."""

    def __init__(self, files: Mapping[str, VirtualFile], name: str = "virtual") -> None:
        self._files = dict(files)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def files(self) -> Mapping[str, VirtualFile]:
        return self._files

    def exists(self, relpath: str) -> bool:
        return relpath in self._files

    def list_files(self) -> list[str]:
        return sorted(p for p in self._files if "/" not in p)

    def _file(self, relpath: str) -> VirtualFile:
        found = self._files.get(relpath)
        if found is None:
            raise InputNotFoundError(
                f"{relpath} is missing from the model folder",
                path=self._name,
                hint="the virtual repository has no such file; check the name",
            )
        return found

    def open(self, relpath: str) -> VirtualSource:
        return VirtualSource(self._file(relpath), f"{self._name}/{relpath}")

    def read_bytes(self, relpath: str, limit: int) -> bytes:
        found = self._file(relpath)
        if found.size > limit:
            raise LimitExceededError(
                f"{relpath} is {found.size} bytes, over the {limit}-byte limit "
                "for this kind of file",
                path=self._name,
                hint="the file is not what its name says",
            )
        return found.read(0, found.size)
