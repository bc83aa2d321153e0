"""Canonical tensor roles and the axes their shapes are made of.

Owns the vocabulary every other stage speaks: a ``Role`` says what a tensor
*does* (the query projection of a layer, the router of a mixture of experts)
and declares its shape as named ``Axis`` values in canonical orientation
(rows = output features, cols = input features, as ``torch.nn.Linear`` stores
them). It does not know any family's tensor names; those live in the TOML
definitions, and sizes come from the checkpoint (see ``dims.py``).

Norms are named by function, not by the name a family gave them: llama's
``post_attention_layernorm`` normalises the FFN input, so it is ``ffn.norm``;
gemma2's tensor of the same name normalises the attention output, so it is
``attn.post_norm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Axis", "Role", "RoleSpec", "Scope"]


class Axis(Enum):
    """A named dimension; its size is computed from ``Dims`` (never a literal)."""

    HIDDEN = "hidden"
    INTERMEDIATE = "intermediate"
    VOCAB = "vocab"
    POSITIONS = "positions"
    TOKEN_TYPES = "token_types"
    HEADS = "heads"
    Q_OUT = "q_out"  # heads × head_dim
    KV_OUT = "kv_out"  # kv_heads × head_dim
    V_OUT = "v_out"  # kv_heads × v_head_dim
    ATTN_OUT = "attn_out"  # heads × v_head_dim: what the output projection reads
    HEAD_DIM = "head_dim"
    EXPERTS = "experts"
    Q_LORA = "q_lora"
    KV_LORA = "kv_lora"
    KV_A_OUT = "kv_a_out"  # kv_lora_rank + rope_head_dim (MLA's joint KV-and-rope projection)
    KV_B_OUT = "kv_b_out"  # heads × (nope_head_dim + v_head_dim)
    MOE_INTERMEDIATE = "moe_intermediate"
    SHARED_INTERMEDIATE = "shared_intermediate"
    ONE = "one"


class Scope(Enum):
    """Where a role repeats: once per model, per layer, or per expert of a layer."""

    MODEL = "model"
    LAYER = "layer"
    EXPERT = "expert"


@dataclass(frozen=True)
class RoleSpec:
    name: str
    scope: Scope
    axes: tuple[Axis, ...]


A = Axis
_M, _L, _E = Scope.MODEL, Scope.LAYER, Scope.EXPERT


class Role(Enum):
    """Every tensor role forebear understands; ``value`` is its ``RoleSpec``."""

    EMBED_TOKENS = RoleSpec("embed.tokens", _M, (A.VOCAB, A.HIDDEN))
    EMBED_POSITIONS = RoleSpec("embed.positions", _M, (A.POSITIONS, A.HIDDEN))
    EMBED_TOKEN_TYPES = RoleSpec("embed.token_types", _M, (A.TOKEN_TYPES, A.HIDDEN))
    EMBED_NORM = RoleSpec("embed.norm", _M, (A.HIDDEN,))
    EMBED_NORM_BIAS = RoleSpec("embed.norm_bias", _M, (A.HIDDEN,))
    FINAL_NORM = RoleSpec("final_norm", _M, (A.HIDDEN,))
    FINAL_NORM_BIAS = RoleSpec("final_norm_bias", _M, (A.HIDDEN,))
    LM_HEAD = RoleSpec("lm_head", _M, (A.VOCAB, A.HIDDEN))
    LM_HEAD_BIAS = RoleSpec("lm_head_bias", _M, (A.VOCAB,))
    POOLER = RoleSpec("pooler", _M, (A.HIDDEN, A.HIDDEN))
    POOLER_BIAS = RoleSpec("pooler_bias", _M, (A.HIDDEN,))
    MLM_DENSE = RoleSpec("mlm.dense", _M, (A.HIDDEN, A.HIDDEN))
    MLM_DENSE_BIAS = RoleSpec("mlm.dense_bias", _M, (A.HIDDEN,))
    MLM_NORM = RoleSpec("mlm.norm", _M, (A.HIDDEN,))
    MLM_NORM_BIAS = RoleSpec("mlm.norm_bias", _M, (A.HIDDEN,))

    ATTN_NORM = RoleSpec("attn.norm", _L, (A.HIDDEN,))
    ATTN_NORM_BIAS = RoleSpec("attn.norm_bias", _L, (A.HIDDEN,))
    ATTN_Q = RoleSpec("attn.q", _L, (A.Q_OUT, A.HIDDEN))
    ATTN_K = RoleSpec("attn.k", _L, (A.KV_OUT, A.HIDDEN))
    ATTN_V = RoleSpec("attn.v", _L, (A.V_OUT, A.HIDDEN))
    ATTN_O = RoleSpec("attn.o", _L, (A.HIDDEN, A.ATTN_OUT))
    ATTN_Q_BIAS = RoleSpec("attn.q_bias", _L, (A.Q_OUT,))
    ATTN_K_BIAS = RoleSpec("attn.k_bias", _L, (A.KV_OUT,))
    ATTN_V_BIAS = RoleSpec("attn.v_bias", _L, (A.V_OUT,))
    ATTN_O_BIAS = RoleSpec("attn.o_bias", _L, (A.HIDDEN,))
    ATTN_Q_NORM = RoleSpec("attn.q_norm", _L, (A.HEAD_DIM,))  # per head, shared by heads
    ATTN_K_NORM = RoleSpec("attn.k_norm", _L, (A.HEAD_DIM,))
    ATTN_Q_NORM_FULL = RoleSpec("attn.q_norm_full", _L, (A.Q_OUT,))  # OLMo2: over all heads
    ATTN_K_NORM_FULL = RoleSpec("attn.k_norm_full", _L, (A.KV_OUT,))
    ATTN_Q_A = RoleSpec("attn.q_a", _L, (A.Q_LORA, A.HIDDEN))
    ATTN_Q_A_NORM = RoleSpec("attn.q_a_norm", _L, (A.Q_LORA,))
    ATTN_Q_B = RoleSpec("attn.q_b", _L, (A.Q_OUT, A.Q_LORA))
    ATTN_KV_A = RoleSpec("attn.kv_a", _L, (A.KV_A_OUT, A.HIDDEN))
    ATTN_KV_A_NORM = RoleSpec("attn.kv_a_norm", _L, (A.KV_LORA,))
    ATTN_KV_B = RoleSpec("attn.kv_b", _L, (A.KV_B_OUT, A.KV_LORA))
    ATTN_POST_NORM = RoleSpec("attn.post_norm", _L, (A.HIDDEN,))
    ATTN_POST_NORM_BIAS = RoleSpec("attn.post_norm_bias", _L, (A.HIDDEN,))

    FFN_NORM = RoleSpec("ffn.norm", _L, (A.HIDDEN,))
    FFN_NORM_BIAS = RoleSpec("ffn.norm_bias", _L, (A.HIDDEN,))
    FFN_POST_NORM = RoleSpec("ffn.post_norm", _L, (A.HIDDEN,))
    FFN_POST_NORM_BIAS = RoleSpec("ffn.post_norm_bias", _L, (A.HIDDEN,))
    MLP_GATE = RoleSpec("mlp.gate", _L, (A.INTERMEDIATE, A.HIDDEN))
    MLP_UP = RoleSpec("mlp.up", _L, (A.INTERMEDIATE, A.HIDDEN))
    MLP_DOWN = RoleSpec("mlp.down", _L, (A.HIDDEN, A.INTERMEDIATE))
    MLP_GATE_BIAS = RoleSpec("mlp.gate_bias", _L, (A.INTERMEDIATE,))
    MLP_UP_BIAS = RoleSpec("mlp.up_bias", _L, (A.INTERMEDIATE,))
    MLP_DOWN_BIAS = RoleSpec("mlp.down_bias", _L, (A.HIDDEN,))

    MOE_ROUTER = RoleSpec("moe.router", _L, (A.EXPERTS, A.HIDDEN))
    MOE_ROUTER_BIAS = RoleSpec("moe.router_bias", _L, (A.EXPERTS,))
    MOE_EXPERT_GATE = RoleSpec("moe.expert.gate", _E, (A.MOE_INTERMEDIATE, A.HIDDEN))
    MOE_EXPERT_UP = RoleSpec("moe.expert.up", _E, (A.MOE_INTERMEDIATE, A.HIDDEN))
    MOE_EXPERT_DOWN = RoleSpec("moe.expert.down", _E, (A.HIDDEN, A.MOE_INTERMEDIATE))
    MOE_SHARED_GATE = RoleSpec("moe.shared.gate", _L, (A.SHARED_INTERMEDIATE, A.HIDDEN))
    MOE_SHARED_UP = RoleSpec("moe.shared.up", _L, (A.SHARED_INTERMEDIATE, A.HIDDEN))
    MOE_SHARED_DOWN = RoleSpec("moe.shared.down", _L, (A.HIDDEN, A.SHARED_INTERMEDIATE))
    MOE_SHARED_ROUTER = RoleSpec("moe.shared.router", _L, (A.ONE, A.HIDDEN))

    @property
    def role_name(self) -> str:
        """The dotted name definitions use (``attn.q``)."""
        return self.value.name

    @property
    def scope(self) -> Scope:
        return self.value.scope

    @property
    def axes(self) -> tuple[Axis, ...]:
        """Declared axes in canonical orientation: (rows, cols) for a matrix."""
        return self.value.axes

    @classmethod
    def from_name(cls, name: str) -> Role:
        """Look a role up by its dotted name; ``KeyError`` if there is none."""
        return _BY_NAME[name]


_BY_NAME: dict[str, Role] = {role.role_name: role for role in Role}

# Normalisation scales (not their biases): what llama.cpp shifts by a constant for Gemma.
NORM_SCALES: frozenset[Role] = frozenset(
    {
        Role.EMBED_NORM,
        Role.FINAL_NORM,
        Role.MLM_NORM,
        Role.ATTN_NORM,
        Role.ATTN_Q_NORM,
        Role.ATTN_K_NORM,
        Role.ATTN_Q_NORM_FULL,
        Role.ATTN_K_NORM_FULL,
        Role.ATTN_Q_A_NORM,
        Role.ATTN_KV_A_NORM,
        Role.ATTN_POST_NORM,
        Role.FFN_NORM,
        Role.FFN_POST_NORM,
    }
)
