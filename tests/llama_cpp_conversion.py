"""Test helper: turn a Hugging Face state dict into a GGUF file the way llama.cpp's converter does.

This restates, per family, what ``convert_hf_to_gguf.py`` changes beyond renaming,
so forebear's GGUF side can be checked against the Hugging Face side of the same
model: experts stacked into one 3-D tensor per projection, Gemma norm scales
stored as 1 + w, GPT-2's Conv1D weights transposed to (out, in), GPT-NeoX's
per-head interleaved ``query_key_value`` regrouped as [q; k; v], llama q/k rows
permuted. Names come from gguf-py's own tensor map; forebear is not imported.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from gguf_writing import LLAMA_PERMUTED, encode, llama_cpp_permute

GGUF_ARCH = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "qwen2",
    "qwen2_moe": "qwen2moe",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "gpt_neox": "gptneox",
    "bert": "bert",
    "olmo2": "olmo2",
    "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2",
}

_EXPERT = re.compile(r"^(?P<prefix>.+\.experts)\.(?P<expert>\d+)\.(?P<proj>[a-z0-9_]+)\.weight$")
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _stack_experts(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    groups: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for name, array in state.items():
        match = _EXPERT.match(name)
        if match is None:
            out[name] = array
        else:
            key = f"{match['prefix']}.{match['proj']}.weight"
            groups[key][int(match["expert"])] = array
    for key, experts in groups.items():
        out[key] = np.stack([experts[i] for i in sorted(experts)])
    return out


def _neox_qkv(array: np.ndarray, heads: int) -> np.ndarray:
    # HF keeps (heads, 3, head_dim, ...) interleaved; llama.cpp stores [q; k; v].
    grouped = array.reshape(heads, 3, array.shape[0] // heads // 3, *array.shape[1:])
    return np.concatenate([grouped[:, part].reshape(-1, *array.shape[1:]) for part in range(3)])


def convert(
    family: str, config: Mapping[str, Any], state: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """HF names → HF-style names gguf-py can map, with llama.cpp's value changes applied."""
    arch = GGUF_ARCH[family]
    heads = int(config.get("num_attention_heads") or config.get("n_head"))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    out: dict[str, np.ndarray] = {}
    for name, array in _stack_experts(state).items():
        array = np.array(array, copy=True)
        if family.startswith("gemma") and name.endswith("norm.weight"):
            array = array + np.float32(1.0)
        if family == "gpt2" and name.endswith(_CONV1D):
            array = np.ascontiguousarray(array.T)
        if family == "gpt_neox" and ".query_key_value." in name:
            array = _neox_qkv(array, heads)
        if arch in LLAMA_PERMUTED and name.endswith(("q_proj.weight", "q_proj.bias")):
            array = llama_cpp_permute(array, heads, heads)
        if arch in LLAMA_PERMUTED and name.endswith(("k_proj.weight", "k_proj.bias")):
            array = llama_cpp_permute(array, heads, kv_heads)
        out[name.replace(".e_score_correction_bias", ".e_score_correction.bias")] = array
    return out


def write_converted(
    path: Path,
    family: str,
    config: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
    metadata: Mapping[str, int],
    qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32,
) -> dict[str, str]:
    """Write the GGUF; returns HF name → GGUF name for what gguf-py maps (the rest is dropped)."""
    arch = GGUF_ARCH[family]
    model_arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    layers = int(metadata[f"{arch}.block_count"])
    names = gguf.get_tensor_name_map(model_arch, layers)
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in metadata.items():
        writer.add_uint32(key, int(value))
    mapped: dict[str, str] = {}
    rng = np.random.default_rng(0)
    for name, array in convert(family, config, state).items():
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            continue
        chosen = (
            qtype
            if array.ndim >= 2 and array.shape[-1] % 32 == 0
            else gguf.GGMLQuantizationType.F32
        )
        data = encode(np.ascontiguousarray(array), chosen, rng)
        writer.add_tensor(target, data, raw_dtype=chosen if data.dtype == np.uint8 else None)
        mapped[name] = target
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return mapped
