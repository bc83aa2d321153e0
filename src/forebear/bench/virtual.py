"""A virtual DeepSeek-V3 checkpoint: the real repository's files, bytes generated on demand.

``deepseek_v3_repo()`` returns every file of a DeepSeek-V3-shaped Hugging Face
repository as a ``VirtualFile``: ``config.json`` (the real config), the 163
FP8 shards ``model-000NN-of-000163.safetensors`` with 128×128 block scales
(``weight_scale_inv``), ``model.safetensors.index.json``, a byte-level BPE
``tokenizer.json`` of 129280 distinct tokens and the small files beside them,
about 689 GB in all. Tensor names, shapes, dtypes and order are the real
checkpoint's (91,991 tensors, the multi-token-prediction layer 61 included,
with its copies of the embedding and head); only the values are synthetic
(``bench.virtual_files`` generates them). ``scale="tiny"`` makes the same
layout at toy sizes for tests.

This module owns what the repository holds; the byte layout and values of a
virtual file belong to ``bench.virtual_files``, serving them to ``bench.hub_server``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from forebear.bench.virtual_files import (
    Fill,
    TensorSpec,
    VirtualFile,
    VirtualLocation,
    VirtualSafetensors,
)
from forebear.sources.memory import MemorySource

__all__ = [
    "FULL",
    "TINY",
    "DeepseekV3Shape",
    "Fill",
    "TensorSpec",
    "VirtualFile",
    "VirtualLocation",
    "VirtualSafetensors",
    "deepseek_v3_config",
    "deepseek_v3_repo",
    "deepseek_v3_tensors",
    "shard_names",
    "tokenizer_json",
]


@dataclass(frozen=True)
class DeepseekV3Shape:
    """The sizes a DeepSeek-V3 checkpoint is built from (names follow config.json's meaning)."""

    hidden: int
    intermediate: int  # the dense layers' MLP
    moe_intermediate: int  # each routed expert's, and the shared expert's
    layers: int  # num_hidden_layers; one more (the MTP layer) is stored after them
    dense_layers: int  # first_k_dense_replace
    experts: int
    experts_per_token: int
    groups: int  # n_group: routing picks top_groups of these, then experts within them
    top_groups: int
    heads: int
    q_lora_rank: int
    kv_lora_rank: int
    nope_head_dim: int
    rope_head_dim: int
    v_head_dim: int
    vocab: int
    added_tokens: int  # special placeholder tokens at the end of the vocabulary
    block: int  # weight_block_size, both axes
    shards: int
    positions: int  # max_position_embeddings: yarn's factor 40 over the original context


FULL = DeepseekV3Shape(
    hidden=7168, intermediate=18432, moe_intermediate=2048, layers=61, dense_layers=3,
    experts=256, experts_per_token=8, groups=8, top_groups=4, heads=128, q_lora_rank=1536,
    kv_lora_rank=512, nope_head_dim=128, rope_head_dim=64, v_head_dim=128, vocab=129280,
    added_tokens=1280, block=128, shards=163, positions=163840,
)  # fmt: skip
# Hidden ≠ intermediate ≠ moe_intermediate; ranks and kv_a rows (32 + 8) leave partial blocks.
TINY = DeepseekV3Shape(
    hidden=64, intermediate=96, moe_intermediate=32, layers=4, dense_layers=1, experts=8,
    experts_per_token=2, groups=2, top_groups=1, heads=4, q_lora_rank=48, kv_lora_rank=32,
    nope_head_dim=16, rope_head_dim=8, v_head_dim=16, vocab=512, added_tokens=16, block=32,
    shards=3, positions=2560,
)  # fmt: skip
_SCALES = {"full": FULL, "tiny": TINY}
_YARN_FACTOR = 40
_SPECIALS = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>")


def deepseek_v3_config(shape: DeepseekV3Shape = FULL) -> dict[str, Any]:
    """DeepSeek-V3's config.json, with ``shape``'s sizes (``FULL``: the real one)."""
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_deepseek.DeepseekV3Config",
            "AutoModel": "modeling_deepseek.DeepseekV3Model",
            "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
        },
        "aux_loss_alpha": 0.001,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "ep_size": 1,
        "first_k_dense_replace": shape.dense_layers,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "kv_lora_rank": shape.kv_lora_rank,
        "max_position_embeddings": shape.positions,
        "model_type": "deepseek_v3",
        "moe_intermediate_size": shape.moe_intermediate,
        "moe_layer_freq": 1,
        "n_group": shape.groups,
        "n_routed_experts": shape.experts,
        "n_shared_experts": 1,
        "norm_topk_prob": True,
        "num_attention_heads": shape.heads,
        "num_experts_per_tok": shape.experts_per_token,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.heads,
        "num_nextn_predict_layers": 1,
        "pretraining_tp": 1,
        "q_lora_rank": shape.q_lora_rank,
        "qk_nope_head_dim": shape.nope_head_dim,
        "qk_rope_head_dim": shape.rope_head_dim,
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [shape.block, shape.block],
        },
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": _YARN_FACTOR,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": shape.positions // _YARN_FACTOR,
            "type": "yarn",
        },
        "rope_theta": 10000,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": shape.top_groups,
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.33.1",
        "use_cache": True,
        "v_head_dim": shape.v_head_dim,
        "vocab_size": shape.vocab,
    }


# ---------------------------------------------------------------- tensors


def _norm(name: str, size: int) -> TensorSpec:
    return TensorSpec(name, (size,), Fill.NORM)


def _fp8(prefix: str, rows: int, cols: int, block: int) -> list[TensorSpec]:
    """An FP8 linear weight (out, in) and its float32 scale per ``block``×``block`` block."""
    grid = (-(-rows // block), -(-cols // block))
    return [
        TensorSpec(f"{prefix}.weight", (rows, cols), Fill.FP8_WEIGHT),
        TensorSpec(f"{prefix}.weight_scale_inv", grid, Fill.BLOCK_SCALE),
    ]


def _mlp(prefix: str, width: int, s: DeepseekV3Shape) -> list[TensorSpec]:
    return [
        *_fp8(f"{prefix}.gate_proj", width, s.hidden, s.block),
        *_fp8(f"{prefix}.up_proj", width, s.hidden, s.block),
        *_fp8(f"{prefix}.down_proj", s.hidden, width, s.block),
    ]


def _attention(prefix: str, s: DeepseekV3Shape) -> list[TensorSpec]:
    """Multi-head latent attention: low-rank q, a shared latent + rope key, per-head k/v."""
    attn, block = f"{prefix}.self_attn", s.block
    q_rows = s.heads * (s.nope_head_dim + s.rope_head_dim)
    kv_rows = s.heads * (s.nope_head_dim + s.v_head_dim)
    return [
        _norm(f"{prefix}.input_layernorm.weight", s.hidden),
        *_fp8(f"{attn}.q_a_proj", s.q_lora_rank, s.hidden, block),
        _norm(f"{attn}.q_a_layernorm.weight", s.q_lora_rank),
        *_fp8(f"{attn}.q_b_proj", q_rows, s.q_lora_rank, block),
        *_fp8(f"{attn}.kv_a_proj_with_mqa", s.kv_lora_rank + s.rope_head_dim, s.hidden, block),
        _norm(f"{attn}.kv_a_layernorm.weight", s.kv_lora_rank),
        *_fp8(f"{attn}.kv_b_proj", kv_rows, s.kv_lora_rank, block),
        *_fp8(f"{attn}.o_proj", s.hidden, s.heads * s.v_head_dim, block),
        _norm(f"{prefix}.post_attention_layernorm.weight", s.hidden),
    ]


def _moe(prefix: str, s: DeepseekV3Shape) -> list[TensorSpec]:
    mlp = f"{prefix}.mlp"
    found = [
        TensorSpec(f"{mlp}.gate.weight", (s.experts, s.hidden), Fill.BF16_WEIGHT),
        TensorSpec(f"{mlp}.gate.e_score_correction_bias", (s.experts,), Fill.ROUTER_BIAS),
    ]
    for expert in range(s.experts):
        found += _mlp(f"{mlp}.experts.{expert}", s.moe_intermediate, s)
    return found + _mlp(f"{mlp}.shared_experts", s.moe_intermediate, s)


def _layer(layer: int, s: DeepseekV3Shape) -> list[TensorSpec]:
    prefix = f"model.layers.{layer}"
    mlp = _mlp(f"{prefix}.mlp", s.intermediate, s) if layer < s.dense_layers else _moe(prefix, s)
    return _attention(prefix, s) + mlp


def _mtp_layer(layer: int, s: DeepseekV3Shape) -> list[TensorSpec]:
    """The multi-token-prediction module stored as layer ``num_hidden_layers``: a MoE block
    between its own norms and projection, with copies of the embedding and the head."""
    prefix = f"model.layers.{layer}"
    table, weight = (s.vocab, s.hidden), Fill.BF16_WEIGHT
    return [
        TensorSpec(f"{prefix}.embed_tokens.weight", table, weight, "model.embed_tokens.weight"),
        _norm(f"{prefix}.enorm.weight", s.hidden),
        _norm(f"{prefix}.hnorm.weight", s.hidden),
        TensorSpec(f"{prefix}.eh_proj.weight", (s.hidden, 2 * s.hidden), weight),
        *_layer(layer, s),
        _norm(f"{prefix}.shared_head.norm.weight", s.hidden),
        TensorSpec(f"{prefix}.shared_head.head.weight", table, weight, "lm_head.weight"),
    ]


def deepseek_v3_tensors(shape: DeepseekV3Shape = FULL) -> list[TensorSpec]:
    """Every tensor of the checkpoint in the real shards' order: embedding, layers, final
    norm and head, then the MTP layer."""
    found = [TensorSpec("model.embed_tokens.weight", (shape.vocab, shape.hidden), Fill.BF16_WEIGHT)]
    for layer in range(shape.layers):
        found += _layer(layer, shape)
    found += [
        _norm("model.norm.weight", shape.hidden),
        TensorSpec("lm_head.weight", (shape.vocab, shape.hidden), Fill.BF16_WEIGHT),
    ]
    return found + _mtp_layer(shape.layers, shape)


def shard_names(count: int) -> list[str]:
    """DeepSeek's shard file names: five digits, then six for the count."""
    return [f"model-{i:05d}-of-{count:06d}.safetensors" for i in range(1, count + 1)]


def _shards(tensors: list[TensorSpec], count: int) -> list[list[TensorSpec]]:
    """``count`` runs of consecutive tensors of about equal bytes: a tensor goes to the shard
    its middle byte falls in, so a layer may span shards and no tensor is split."""
    total = sum(spec.nbytes for spec in tensors)
    shards: list[list[TensorSpec]] = [[] for _ in range(count)]
    offset = 0
    for spec in tensors:
        middle = offset + spec.nbytes // 2
        shards[min(count - 1, middle * count // total)].append(spec)
        offset += spec.nbytes
    if not all(shards):
        raise ValueError(f"{count} shards leave one empty: a tensor is over a shard's size")
    return shards


# ---------------------------------------------------------------- tokenizer

_ONSETS = ("", "", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "qu", "r", "s",
           "t", "v", "w", "y", "z", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gr", "pl",
           "pr", "sc", "sh", "sl", "sp", "st", "str", "th", "tr", "wh")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "oo", "y")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "d", "ng", "st", "nt", "rs", "ck", "ll",
          "ss", "x", "ty", "tion", "ment", "ing", "ed", "er")  # fmt: skip


def _byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes as themselves, the rest moved
    to U+0100 onwards (so the space byte is ``Ġ``)."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    chars, moved = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(0x100 + moved))
            moved += 1
    return chars


def _words(rng: np.random.Generator) -> Iterator[str]:
    """Endless made-up words of one to three syllables, most word-initial (``Ġ``)."""
    parts = (_ONSETS, _VOWELS, _CODAS)
    while True:
        picks = rng.integers(0, [len(p) for p in parts], size=(4096, 3, 3))
        lengths, forms = rng.integers(1, 4, 4096), rng.random(4096)
        for pick, length, form in zip(picks, lengths, forms, strict=True):
            word = "".join(
                "".join(part[i] for part, i in zip(parts, syllable, strict=True))
                for syllable in pick[:length]
            )
            word = word.capitalize() if form < 0.2 else word
            yield "Ġ" + word if form < 0.65 else word


def _bpe(count: int) -> tuple[list[str], list[str]]:
    """``count`` byte-level BPE tokens (the 256 byte characters first) and the merges that
    make each later token from two earlier ones, as a trained BPE's would."""
    tokens = _byte_chars()
    known, merges = set(tokens), []
    words = _words(np.random.Generator(np.random.Philox(key=0x7F0CE)))
    while len(tokens) < count:
        word = next(words)
        prefix = word[0]
        for char in word[1:]:
            joined = prefix + char
            if joined not in known and len(tokens) < count:
                tokens.append(joined)
                known.add(joined)
                merges.append(f"{prefix} {char}")
            prefix = joined
    return tokens, merges


def _added(ident: int, content: str) -> dict[str, Any]:
    return {"id": ident, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}  # fmt: skip


@functools.cache
def tokenizer_json(vocab: int, added: int) -> bytes:
    """A byte-level BPE ``tokenizer.json`` of ``vocab`` distinct tokens: DeepSeek's three
    specials, BPE pieces, and ``added`` special placeholders at the end."""
    pieces, merges = _bpe(vocab - added - len(_SPECIALS))
    table = {token: ident for ident, token in enumerate([*_SPECIALS, *pieces])}
    first = len(table)
    specials = [_added(i, token) for i, token in enumerate(_SPECIALS)]
    specials += [_added(first + k, f"<｜place▁holder▁no▁{k}｜>") for k in range(added)]
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": specials,
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": table, "merges": merges},
    }  # fmt: skip
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _tokenizer_config(shape: DeepseekV3Shape) -> dict[str, Any]:
    def token(text: str) -> dict[str, Any]:
        return {"__type": "AddedToken", "content": text, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}  # fmt: skip

    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": token(_SPECIALS[0]),
        "clean_up_tokenization_spaces": False,
        "eos_token": token(_SPECIALS[1]),
        "legacy": True,
        "model_max_length": shape.positions,
        "pad_token": token(_SPECIALS[1]),
        "sp_model_kwargs": {},
        "unk_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
    }


# ---------------------------------------------------------------- the repository

_README = """# DeepSeek-V3 (virtual)

The file layout, config, tensor names, shapes and dtypes of deepseek-ai/DeepSeek-V3
(FP8 e4m3 weights with {block}×{block} block scales, {shards} shards, {size:,} bytes of tensors).
The values are synthetic, generated from seed {seed} by forebear.bench.virtual; no byte
comes from the real model.
"""


_GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1,
                      "do_sample": True, "temperature": 0.6, "top_p": 0.95}  # fmt: skip


def _json_file(document: dict[str, Any], name: str) -> MemorySource:
    text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return MemorySource(text.encode("utf-8"), name)


def deepseek_v3_repo(
    seed: int = 0, scale: str | DeepseekV3Shape = "full"
) -> dict[str, VirtualFile]:
    """Every file of a DeepSeek-V3-shaped repository (relative path → file).

    ``scale`` is ``"full"`` (the real sizes, ≈ 689 GB), ``"tiny"`` (the same layout at
    toy sizes, a few MB) or a ``DeepseekV3Shape``; ``seed`` picks the weights.
    """
    shape = _SCALES.get(scale) if isinstance(scale, str) else scale
    if shape is None:
        raise ValueError(f"scale is {scale!r}, expected one of {sorted(_SCALES)}")
    names = shard_names(shape.shards)
    shards = _shards(deepseek_v3_tensors(shape), shape.shards)
    weight_map = {
        spec.name: name for name, held in zip(names, shards, strict=True) for spec in held
    }
    total = sum(spec.nbytes for held in shards for spec in held)
    documents = {
        "config.json": deepseek_v3_config(shape),
        "generation_config.json": _GENERATION_CONFIG,
        "model.safetensors.index.json": {
            "metadata": {"total_size": total},
            "weight_map": weight_map,
        },
        "tokenizer_config.json": _tokenizer_config(shape),
    }
    files: dict[str, VirtualFile] = {name: _json_file(doc, name) for name, doc in documents.items()}
    readme = _README.format(block=shape.block, shards=shape.shards, size=total, seed=seed)
    files["README.md"] = MemorySource(readme.encode("utf-8"), "README.md")
    tokenizer = tokenizer_json(shape.vocab, shape.added_tokens)
    files["tokenizer.json"] = MemorySource(tokenizer, "tokenizer.json")
    for name, held in zip(names, shards, strict=True):
        files[name] = VirtualSafetensors(held, seed=seed, name=name)
    return files
