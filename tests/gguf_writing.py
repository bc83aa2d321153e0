"""Test helper: write GGUF files the way llama.cpp's converter would, with gguf-py as the oracle.

``write_gguf`` takes a Hugging Face state dict (numpy, HF names and orientation),
names the tensors with gguf-py's own ``get_tensor_name_map``, applies
llama.cpp's q/k row permutation where its converter does, and writes the file
with ``gguf.GGUFWriter``. Nothing here imports forebear, so a test that reads
these files back with forebear checks it against an independent writer.

``random_blocks`` makes raw blocks for types gguf-py can only dequantise
(K-quants, IQ*), and ``GGUFBytes`` assembles a header byte by byte for
hostile-file tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

Q = GGMLQuantizationType
QTypeChooser = Callable[[str, np.ndarray], GGMLQuantizationType]

# The architectures whose q/k rows llama.cpp's LlamaModel.permute reorders (k by n_kv heads).
LLAMA_PERMUTED = {"llama", "granite", "granitemoe", "arcee", "deci", "nanbeige", "internlm2"}
PLAIN = {Q.F32, Q.F16, Q.F64, Q.I8, Q.I16, Q.I32, Q.I64}


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's ``LlamaModel.permute``, restated in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rest = weights.shape[1:]
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *rest)
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def llama_cpp_unpermute(stored: np.ndarray, groups: int) -> np.ndarray:
    """The inverse of ``llama_cpp_permute`` for rows grouped in ``groups`` heads."""
    rest = stored.shape[1:]
    return (
        stored.reshape(groups, stored.shape[0] // groups // 2, 2, *rest)
        .swapaxes(1, 2)
        .reshape(stored.shape)
    )


def can_quantize(qtype: GGMLQuantizationType) -> bool:
    block = np.zeros(GGML_QUANT_SIZES[qtype][0], np.float32)
    try:
        gguf.quants.quantize(block, qtype)
    except NotImplementedError:
        return False
    return True


def can_dequantize(qtype: GGMLQuantizationType) -> bool:
    try:
        gguf.quants.dequantize(np.zeros(GGML_QUANT_SIZES[qtype][1], np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def random_blocks(
    qtype: GGMLQuantizationType, n_blocks: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_blocks`` random blocks of ``qtype`` (uint8, one row per block) that decode finite.

    Random scale fields are sometimes inf/NaN; such blocks are drawn again.
    """
    type_size = GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for _ in range(100):
        with np.errstate(all="ignore"):
            values = gguf.quants.dequantize(blocks, qtype)
        bad = ~np.isfinite(values).all(axis=-1)
        if not bad.any():
            return blocks
        blocks[bad] = rng.integers(0, 256, size=(int(bad.sum()), type_size), dtype=np.uint8)
    raise AssertionError(f"could not draw finite {qtype.name} blocks")


def encode(array: np.ndarray, qtype: GGMLQuantizationType, rng: np.random.Generator) -> np.ndarray:
    """``array`` stored as ``qtype``: quantised where gguf-py can, random blocks where it cannot.

    Quantised types come back as uint8 with the last axis in bytes, as GGUFWriter expects.
    """
    if qtype in PLAIN:
        dtype = {Q.F32: np.float32, Q.F16: np.float16, Q.F64: np.float64}.get(qtype)
        return array.astype(dtype) if dtype is not None else array
    if can_quantize(qtype):
        return gguf.quants.quantize(array.astype(np.float32), qtype)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = array.size // block_size
    raw = random_blocks(qtype, n_blocks, rng)
    return raw.reshape(*array.shape[:-1], array.shape[-1] // block_size * type_size)


@dataclass
class Written:
    path: Path
    names: dict[str, str]  # HF name -> GGUF name
    qtypes: dict[str, GGMLQuantizationType] = field(default_factory=dict)  # by GGUF name


def write_gguf(
    path: str | Path,
    arch: str,
    tensors: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    *,
    qtype: GGMLQuantizationType | QTypeChooser = Q.F32,
    extra_metadata: Mapping[str, Any] | None = None,
    rng: np.random.Generator | None = None,
) -> Written:
    """Write ``tensors`` (HF names, HF orientation) as llama.cpp's converter would.

    ``config`` uses HF config.json keys (hidden_size, intermediate_size,
    num_attention_heads, num_key_value_heads, num_hidden_layers,
    max_position_embeddings, vocab_size, rms_norm_eps).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    model_arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    n_layers = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(model_arch, n_layers)
    writer = gguf.GGUFWriter(str(path), arch)
    _write_config(writer, config)
    for key, value in (extra_metadata or {}).items():
        _add_value(writer, key, value)
    written = Written(Path(path), {})
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads", n_head))
    for hf_name, array in tensors.items():
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, f"gguf-py does not map {hf_name}"
        if arch in LLAMA_PERMUTED and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            array = llama_cpp_permute(array, n_head, n_head)
        if arch in LLAMA_PERMUTED and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            array = llama_cpp_permute(array, n_head, n_kv)
        chosen = qtype(gguf_name, array) if callable(qtype) else qtype
        data = encode(np.ascontiguousarray(array), chosen, rng)
        raw_dtype = chosen if data.dtype == np.uint8 else None
        writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)
        written.names[hf_name] = gguf_name
        written.qtypes[gguf_name] = chosen
    _finish(writer)
    return written


def write_raw_gguf(
    path: str | Path,
    tensors: Mapping[str, tuple[np.ndarray, GGMLQuantizationType]],
    *,
    arch: str = "llama",
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write already-encoded arrays (see ``encode``) under GGUF names, nothing permuted."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        _add_value(writer, key, value)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype if data.dtype == np.uint8 else None)
    _finish(writer)


def _write_config(writer: gguf.GGUFWriter, config: Mapping[str, Any]) -> None:
    n_head = int(config["num_attention_heads"])
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config.get("max_position_embeddings", 128)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads", n_head)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_rope_dimension_count(int(config["hidden_size"]) // n_head)
    if "vocab_size" in config:
        writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _add_value(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int) and value >= 0:
        writer.add_uint32(key, value)
    elif isinstance(value, int):
        writer.add_int32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- byte-level files for hostile tests ----------------------------------------------------


def gguf_string(text: str | bytes, *, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def kv_uint32(key: str, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<II", GGUFValueType.UINT32, value)


def kv_string(key: str, value: str, *, length: int | None = None) -> bytes:
    return (
        gguf_string(key)
        + struct.pack("<I", GGUFValueType.STRING)
        + gguf_string(value, length=length)
    )


def kv_array_header(key: str, item_type: int, count: int) -> bytes:
    return gguf_string(key) + struct.pack("<IIQ", GGUFValueType.ARRAY, item_type, count)


def tensor_info(name: str, ne: Sequence[int], qtype: int, offset: int) -> bytes:
    dims = b"".join(struct.pack("<Q", n & (2**64 - 1)) for n in ne)
    return gguf_string(name) + struct.pack("<I", len(ne)) + dims + struct.pack("<IQ", qtype, offset)


@dataclass
class GGUFBytes:
    """A GGUF file assembled field by field; every field can be made wrong on purpose."""

    kvs: list[bytes] = field(default_factory=list)
    infos: list[bytes] = field(default_factory=list)
    data: bytes = b""
    magic: bytes = b"GGUF"
    version: int = 3
    n_kv: int | None = None  # declared counts; None means the true count
    n_tensors: int | None = None
    alignment: int = 32

    def build(self) -> bytes:
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        n_tensors = len(self.infos) if self.n_tensors is None else self.n_tensors
        head = self.magic + struct.pack("<IQQ", self.version, n_tensors, n_kv)
        head += b"".join(self.kvs) + b"".join(self.infos)
        pad = -len(head) % self.alignment
        return head + b"\0" * pad + self.data
