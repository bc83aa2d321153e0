"""A checkpoint's dimensions and the sizes of the named axes built from them.

Owns ``Dims`` and where each number comes from: config.json keys named by the
definition, GGUF metadata keys, and — only for what neither gives — tensor
shapes read through the declared axes of the roles that were found. A product
axis (``q_out`` = heads × head_dim) is never factored by guessing: heads is
taken from a shape only when head_dim is already known. It does not match
tensor names (``resolve.py`` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from forebear.architectures.roles import Axis
from forebear.architectures.schema import DIM_FIELDS, Definition, DimSource

__all__ = [
    "GGUF_DIM_KEYS",
    "Dims",
    "axis_size",
    "dims_from_config",
    "dims_from_gguf",
    "fill_from_shapes",
]

# llama.cpp names these keys the same way for every architecture ({arch} = general.architecture).
GGUF_DIM_KEYS: Mapping[str, tuple[str, ...]] = {
    "hidden": ("{arch}.embedding_length",),
    "intermediate": ("{arch}.feed_forward_length",),
    "layers": ("{arch}.block_count",),
    "heads": ("{arch}.attention.head_count",),
    "kv_heads": ("{arch}.attention.head_count_kv",),
    "head_dim": ("{arch}.attention.key_length",),
    "v_head_dim": ("{arch}.attention.value_length",),
    "vocab": ("{arch}.vocab_size",),
    "positions": ("{arch}.context_length",),
    "experts": ("{arch}.expert_count",),
    "experts_per_token": ("{arch}.expert_used_count",),
    "shared_experts": ("{arch}.expert_shared_count",),
    "moe_intermediate": ("{arch}.expert_feed_forward_length",),
    "shared_intermediate": ("{arch}.expert_shared_feed_forward_length",),
    "q_lora_rank": ("{arch}.attention.q_lora_rank",),
    "kv_lora_rank": ("{arch}.attention.kv_lora_rank",),
    "rope_head_dim": ("{arch}.rope.dimension_count",),
}

# Axes whose size is one dimension, so a tensor's shape gives that dimension directly.
_SIMPLE_AXES: Mapping[Axis, str] = {
    Axis.HIDDEN: "hidden",
    Axis.INTERMEDIATE: "intermediate",
    Axis.VOCAB: "vocab",
    Axis.POSITIONS: "positions",
    Axis.TOKEN_TYPES: "token_types",
    Axis.HEADS: "heads",
    Axis.HEAD_DIM: "head_dim",
    Axis.EXPERTS: "experts",
    Axis.Q_LORA: "q_lora_rank",
    Axis.KV_LORA: "kv_lora_rank",
    Axis.MOE_INTERMEDIATE: "moe_intermediate",
    Axis.SHARED_INTERMEDIATE: "shared_intermediate",
}

# Axes that are (head count) × head_dim, and the count each gives once head_dim is known.
_HEAD_COUNTS: Mapping[Axis, str] = {Axis.Q_OUT: "heads", Axis.KV_OUT: "kv_heads"}


@dataclass(frozen=True)
class Dims:
    """Model dimensions; ``None`` where the checkpoint does not say."""

    hidden: int | None = None
    intermediate: int | None = None
    layers: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None  # per-head width of q and k (MLA: nope + rope)
    v_head_dim: int | None = None
    vocab: int | None = None
    positions: int | None = None
    token_types: int | None = None
    experts: int | None = None
    experts_per_token: int | None = None
    shared_experts: int | None = None
    moe_intermediate: int | None = None
    shared_intermediate: int | None = None
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    rope_head_dim: int | None = None

    def with_defaults(self) -> Dims:
        """Fill what transformers and llama.cpp derive when a config leaves a key out.

        Only for dims read from a config or GGUF metadata: without one, an absent
        kv_heads means "unknown", not "equal to heads".
        """
        kv_heads = self.kv_heads if self.kv_heads is not None else self.heads
        head_dim = self.head_dim
        if head_dim is None and self.hidden and self.heads and self.hidden % self.heads == 0:
            head_dim = self.hidden // self.heads
        v_head_dim = self.v_head_dim if self.v_head_dim is not None else head_dim
        return dataclasses.replace(
            self, kv_heads=kv_heads, head_dim=head_dim, v_head_dim=v_head_dim
        )


def _product(*values: int | None) -> int | None:
    result = 1
    for value in values:
        if value is None:
            return None
        result *= value
    return result


def axis_size(axis: Axis, dims: Dims) -> int | None:
    """The size of ``axis`` under ``dims``; ``None`` when a needed dimension is unknown."""
    if axis in _SIMPLE_AXES:
        value: int | None = getattr(dims, _SIMPLE_AXES[axis])
        return value
    nope = (
        None
        if dims.head_dim is None or dims.rope_head_dim is None
        else dims.head_dim - dims.rope_head_dim
    )
    sizes = {
        Axis.Q_OUT: _product(dims.heads, dims.head_dim),
        Axis.KV_OUT: _product(dims.kv_heads, dims.head_dim),
        Axis.V_OUT: _product(dims.kv_heads, dims.v_head_dim),
        Axis.ATTN_OUT: _product(dims.heads, dims.v_head_dim),
        Axis.KV_A_OUT: None
        if dims.kv_lora_rank is None or dims.rope_head_dim is None
        else dims.kv_lora_rank + dims.rope_head_dim,
        Axis.KV_B_OUT: None
        if nope is None or dims.v_head_dim is None or dims.heads is None
        else dims.heads * (nope + dims.v_head_dim),
        Axis.ONE: 1,
    }
    return sizes[axis]


def _as_dim(value: Any) -> int | None:
    """A positive int, or a per-layer list whose entries all agree; anything else is unknown.

    GGUF readers may hand back numpy integers, so those count as ints too.
    """
    if isinstance(value, list | tuple) and value and all(v == value[0] for v in value):
        value = value[0]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        return None
    return int(value) if value > 0 else None


def _lookup(config: Mapping[str, Any], source: DimSource) -> int | None:
    values = [_as_dim(config.get(key)) for key in source.keys]
    if any(v is None for v in values):
        return None
    known = [v for v in values if v is not None]
    if source.combine == "sum":
        return sum(known)
    if source.combine == "product":
        return _product(*known)
    return known[0]


def _from_sources(config: Mapping[str, Any], sources: Mapping[str, tuple[DimSource, ...]]) -> Dims:
    found: dict[str, int] = {}
    for field in DIM_FIELDS:
        for source in sources.get(field, ()):
            value = _lookup(config, source)
            if value is not None:
                found[field] = value
                break
    return Dims(**found)


def text_config(config: Mapping[str, Any], definition: Definition) -> Mapping[str, Any]:
    """The part of config.json that describes the text model (a multimodal wrapper nests it)."""
    section = definition.hf_config_section
    nested = config.get(section) if section else None
    return {**config, **nested} if isinstance(nested, Mapping) else config


def dims_from_config(config: Mapping[str, Any], definition: Definition) -> Dims:
    return _from_sources(text_config(config, definition), definition.dims["hf"])


def dims_from_gguf(metadata: Mapping[str, Any], definition: Definition) -> Dims:
    arch = metadata.get("general.architecture")
    sources = {
        field: tuple(DimSource((key.replace("{arch}", str(arch)),), "key") for key in keys)
        for field, keys in GGUF_DIM_KEYS.items()
    }
    return _from_sources(metadata, {**sources, **definition.dims["gguf"]})


def fill_from_shapes(
    dims: Dims, observed: Iterable[tuple[tuple[Axis, ...], tuple[int, ...]]]
) -> Dims:
    """Fill unknown dimensions from (declared axes, canonical shape) pairs; known ones win."""
    found: dict[str, int] = {}
    products: list[tuple[Axis, int]] = []
    for axes, shape in observed:
        if len(axes) != len(shape):
            continue
        for axis, size in zip(axes, shape, strict=True):
            field = _SIMPLE_AXES.get(axis)
            if field is not None and getattr(dims, field) is None:
                found.setdefault(field, size)
            elif axis in _HEAD_COUNTS:
                products.append((axis, size))
    filled = dataclasses.replace(dims, **found)
    head_dim = filled.head_dim
    if not head_dim:
        return filled
    # Only a known head_dim factors a product axis; the count is never guessed from a size.
    counts: dict[str, int] = {}
    for axis, size in products:
        field = _HEAD_COUNTS[axis]
        if getattr(filled, field) is None and size % head_dim == 0:
            counts.setdefault(field, size // head_dim)
    return dataclasses.replace(filled, **counts)
