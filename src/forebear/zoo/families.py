"""Tiny configs of the zoo's families, and torch models built from any HF config dict.

A zoo model is small enough to train on a CPU in seconds (hidden 64,
intermediate 128, four query heads over two key/value heads) yet has every
part its full-size family has: qwen2's q/k/v biases, gpt-neox's fused
attention and parallel residual, untied output heads. Configs are plain
``config.json`` dicts; ``build_model`` turns any such dict (also one a
transformation rewrote, e.g. into a Mixtral) into a transformers module.

This module owns the shapes of the zoo's bases; it trains nothing. torch and
transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "build_model", "load_model", "quiet_transformers", "state_of", "tiny_config"]

# What makes each family itself; the shared tiny sizes are added by ``tiny_config``.
FAMILIES: Mapping[str, Mapping[str, Any]] = {
    "llama": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "mlp_bias": False,
    },
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
    },
    "gpt_neox": {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "rotary_pct": 0.25,
        "use_parallel_residual": True,
    },
}

_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}


def tiny_config(
    family: str,
    vocab_size: int,
    special_ids: Mapping[str, int | None],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config.json dict of a tiny ``family`` model over a ``vocab_size`` tokenizer."""
    if family not in FAMILIES:
        raise ValueError(f"unknown zoo family {family!r}; known: {', '.join(FAMILIES)}")
    config = {**copy.deepcopy(dict(FAMILIES[family])), **_TINY, "vocab_size": vocab_size}
    config.update({key: value for key, value in special_ids.items() if value is not None})
    config.update(overrides or {})
    config["dtype"] = "float32"
    return config


def _config_object(config: Mapping[str, Any]) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    settings = {
        k: v for k, v in config.items() if k not in ("model_type", "architectures", "dtype")
    }
    return AutoConfig.for_model(str(config["model_type"]), **settings)


def build_model(config: Mapping[str, Any], seed: int) -> Any:
    """A freshly initialised float32 causal LM for ``config``, its weights drawn from ``seed``.

    The global torch RNG is forked, so building a model leaves the caller's
    random state as it was.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            _config_object(config), dtype=torch.float32, attn_implementation="eager"
        )
    return model


def _parameter_names(model: Any) -> tuple[set[str], set[str]]:
    """(names of distinct parameters, names of every parameter including tied aliases)."""
    distinct = {name for name, _ in model.named_parameters()}
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return distinct, every


def state_of(model: Any) -> dict[str, Any]:
    """The model's weights as numpy arrays, named and laid out as ``save_pretrained`` writes
    them: a tied head once, and transformers' in-memory renamings and fusions (GPT-NeoX's
    ``lm_head``, Mixtral's stacked experts) reverted to the checkpoint layout."""
    from transformers.core_model_loading import revert_weight_conversion

    distinct, every = _parameter_names(model)
    tensors = {
        name: tensor.detach()
        for name, tensor in model.state_dict().items()
        if name in distinct or name not in every
    }
    saved = revert_weight_conversion(model, tensors)
    return {name: tensor.cpu().numpy().copy() for name, tensor in saved.items()}


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars and warnings off for the block (the library never prints)."""
    from transformers.utils import logging

    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def load_model(config: Mapping[str, Any], state: Mapping[str, Any]) -> Any:
    """The model of ``config`` holding ``state`` (checkpoint names and layout), loaded the way
    transformers loads a folder; every tensor must fit, and none may be missing."""
    import torch
    from transformers import AutoModelForCausalLM

    from forebear.zoo.folders import config_bytes, weights_bytes

    with tempfile.TemporaryDirectory(prefix="forebear-zoo-") as folder:
        Path(folder, "config.json").write_bytes(config_bytes(config))
        Path(folder, "model.safetensors").write_bytes(weights_bytes(dict(state)))
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.float32, attn_implementation="eager"
            )
    loaded = set(state_of(model))
    if loaded != set(state):
        missing, unexpected = sorted(loaded - set(state)), sorted(set(state) - loaded)
        raise ValueError(
            f"state does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    model.train(False)  # inference mode: no dropout
    return model
