"""GGUF files (llama.cpp): tensors read by byte range, every ggml type dequantised.

This module owns the GGUF reader: the tensor data addressed by byte range,
dequantisation of every ggml type the ``gguf`` package can decode, reads of a
row range that touch only the blocks those rows need, and the row order
llama.cpp's converter gives the q and k projections of llama-family models,
which it undoes so rows line up with the Hugging Face checkpoint. The header
(magic, version, metadata, tensor infos and their validation) is parsed by
``forebear.formats.gguf_header``; its public constants are re-exported here.
It uses the ``gguf`` package only for constants and for dequantising blocks;
it does not know what a tensor name means beyond GGUF's own ``blk.N.attn_q``
scheme.

Shapes are numpy order (GGUF's ``ne`` reversed). ``read`` keeps F16, F32, F64
and the integer types as stored and turns BF16 and every block-quantised type
into float32.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as ggml_quants

from forebear.errors import CorruptCheckpointError, UnsupportedFormatError
from forebear.formats.base import Array, BaseReader, Span, TensorInfo
from forebear.formats.dtypes import DTYPES, decode
from forebear.formats.gguf_header import (
    DEFAULT_ALIGNMENT,
    MAX_METADATA_BYTES,
    SUPPORTED_VERSIONS,
    GGUFHeader,
    StoredTensor,
    parse_header,
)
from forebear.sources.base import ByteSource, Location

__all__ = [
    "DEFAULT_ALIGNMENT",
    "LEGACY_PERMUTED_ARCHITECTURES",
    "MAX_METADATA_BYTES",
    "PERMUTED_ARCHITECTURES",
    "SUPPORTED_VERSIONS",
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

_QK_TENSOR = re.compile(r"blk\.(\d+)\.attn_(q|k)\.(weight|bias)")
_PLAIN_TYPES = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})


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
    stored: StoredTensor
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
            header = parse_header(source, max_metadata_bytes)
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

    def _plan(self, header: GGUFHeader, undo: bool) -> dict[str, _Entry]:
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
