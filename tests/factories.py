"""Tiny random-init transformers models for every supported family (test data, never downloaded).

``make_hf_model(family)`` returns (config.json contents, state dict as
``save_pretrained`` writes it) for a model with hidden != intermediate (64 / 96)
or, with ``square=True``, hidden == intermediate; ``save_hf`` writes one to a
folder as single-file safetensors, sharded safetensors or a pytorch ``.bin``.
Built models are cached per (family, seed, square) for the session.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

FAMILIES = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "gemma",
    "gemma2",
    "gemma3",
    "phi3",
    "gpt2",
    "gpt_neox",
    "bert",
    "olmo2",
    "deepseek_v2",
    "deepseek_v3",
)

HIDDEN = 64
INTERMEDIATE = 96
LAYERS = 2
HEADS = 4
KV_HEADS = 2
VOCAB = 128
EXPERTS = 4
TOP_K = 2
POSITIONS = 64


def _decoder(square: bool, **extra: Any) -> dict[str, Any]:
    base = {
        "hidden_size": HIDDEN,
        "intermediate_size": HIDDEN if square else INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": POSITIONS,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    return {**base, **extra}


def _moe(square: bool) -> dict[str, Any]:
    return {"moe_intermediate_size": HIDDEN if square else 32, "num_experts_per_tok": TOP_K}


def _deepseek(square: bool) -> dict[str, Any]:
    return _decoder(
        square,
        **_moe(square),
        n_routed_experts=EXPERTS,
        n_shared_experts=1,
        q_lora_rank=24,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=16,
        v_head_dim=16,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
    )


def _config_kwargs(family: str, square: bool) -> dict[str, Any]:
    inter = HIDDEN if square else INTERMEDIATE
    if family == "gpt2":
        return {
            "n_embd": HIDDEN,
            "n_inner": inter,
            "n_layer": LAYERS,
            "n_head": HEADS,
            "vocab_size": VOCAB,
            "n_positions": POSITIONS,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }
    if family == "gemma3_multimodal":
        vision = {
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        }
        return {
            "text_config": _decoder(square, head_dim=16),
            "vision_config": vision,
            "mm_tokens_per_image": 4,
        }
    if family in ("gpt_neox", "bert", "bert_mlm"):
        return {
            "hidden_size": HIDDEN,
            "intermediate_size": inter,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "vocab_size": VOCAB,
            "max_position_embeddings": POSITIONS,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }
    if family == "mixtral":
        return _decoder(square, num_local_experts=EXPERTS, num_experts_per_tok=TOP_K)
    if family == "qwen2_moe":
        return _decoder(
            square, **_moe(square), num_experts=EXPERTS, shared_expert_intermediate_size=48
        )
    if family == "qwen3_moe":
        return _decoder(square, **_moe(square), num_experts=EXPERTS, head_dim=16)
    if family in ("deepseek_v2", "deepseek_v3"):
        return _deepseek(square)
    if family in ("gemma", "gemma2", "gemma3", "qwen3"):
        return _decoder(square, head_dim=16)
    return _decoder(square)


_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),
    "bert": ("BertConfig", "BertModel"),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM"),
    "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM"),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM"),
    # Variants of a family saved under another prefix (not in FAMILIES).
    "gemma3_multimodal": ("Gemma3Config", "Gemma3ForConditionalGeneration"),
    "bert_mlm": ("BertConfig", "BertForMaskedLM"),
}
VARIANTS = {"gemma3_multimodal": "gemma3", "bert_mlm": "bert"}


@functools.cache
def build_torch_model(family: str, seed: int = 0, square: bool = False) -> Any:
    """The transformers module itself (eval mode), for tests that run it."""
    import torch
    import transformers

    if family not in _CLASSES:
        known = ", ".join((*FAMILIES, *VARIANTS))
        raise ValueError(f"unknown family {family!r}; known: {known}")
    config_name, model_name = _CLASSES[family]
    config = getattr(transformers, config_name)(**_config_kwargs(family, square))
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    return model.eval()


def save_hf(
    model_dir: str | os.PathLike[str],
    family: str,
    format: str = "safetensors",
    *,
    seed: int = 0,
    square: bool = False,
    max_shard_size: str | int = "20KB",
) -> Path:
    """Write config.json and weights the way ``save_pretrained`` does; returns the folder.

    ``format`` is "safetensors" (one file), "sharded" (safetensors shards plus
    ``model.safetensors.index.json``) or "bin" (``pytorch_model.bin``).
    transformers 5 dropped ``safe_serialization`` and always writes safetensors,
    so "bin" re-saves those tensors with ``torch.save`` (the zip format that
    transformers 4 wrote).
    """
    if format not in ("safetensors", "sharded", "bin"):
        raise ValueError(f"format must be safetensors, sharded or bin, not {format!r}")
    model = build_torch_model(family, seed, square)
    path = Path(model_dir)
    model.save_pretrained(path, max_shard_size=max_shard_size if format == "sharded" else "10GB")
    if format == "bin":
        import torch
        from safetensors.torch import load_file

        weights = path / "model.safetensors"
        torch.save(load_file(str(weights)), path / "pytorch_model.bin")
        weights.unlink()
    return path


@functools.cache
def _saved(family: str, seed: int, square: bool) -> tuple[str, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as tmp:
        save_hf(tmp, family, seed=seed, square=square)
        config_text = (Path(tmp) / "config.json").read_text(encoding="utf-8")
        state = load_file(str(Path(tmp) / "model.safetensors"))
    return config_text, state


def make_hf_model(
    family: str, *, seed: int = 0, square: bool = False
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config.json contents, state dict as saved) of a tiny random model; fresh copies."""
    config_text, state = _saved(family, seed, square)
    return json.loads(config_text), {name: array.copy() for name, array in state.items()}


def load_derived(derived: Any, folder: Path) -> Any:
    """A zoo ``Derived`` saved to ``folder`` and loaded by transformers; no key may be off."""
    import transformers
    from safetensors.numpy import save_file

    (folder / "config.json").write_text(json.dumps(derived.config), encoding="utf-8")
    save_file(derived.state, str(folder / "model.safetensors"))
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    return model.eval()
