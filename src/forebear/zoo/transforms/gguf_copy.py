"""GGUF copies of zoo models, converted the way llama.cpp's ``convert_hf_to_gguf.py`` would.

gguf-py's own tensor names, llama's q/k row permutation, GPT-NeoX's fused qkv
regrouped as [q; k; v], norms and biases in F32, weights in Q8_0 or Q6_K
(``forebear.zoo.kquants``), and the tokenizer's vocabulary as ``tokenizer.ggml.*``
metadata. Registered in ``storage.STORAGE`` as ``gguf_q8_0`` and ``gguf_k``; the
safetensors and GPTQ copies live in ``storage``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from forebear.architectures import Entry, ResolvedModel, Role, resolve
from forebear.errors import ArchitectureError, TokenizerError, UnsupportedFormatError
from forebear.formats.base import Array
from forebear.formats.memory import MemoryReader
from forebear.zoo.kquants import QK_K, quantize_q6_k
from forebear.zoo.transforms.base import State
from forebear.zoo.transforms.storage import storage

__all__ = ["llama_cpp_permute", "write_gguf", "write_gguf_k", "write_gguf_q8_0"]

# The zoo's families and their general.architecture; llama.cpp writes Mistral as llama.
_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gpt_neox": "gptneox"}
# convert_hf_to_gguf's LlamaModel permutes q/k rows (k grouped by the key/value heads).
_QK_PERMUTED = frozenset({"llama"})
_Q, _T = gguf.GGMLQuantizationType, gguf.TokenType


def llama_cpp_permute(rows: Array, groups: int) -> Array:
    """``LlamaModel.permute``: per head, interleave the two rotary halves of its rows."""
    rest = rows.shape[1:]
    return (
        rows.reshape(groups, 2, rows.shape[0] // groups // 2, *rest)
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


def _converted(resolved: ResolvedModel, entries: list[Entry], arch: str) -> Array:
    """A stored tensor's value as llama.cpp writes it, from its role entries."""
    first = entries[0]
    if first.expert_index is not None:
        raise UnsupportedFormatError("stacked expert tensors are not converted to GGUF by the zoo")
    if first.cut is not None:
        # A fused tensor (GPT-NeoX's per-head interleaved qkv) is written as its parts in order.
        parts = sorted(entries, key=lambda e: e.cut.offset if e.cut else 0)
        axis = first.cut.axis
        return np.concatenate([resolved.read(e.role, e.layer, e.expert) for e in parts], axis=axis)
    array = resolved.read(first.role, first.layer, first.expert)
    heads = resolved.dims.heads
    if arch in _QK_PERMUTED and heads and first.role in (Role.ATTN_Q, Role.ATTN_Q_BIAS):
        return llama_cpp_permute(array, heads)
    if arch in _QK_PERMUTED and heads and first.role in (Role.ATTN_K, Role.ATTN_K_BIAS):
        return llama_cpp_permute(array, resolved.dims.kv_heads or heads)
    return array


def _gguf_tensors(resolved: ResolvedModel, arch: str) -> dict[str, Array]:
    """GGUF name → value, for every tensor that carries a role."""
    if resolved.coverage.unknown:
        raise ArchitectureError(
            f"tensors without a role cannot be converted: {', '.join(resolved.coverage.unknown)}"
        )
    model_arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    names = gguf.get_tensor_name_map(model_arch, resolved.dims.layers or 0)
    by_tensor: dict[str, list[Entry]] = defaultdict(list)
    for entry in resolved.entries:
        by_tensor[entry.tensor].append(entry)
    converted: dict[str, Array] = {}
    for tensor, entries in by_tensor.items():
        target = names.get_name(tensor, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise UnsupportedFormatError(f"gguf-py has no GGUF name for {tensor} ({arch})")
        converted[target] = np.asarray(_converted(resolved, entries, arch), dtype=np.float32)
    return converted


def _q8_0(array: Array) -> tuple[Array, gguf.GGMLQuantizationType]:
    """convert_hf_to_gguf's --outtype q8_0: F32 for 1-D, F16 where rows do not fill blocks."""
    if array.ndim < 2:
        return array, _Q.F32
    if array.shape[-1] % gguf.GGML_QUANT_SIZES[_Q.Q8_0][0]:
        return array.astype(np.float16), _Q.F16
    return gguf.quants.quantize(array, _Q.Q8_0), _Q.Q8_0


def _q6_k(array: Array) -> tuple[Array, gguf.GGMLQuantizationType]:
    """llama-quantize Q6_K: rows that do not fill 256-value blocks fall back to Q8_0."""
    if array.ndim >= 2 and array.shape[-1] % QK_K == 0:
        return quantize_q6_k(array), _Q.Q6_K
    return _q8_0(array)


def _rope_setting(config: Mapping[str, Any], key: str) -> Any:
    """A rope setting from config.json (transformers 5 nests them in rope_parameters)."""
    nested = config.get("rope_parameters")
    if isinstance(nested, Mapping) and key in nested:
        return nested[key]
    return config.get(key)


def _add_hyperparameters(
    writer: gguf.GGUFWriter, resolved: ResolvedModel, config: Mapping[str, Any], arch: str
) -> None:
    dims = resolved.dims
    if not (dims.layers and dims.hidden and dims.heads and dims.intermediate and dims.vocab):
        raise ArchitectureError("the config lacks a dimension GGUF metadata needs")
    head_dim = dims.head_dim or dims.hidden // dims.heads
    writer.add_block_count(dims.layers)
    writer.add_context_length(dims.positions or 0)
    writer.add_embedding_length(dims.hidden)
    writer.add_feed_forward_length(dims.intermediate)
    writer.add_head_count(dims.heads)
    writer.add_head_count_kv(dims.kv_heads or dims.heads)
    writer.add_vocab_size(dims.vocab)
    fraction = _rope_setting(config, "partial_rotary_factor") or config.get("rotary_pct") or 1.0
    writer.add_rope_dimension_count(int(float(fraction) * head_dim))
    if (theta := _rope_setting(config, "rope_theta")) is not None:
        writer.add_rope_freq_base(float(theta))
    if arch == "gptneox":
        writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-5)))
        writer.add_parallel_residual(bool(config.get("use_parallel_residual", True)))
    else:
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))


def _vocabulary(tokenizer_json: bytes, rows: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of a byte-level BPE tokenizer.json, padded to ``rows``."""

    def fail(message: str) -> TokenizerError:
        return TokenizerError(
            message, path="tokenizer.json", hint="pass the model's own tokenizer.json"
        )

    try:
        data = json.loads(tokenizer_json.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise fail(f"is not valid UTF-8 JSON ({error})") from None
    model = data.get("model") if isinstance(data, dict) else None
    if (
        not isinstance(model, dict)
        or model.get("type") != "BPE"
        or not isinstance(model.get("vocab"), dict)
    ):
        raise fail("is not a BPE tokenizer (GGUF's gpt2 vocabulary needs one)")
    found: dict[int, tuple[str, int]] = {
        ident: (text, _T.NORMAL) for text, ident in model["vocab"].items()
    }
    for added in data.get("added_tokens") or []:
        kind = _T.CONTROL if added.get("special") else _T.USER_DEFINED
        found[added["id"]] = (added["content"], kind)
    if not all(isinstance(i, int) and 0 <= i < rows for i in found):
        raise fail(f"holds token ids outside the model's {rows} embedding rows")
    # llama.cpp fills ids the tokenizer leaves unused with [PAD{id}] tokens.
    tokens = [found.get(i, (f"[PAD{i}]", _T.UNUSED)) for i in range(rows)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return [text for text, _ in tokens], [int(kind) for _, kind in tokens], merges


def _add_vocabulary(
    writer: gguf.GGUFWriter, tokenizer_json: bytes, config: Mapping[str, Any], rows: int
) -> None:
    tokens, types, merges = _vocabulary(tokenizer_json, rows)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    for key, add in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
    ):
        if isinstance(config.get(key), int):
            add(config[key])


def write_gguf(
    state: State,
    config: Mapping[str, Any],
    tokenizer_json: bytes | None,
    path: Path,
    qtype: str,
) -> Path:
    """``state`` as one GGUF file at ``path``, quantised as ``qtype`` ("Q8_0" or "Q6_K")."""
    quantize, file_type = {
        "Q8_0": (_q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
        "Q6_K": (_q6_k, gguf.LlamaFileType.MOSTLY_Q6_K),
    }[qtype]
    resolved = resolve(MemoryReader(state), config)
    arch = _GGUF_ARCH.get(resolved.family)
    if arch is None:
        raise UnsupportedFormatError(
            f"the zoo converts {', '.join(sorted(_GGUF_ARCH))} to GGUF, not {resolved.family}"
        )
    tensors = _gguf_tensors(resolved, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    _add_hyperparameters(writer, resolved, config, arch)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if tokenizer_json is not None:
        _add_vocabulary(writer, tokenizer_json, config, resolved.dims.vocab or 0)
    for name, array in tensors.items():
        data, chosen = quantize(array)
        writer.add_tensor(name, data, raw_dtype=chosen if data.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@storage("gguf_q8_0")
def write_gguf_q8_0(
    state: State, config: Mapping[str, Any], tokenizer_json: bytes | None, out: Path
) -> Path:
    """A GGUF Q8_0 file ``out/model-Q8_0.gguf``."""
    return write_gguf(state, config, tokenizer_json, out / "model-Q8_0.gguf", "Q8_0")


@storage("gguf_k")
def write_gguf_k(
    state: State, config: Mapping[str, Any], tokenizer_json: bytes | None, out: Path
) -> Path:
    """A GGUF Q6_K file ``out/model-Q6_K.gguf`` (Q8_0 for rows shorter than a K block)."""
    return write_gguf(state, config, tokenizer_json, out / "model-Q6_K.gguf", "Q6_K")
