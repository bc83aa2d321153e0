"""LoRA by hand: low-rank adapters trained on a frozen base, then merged into its weights.

For every attention and MLP projection of the base (found by role through
forebear's architecture definitions, so fused projections such as gpt-neox's
``query_key_value`` get one adapter), a pair ``A`` (rank × in, small random)
and ``B`` (out × rank, zeros) is trained while the base stays frozen; the
layer computes ``W x + (alpha / rank) B A x``. Merging writes
``W + (alpha / rank) B A`` back, so the merged model differs from its base by
a delta of rank at most ``rank`` in each adapted matrix — the ground truth a
provenance method faces after a merged LoRA.

This module owns the adapters; the training loop is ``train``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from forebear.architectures import Role
from forebear.zoo.families import load_model, state_of
from forebear.zoo.tokenization import Tokens
from forebear.zoo.train import deterministic, train_model
from forebear.zoo.transforms.base import Derived, State
from forebear.zoo.transforms.reparam import resolve_state

__all__ = ["ADAPTED_ROLES", "adapted_tensors", "lora_merge"]

ADAPTED_ROLES = frozenset(
    {
        Role.ATTN_Q,
        Role.ATTN_K,
        Role.ATTN_V,
        Role.ATTN_O,
        Role.MLP_GATE,
        Role.MLP_UP,
        Role.MLP_DOWN,
    }
)


def adapted_tensors(state: State, config: Mapping[str, Any]) -> list[str]:
    """Names of the 2-D weights that get an adapter, in the order the model lists them."""
    resolved = resolve_state(state, dict(config))
    names = {e.tensor for e in resolved.entries if e.role in ADAPTED_ROLES and e.expert is None}
    return [name for name in state if name in names and state[name].ndim == 2]


class _Adapter:
    """The trainable factors of one linear layer and the hook that adds their product."""

    def __init__(self, module: Any, rank: int, alpha: float) -> None:
        import torch

        out_features, in_features = module.weight.shape
        bound = 1.0 / math.sqrt(in_features)  # A as torch's own Linear init; B = 0 starts at W
        self.a = torch.nn.Parameter(torch.empty(rank, in_features).uniform_(-bound, bound))
        self.b = torch.nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank
        self.handle = module.register_forward_hook(self._add)

    def _add(self, module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
        return output + self.scale * (inputs[0] @ self.a.T) @ self.b.T

    def delta(self) -> Any:
        return (self.scale * (self.b @ self.a)).detach()


def _linear_of(model: Any, tensor: str) -> Any:
    import torch

    module = model.get_submodule(tensor.rpartition(".")[0])
    if not isinstance(module, torch.nn.Linear) or module.weight is not model.get_parameter(tensor):
        raise ValueError(f"{tensor} is not the weight of a linear layer")
    return module


def lora_merge(
    state: State,
    config: Mapping[str, Any],
    tokens: Tokens,
    *,
    rank: int,
    alpha: float,
    steps: int,
    lr: float,
    seed: int,
) -> tuple[Derived, tuple[float, ...]]:
    """Train rank-``rank`` adapters on a frozen copy of ``state``, merge them, and return the
    merged model with the training loss curve."""
    import torch

    with deterministic(seed):
        model = load_model(config, state)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        targets = adapted_tensors(state, config)
        adapters = {name: _Adapter(_linear_of(model, name), rank, alpha) for name in targets}
        holder = torch.nn.ParameterList([p for a in adapters.values() for p in (a.a, a.b)])
        model.add_module("lora_adapters", holder)  # so the trainer finds them as parameters
        losses = train_model(model, tokens, steps, lr, seed)
        with torch.no_grad():
            for name, adapter in adapters.items():
                adapter.handle.remove()
                model.get_parameter(name).add_(adapter.delta())
        del model.lora_adapters
    merged = {name: array for name, array in state_of(model).items() if name in state}
    derived = Derived(
        state=merged,
        config=dict(config),
        transformation="lora_merge",
        params={"rank": rank, "alpha": alpha, "steps": steps, "lr": lr, "adapted": targets},
    )
    return derived, losses
