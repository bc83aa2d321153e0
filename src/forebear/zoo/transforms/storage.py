"""Copies of a model that change only how its weights are stored: recasts, GPTQ int8, GGUF.

Owns writing a zoo model's state dict (HF names, numpy) as a real checkpoint
that forebear's readers (and the tools that made the format) can open:

* ``recast_fp16`` / ``recast_bf16``: one safetensors file in F16 / BF16 (BF16
  rounded to nearest even here, since numpy has no bfloat16), with config.json's
  ``torch_dtype``/``dtype`` set;
* ``int8``: a GPTQ folder (``qweight``/``qzeros``/``scales``/``g_idx`` for every
  2-D linear weight of the decoder layers, 8-bit, per group, ``checkpoint_format``
  ``gptq`` with zero points stored minus one) and ``quantization_config``; the
  other tensors in float16, as AutoGPTQ saves them;
* ``gguf_q8_0`` / ``gguf_k`` (module ``gguf_copy``, registered on import): one GGUF file
  converted the way llama.cpp's
  ``convert_hf_to_gguf.py`` would (gguf-py's own tensor names, llama's q/k row
  permutation, GPT-NeoX's fused qkv regrouped as [q; k; v], norms and biases in
  F32), quantised to Q8_0 or to Q6_K (``forebear.zoo.kquants``), with the
  tokenizer's vocabulary as ``tokenizer.ggml.*`` metadata.

Every writer is ``write(state, config, tokenizer_json, out, **params) -> Path``:
``out`` is a folder it creates; the return value is what to open (the folder,
or the ``.gguf`` file inside it). Writers are looked up by name in ``STORAGE``.
Tensors are chosen by role (``resolve``), never by name; GGUF names come from
gguf-py, not from forebear's definitions, so reading the file back checks both.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import TensorSpec, serialize_file

from forebear.architectures import ResolvedModel, Role, resolve
from forebear.errors import UnsupportedFormatError
from forebear.formats.base import Array
from forebear.formats.memory import MemoryReader
from forebear.zoo.transforms.base import State

__all__ = ["STORAGE", "bf16_bits", "gptq_quantize", "storage"]

Writer = Callable[..., Path]
STORAGE: dict[str, Writer] = {}


def storage(name: str) -> Callable[[Writer], Writer]:
    """Record a storage writer under the name manifests use for it."""

    def add(function: Writer) -> Writer:
        if name in STORAGE:
            raise ValueError(f"storage copy {name!r} registered twice")
        STORAGE[name] = function
        return function

    return add


# ---------------------------------------------------------------- folders and safetensors

_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I32": "int32"}


def _save_safetensors(tensors: Mapping[str, tuple[str, Array]], path: Path) -> None:
    """Write ``name -> (safetensors dtype, array of that dtype's bytes)``."""
    alive = {name: np.ascontiguousarray(array) for name, (_, array) in tensors.items()}
    specs = {
        name: TensorSpec(
            dtype=_SAFETENSORS_DTYPES[dtype],
            shape=alive[name].shape,
            data_ptr=alive[name].ctypes.data,
            data_len=alive[name].nbytes,
        )
        for name, (dtype, _) in tensors.items()
    }
    serialize_file(specs, str(path), metadata={"format": "pt"})


def _write_folder(
    out: Path,
    tensors: Mapping[str, tuple[str, Array]],
    config: Mapping[str, Any],
    tokenizer_json: bytes | None,
    **updates: Any,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(tensors, out / "model.safetensors")
    written = {**copy.deepcopy(dict(config)), **updates}
    (out / "config.json").write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    if tokenizer_json is not None:
        (out / "tokenizer.json").write_bytes(tokenizer_json)
    return out


def _is_float(array: Array) -> bool:
    return bool(np.issubdtype(array.dtype, np.floating))


def _stored(array: Array) -> tuple[str, Array]:
    """A non-recast tensor as safetensors stores it (float64 narrowed to float32)."""
    if array.dtype == np.float16:
        return "F16", array
    if _is_float(array):
        return "F32", array.astype(np.float32)
    if array.dtype == np.int32:
        return "I32", array
    raise UnsupportedFormatError(f"cannot store a {array.dtype} tensor in the zoo's copies")


# ---------------------------------------------------------------- recasts


def bf16_bits(array: Array) -> Array:
    """The bfloat16 bit patterns (uint16) of ``array``, rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    # Rounding could carry a NaN's mantissa into the exponent or sign; keep it a quiet NaN.
    return np.where(np.isnan(array), np.uint16(0x7FC0), rounded)


def _fp16(array: Array) -> Array:
    with np.errstate(over="ignore"):
        narrowed = array.astype(np.float16)
    if np.any(np.isinf(narrowed) & np.isfinite(array)):
        raise ValueError("a value overflows float16; recast to bf16 instead")
    return narrowed


@storage("recast_fp16")
def write_recast_fp16(
    state: State, config: Mapping[str, Any], tokenizer_json: bytes | None, out: Path
) -> Path:
    """Every float tensor as F16 (numpy's round to nearest even)."""
    tensors = {n: ("F16", _fp16(a)) if _is_float(a) else _stored(a) for n, a in state.items()}
    return _write_folder(
        out, tensors, config, tokenizer_json, torch_dtype="float16", dtype="float16"
    )


@storage("recast_bf16")
def write_recast_bf16(
    state: State, config: Mapping[str, Any], tokenizer_json: bytes | None, out: Path
) -> Path:
    """Every float tensor as BF16 (the top 16 bits of float32, rounded to nearest even)."""
    tensors = {n: ("BF16", bf16_bits(a)) if _is_float(a) else _stored(a) for n, a in state.items()}
    return _write_folder(
        out, tensors, config, tokenizer_json, torch_dtype="bfloat16", dtype="bfloat16"
    )


# ---------------------------------------------------------------- GPTQ


def _pack_rows(codes: Array, bits: int) -> Array:
    """Codes (r·k, c) into int32 words (r, c): word holds rows r·k … r·k+k-1, lowest bits first."""
    per_word = 32 // bits
    grouped = codes.astype(np.uint32).reshape(-1, per_word, codes.shape[1])
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)[None, :, None]
    words: Array = np.bitwise_or.reduce(grouped << shifts, axis=1)
    return words.view(np.int32)


def _round_up_to_fp16(values: Array) -> Array:
    """The float16 at or above each value, so a step stored in float16 never shrinks."""
    narrowed = values.astype(np.float16)
    raised: Array = np.where(
        narrowed.astype(np.float64) < values, np.nextafter(narrowed, np.float16(np.inf)), narrowed
    )
    return raised


def _group_ranges(columns: Array, g_idx: Array, sym: bool) -> tuple[Array, Array]:
    """Per group and output, GPTQ's range: [min(w, 0), max(w, 0)], or ±max|w| when symmetric."""
    groups = [columns[g_idx == g] for g in range(int(g_idx[-1]) + 1)]
    low = np.stack([np.minimum(g.min(axis=0), 0.0) for g in groups])
    high = np.stack([np.maximum(g.max(axis=0), 0.0) for g in groups])
    if sym:
        # GPTQ keeps low = 0 for an all-positive group, which clips; a true ±max never does.
        high = np.maximum(-low, high)
        low = -high
    empty = high == low
    return np.where(empty, -1.0, low), np.where(empty, 1.0, high)


def gptq_quantize(
    weight: Array, *, bits: int = 8, group_size: int = 128, sym: bool = True
) -> dict[str, Array]:
    """An ``(out, in)`` weight as GPTQ's ``qweight``, ``qzeros``, ``scales`` and ``g_idx``.

    Per output feature and group of ``group_size`` inputs (-1: one group), the
    range is cut into ``2^bits − 1`` steps; scales are float16 rounded up so no
    code clips, hence every weight is within half its group's step. Zero points
    are stored minus one (``gptq`` v1).
    """
    out_features, in_features = weight.shape
    per_word, maxq = 32 // bits, (1 << bits) - 1
    if bits not in (2, 4, 8) or not (group_size == -1 or group_size > 0):
        raise ValueError(
            f"GPTQ takes 2, 4 or 8 bits and a group size > 0 or -1, not {bits}, {group_size}"
        )
    if in_features % per_word or out_features % per_word:
        raise ValueError(f"{weight.shape} does not fill {bits}-bit words")
    g_idx = np.arange(in_features) // (in_features if group_size == -1 else group_size)
    columns = np.asarray(weight, dtype=np.float64).T  # (in, out), GPTQ's packing order
    low, high = _group_ranges(columns, g_idx, sym)
    scales = _round_up_to_fp16((high - low) / maxq)
    step = scales.astype(np.float64)
    zeros = np.full_like(step, (maxq + 1) // 2) if sym else np.rint(-low / step)
    codes = np.clip(np.rint(columns / step[g_idx]) + zeros[g_idx], 0, maxq)
    stored_zeros = (zeros.astype(np.int64) - 1) & maxq
    return {
        "qweight": _pack_rows(codes.astype(np.int64), bits),
        "qzeros": _pack_rows(stored_zeros.T, bits).T.copy(),
        "scales": scales,
        "g_idx": g_idx.astype(np.int32),
    }


def _linear_weights(resolved: ResolvedModel) -> list[str]:
    """Stored 2-D weights of decoder layers, which GPTQ packs (AutoGPTQ leaves routers float)."""
    chosen: dict[str, None] = {}
    for entry in resolved.entries:
        shape = resolved.reader.tensors()[entry.tensor].shape
        if (
            entry.layer is not None
            and len(shape) == 2
            and not entry.transposed
            and entry.expert_index is None
            and entry.role not in (Role.MOE_ROUTER, Role.MOE_SHARED_ROUTER)
            and entry.tensor.endswith(".weight")
        ):
            chosen[entry.tensor] = None
    return list(chosen)


@storage("int8")
def write_int8(
    state: State,
    config: Mapping[str, Any],
    tokenizer_json: bytes | None,
    out: Path,
    *,
    group_size: int = 128,
    sym: bool = True,
) -> Path:
    """A GPTQ 8-bit folder; weights whose sizes do not fill 32-bit words stay float16."""
    bits = 8
    resolved = resolve(MemoryReader(state), config)
    packed = {
        n for n in _linear_weights(resolved) if not any(s % (32 // bits) for s in state[n].shape)
    }
    tensors: dict[str, tuple[str, Array]] = {}
    for name, array in state.items():
        if name not in packed:
            tensors[name] = ("F16", _fp16(array)) if _is_float(array) else _stored(array)
            continue
        parts = gptq_quantize(array, bits=bits, group_size=group_size, sym=sym)
        for suffix, part in parts.items():
            dtype = "F16" if suffix == "scales" else "I32"
            tensors[f"{name.removesuffix('.weight')}.{suffix}"] = (dtype, part)
    quantization = {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": False,
        "sym": sym,
        "checkpoint_format": "gptq",
    }
    return _write_folder(
        out,
        tensors,
        config,
        tokenizer_json,
        quantization_config=quantization,
        torch_dtype="float16",
        dtype="float16",
    )


# The GGUF writers live in their own module; importing it registers them in STORAGE.
from forebear.zoo.transforms import gguf_copy  # noqa: E402, F401
