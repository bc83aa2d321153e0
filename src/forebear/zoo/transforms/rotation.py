"""Residual-stream rotation with norm gains folded: the strongest function-preserving disguise.

Owns ``fold_norm_gains`` (move each RMSNorm's gain into the linear layers that
read its output, leaving unit gains), ``apply_rotation`` (x' = Qᵀ x for an
orthogonal Q: embeddings and readers E → E Q, W → W Q; writers and their biases
W → Qᵀ W, b → Qᵀ b) and the registered ``rotate_residual`` that draws a
Haar-random Q from ``rng``. RMSNorm with a unit gain commutes with any rotation
(‖Qᵀ x‖ = ‖x‖); LayerNorm's mean-centering does not, so LayerNorm families are
refused, as are norms that sit between a writer and the residual sum (their
gain has no reader to fold into). Permutations live in ``reparam``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from forebear.architectures import Axis, Entry, ResolvedModel, Role
from forebear.errors import ArchitectureError, UnsupportedFormatError
from forebear.formats.base import Array
from forebear.zoo.transforms.base import Derived, State, register
from forebear.zoo.transforms.reparam import RoleTensors, uses_rms_norm

__all__ = ["apply_rotation", "fold_norm_gains", "random_rotation", "rotate_residual"]

# Who reads each pre-norm's output (their columns absorb its gain).
_ATTN_READERS = frozenset({Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_Q_A, Role.ATTN_KV_A})
_FFN_READERS = frozenset(
    {
        Role.MLP_GATE,
        Role.MLP_UP,
        Role.MOE_ROUTER,
        Role.MOE_EXPERT_GATE,
        Role.MOE_EXPERT_UP,
        Role.MOE_SHARED_GATE,
        Role.MOE_SHARED_UP,
        Role.MOE_SHARED_ROUTER,
    }
)
_FOLDS = ((Role.ATTN_NORM, _ATTN_READERS), (Role.FFN_NORM, _FFN_READERS))

# How each residual-touching role turns under x' = Qᵀ x.
_RIGHT = _ATTN_READERS | _FFN_READERS | {Role.EMBED_TOKENS, Role.EMBED_POSITIONS, Role.LM_HEAD}
_LEFT = frozenset({Role.ATTN_O, Role.MLP_DOWN, Role.MOE_EXPERT_DOWN, Role.MOE_SHARED_DOWN})
_LEFT_BIASES = frozenset({Role.ATTN_O_BIAS, Role.MLP_DOWN_BIAS})
_UNIT_NORMS = frozenset({Role.ATTN_NORM, Role.FFN_NORM, Role.FINAL_NORM})


def _check_rotatable(tensors: RoleTensors, config: Mapping[str, Any]) -> None:
    resolved = tensors.resolved
    if not uses_rms_norm(resolved, config):
        raise UnsupportedFormatError(
            f"rotate_residual is not function-preserving for {resolved.family}: "
            "LayerNorm subtracts the mean, and a rotation of the residual stream "
            "does not commute with mean-centering",
            hint="use permute_residual, which does",
        )
    known = _RIGHT | _LEFT | _LEFT_BIASES | _UNIT_NORMS
    for entry in resolved.entries:
        if Axis.HIDDEN in entry.role.axes and entry.role not in known:
            raise UnsupportedFormatError(
                f"rotate_residual cannot preserve the function of {resolved.family}: "
                f"{entry.role.role_name} touches the residual stream in a way a "
                "rotation does not commute with",
                hint="use permute_residual",
            )


def _gain(tensors: RoleTensors, entry: Entry) -> Array:
    """The factor a norm multiplies by: its weight, plus the family's offset (Gemma: 1 + w)."""
    offset = tensors.resolved.definition.gguf_norm_offset
    return offset + tensors.read(entry).astype(np.float64)


def _set_unit_gain(tensors: RoleTensors, entry: Entry) -> None:
    offset = tensors.resolved.definition.gguf_norm_offset
    tensors.write(entry, np.full(tensors.read(entry).shape, 1.0 - offset))


def _head_template(resolved: ResolvedModel) -> str:
    for pattern in resolved.definition.patterns:
        if (
            pattern.naming == "hf"
            and pattern.parts == (Role.LM_HEAD,)
            and "{" not in pattern.template
        ):
            return pattern.template
    raise ArchitectureError(
        f"{resolved.family} names no lm_head tensor, so a tied head cannot be untied",
        hint="add an hf lm_head name to the family's definition",
    )


def _untie(config: dict[str, Any], resolved: ResolvedModel) -> dict[str, Any]:
    untied = copy.deepcopy(config)
    untied["tie_word_embeddings"] = False
    section = resolved.definition.hf_config_section
    if section and isinstance(untied.get(section), dict):
        untied[section]["tie_word_embeddings"] = False
    return untied


def _fold_final(tensors: RoleTensors, config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Fold the final norm into the head; a tied head becomes its own tensor first."""
    resolved = tensors.resolved
    norm = resolved.entry(Role.FINAL_NORM)
    gain = _gain(tensors, norm)
    untied = not resolved.has(Role.LM_HEAD)
    if untied:
        embedding = tensors.read(resolved.entry(Role.EMBED_TOKENS))
        head = (embedding * gain[None, :]).astype(embedding.dtype)
        tensors.state[_head_template(resolved)] = head
    else:
        head_entry = resolved.entry(Role.LM_HEAD)
        tensors.write(head_entry, tensors.read(head_entry) * gain[None, :])
    _set_unit_gain(tensors, norm)
    # A config may say "tied" while the head is stored anyway; loading would re-tie it.
    return _untie(config, resolved), untied


def fold_norm_gains(state: State, config: dict[str, Any]) -> tuple[State, dict[str, Any], bool]:
    """(state, config, head was untied) with every RMSNorm gain moved into its readers.

    W diag(g) (x / rms x) = W (g ⊙ x / rms x), so readers' columns take the gain
    and the norm keeps a unit one. Function-preserving on its own.
    """
    tensors = RoleTensors(state, config)
    _check_rotatable(tensors, config)
    resolved = tensors.resolved
    for layer in resolved.layers:
        for norm_role, readers in _FOLDS:
            norm = resolved.entry(norm_role, layer)
            gain = _gain(tensors, norm)
            for entry in tensors.entries(layer):
                if entry.role in readers:
                    tensors.write(entry, tensors.read(entry) * gain[None, :])
            _set_unit_gain(tensors, norm)
    folded_config, untied = _fold_final(tensors, config)
    return tensors.state, folded_config, untied


def _check_unit_gains(tensors: RoleTensors) -> None:
    offset = tensors.resolved.definition.gguf_norm_offset
    for entry in tensors.entries(any_layer=True):
        if entry.role in _UNIT_NORMS and not np.all(offset + tensors.read(entry) == 1):
            raise ValueError(
                f"{entry.tensor} has a gain other than one: fold_norm_gains before rotating"
            )


def apply_rotation(state: State, config: dict[str, Any], rotation: Array) -> State:
    """Turn the residual stream by orthogonal ``rotation`` (x' = Qᵀ x) in every tensor
    that touches it; norm gains must already be folded (see ``fold_norm_gains``)."""
    tensors = RoleTensors(state, config)
    _check_rotatable(tensors, config)
    _check_unit_gains(tensors)
    q = np.asarray(rotation, dtype=np.float64)
    hidden = tensors.resolved.dims.hidden
    square = hidden is not None and q.shape == (hidden, hidden)
    if not square or not np.allclose(q.T @ q, np.eye(len(q)), atol=1e-8):
        raise ValueError(f"rotation must be an orthogonal {hidden}×{hidden} matrix")
    for entry in tensors.entries(any_layer=True):
        role = entry.role
        if role in _RIGHT:
            tensors.write(entry, tensors.read(entry).astype(np.float64) @ q)
        elif role in _LEFT or role in _LEFT_BIASES:
            tensors.write(entry, q.T @ tensors.read(entry).astype(np.float64))
    return tensors.state


def random_rotation(size: int, rng: np.random.Generator) -> Array:
    """A Haar-random orthogonal matrix: QR of a Gaussian with R's diagonal signs moved into Q."""
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    signs: Array = np.sign(np.diag(r))
    return q * signs[None, :]


@register("rotate_residual")
def rotate_residual(state: State, config: dict[str, Any], rng: np.random.Generator) -> Derived:
    """Fold the RMSNorm gains, then rotate the residual stream by a random orthogonal Q."""
    folded, folded_config, untied = fold_norm_gains(state, config)
    hidden = RoleTensors(folded, folded_config).resolved.dims.hidden
    if hidden is None:
        raise ArchitectureError("the hidden size is unknown; cannot rotate the residual stream")
    rotation = random_rotation(hidden, rng)
    return Derived(
        state=apply_rotation(folded, folded_config, rotation),
        config=folded_config,
        transformation="rotate_residual",
        function_preserving=True,
        maps={"rotation": rotation.tolist(), "untied_head": untied},
    )
