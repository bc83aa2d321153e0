"""Function-preserving permutations: what an adversary does to hide that B is a copy of A.

Owns three re-parameterisations that leave a model's outputs unchanged while
moving every weight: permuting the MLP units of each layer, permuting the
attention heads of each layer (GQA-aware), and permuting the residual stream
(optionally with sign flips where the norms allow), plus their composition.
Each comes as a deterministic ``apply_*`` function taking explicit maps (so a
recorded map can be replayed or inverted) and a registered transformation that
draws the maps from ``rng`` and records them. Tensors are found by role and
their axes by the role's declared axes, never by name or size, so the code
works for every family whose roles it knows. Residual rotation lives in
``rotation``; ``RoleTensors`` (role-addressed reads and writes of a state dict)
is shared with it.

Map conventions (all lists of ints, JSON-ready): a permutation ``perm`` means
``new[i] = old[perm[i]]`` along the permuted axis; ``signs[i]`` multiplies new
residual coordinate ``i``. The inverse of ``(perm, signs)`` is
``(argsort(perm), signs[argsort(perm)])``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from forebear.architectures import Axis, Cut, Entry, ResolvedModel, Role, resolve
from forebear.architectures.dims import axis_size, text_config
from forebear.architectures.roles import NORM_SCALES
from forebear.errors import ArchitectureError, UnsupportedFormatError
from forebear.formats.base import Array
from forebear.formats.memory import MemoryReader
from forebear.zoo.transforms.base import Derived, State, copy_state, register

__all__ = [
    "UNIT_AXES",
    "RoleTensors",
    "apply_head_permutation",
    "apply_residual_permutation",
    "apply_unit_permutation",
    "invert_signed_permutation",
    "permute_all",
    "permute_heads",
    "permute_mlp_units",
    "permute_residual",
    "resolve_state",
    "uses_rms_norm",
]

# Axes whose entries are independent hidden units of an MLP (dense, per expert, shared expert).
UNIT_AXES: tuple[Axis, ...] = (Axis.INTERMEDIATE, Axis.MOE_INTERMEDIATE, Axis.SHARED_INTERMEDIATE)

# Per-head axes, and whether their blocks follow the query heads or the key/value heads.
_QUERY_HEAD_AXES = frozenset({Axis.Q_OUT, Axis.ATTN_OUT})
_KV_HEAD_AXES = frozenset({Axis.KV_OUT, Axis.V_OUT})
_ATTENTION_ROLES = (Role.ATTN_Q, Role.ATTN_K, Role.ATTN_V, Role.ATTN_O)

NORM_BIASES = frozenset(
    {
        Role.EMBED_NORM_BIAS,
        Role.FINAL_NORM_BIAS,
        Role.MLM_NORM_BIAS,
        Role.ATTN_NORM_BIAS,
        Role.ATTN_POST_NORM_BIAS,
        Role.FFN_NORM_BIAS,
        Role.FFN_POST_NORM_BIAS,
    }
)


class RoleTensors:
    """A private copy of a state dict whose tensors are read and written by role entry.

    Reads give the canonical orientation (rows = outputs) of one role instance,
    cut out of a fused tensor or a stacked expert tensor where needed; writes put
    a canonical array back where it came from. The caller's state is never touched.
    """

    def __init__(self, state: State, config: Mapping[str, Any]) -> None:
        self.resolved: ResolvedModel = resolve_state(state, config)
        self.state: State = copy_state(state)

    def entries(self, layer: int | None = None, *, any_layer: bool = False) -> Iterator[Entry]:
        return (e for e in self.resolved.entries if any_layer or e.layer == layer)

    def read(self, entry: Entry) -> Array:
        target = self._target(entry)
        cut = entry.cut
        if cut is None:
            return np.array(target, copy=True)
        moved = np.moveaxis(target, cut.axis, 0)
        pieces = [moved[self._group(cut, g)] for g in range(cut.groups)]
        return np.moveaxis(np.concatenate(pieces, axis=0), 0, cut.axis)

    def write(self, entry: Entry, array: Array) -> None:
        target = self._target(entry)
        cut = entry.cut
        if cut is None:
            target[...] = array
            return
        moved, source = np.moveaxis(target, cut.axis, 0), np.moveaxis(array, cut.axis, 0)
        for group in range(cut.groups):
            moved[self._group(cut, group)] = source[group * cut.size : (group + 1) * cut.size]

    def _target(self, entry: Entry) -> Array:
        """A writable view of the stored tensor in canonical orientation (before any cut)."""
        stored = self.state[entry.tensor]
        view = stored[entry.expert_index] if entry.expert_index is not None else stored
        return view.T if entry.transposed and view.ndim == 2 else view

    @staticmethod
    def _group(cut: Cut, group: int) -> slice:
        start = group * cut.width + cut.offset
        return slice(start, start + cut.size)


def resolve_state(state: State, config: Mapping[str, Any]) -> ResolvedModel:
    """Resolve, refusing a state with tensors no role explains: they might read the residual."""
    resolved = resolve(MemoryReader(state), config)
    coverage = resolved.coverage
    if resolved.source_format != "hf":
        raise UnsupportedFormatError(
            f"re-parameterisation works on HF state dicts, not {resolved.source_format} names",
            hint="convert the checkpoint to HF safetensors first",
        )
    if coverage.unknown or coverage.mismatches:
        problems = ", ".join((*coverage.unknown, *coverage.mismatches)[:5])
        raise ArchitectureError(
            f"cannot preserve the function of a {resolved.family} model with tensors "
            f"that no role explains: {problems}",
            hint="extend the family's architecture definition so every tensor has a role",
        )
    return resolved


def uses_rms_norm(resolved: ResolvedModel, config: Mapping[str, Any]) -> bool:
    """Whether every norm is an RMSNorm (no mean-centering), so sign flips and rotations pass.

    The definitions do not (yet) record the norm kind; a config that names an
    ``rms_norm_eps`` and a state with no norm biases is the evidence transformers
    itself relies on when it builds these families.
    """
    has_bias = any(entry.role in NORM_BIASES for entry in resolved.entries)
    return not has_bias and "rms_norm_eps" in text_config(config, resolved.definition)


def _take(array: Array, axis: int, index: Array) -> Array:
    return np.take(array, index, axis=axis)


def _block_index(perm: Array, length: int) -> Array:
    """Element indices that move whole equal blocks (one per head) by ``perm``."""
    width = length // len(perm)
    return (np.asarray(perm)[:, None] * width + np.arange(width)[None, :]).reshape(-1)


def _check_perm(perm: Sequence[int], size: int | None, what: str) -> Array:
    array = np.asarray(perm, dtype=np.int64)
    if (
        size is None
        or array.shape != (size,)
        or not np.array_equal(np.sort(array), np.arange(size))
    ):
        raise ValueError(f"{what} must be a permutation of range({size}), got {list(perm)[:8]}…")
    return array


# --- MLP units ------------------------------------------------------------------------------


def _unit_groups(resolved: ResolvedModel) -> list[tuple[int | None, int | None, Axis]]:
    """Every (layer, expert, axis) whose units can be permuted, in a fixed order."""
    found = {
        (entry.layer, entry.expert, axis)
        for entry in resolved.entries
        for axis in entry.role.axes
        if axis in UNIT_AXES
    }
    return sorted(found, key=lambda k: (k[0] or 0, -1 if k[1] is None else k[1], k[2].value))


def apply_unit_permutation(
    state: State, config: Mapping[str, Any], units: Sequence[Mapping[str, Any]]
) -> State:
    """Permute hidden units of MLPs; ``units`` = ``[{"layer", "expert", "axis", "perm"}]``.

    Every role instance of that layer (and expert) with that axis moves along it:
    gate/up rows and their biases, down columns.
    """
    tensors = RoleTensors(state, config)
    for unit in units:
        axis = Axis(unit["axis"])
        if axis not in UNIT_AXES:
            raise ValueError(f"{axis.value} is not an MLP unit axis")
        perm = _check_perm(unit["perm"], axis_size(axis, tensors.resolved.dims), axis.value)
        for entry in tensors.entries(unit["layer"]):
            if entry.expert != unit.get("expert") or axis not in entry.role.axes:
                continue
            array = tensors.read(entry)
            for position, declared in enumerate(entry.role.axes):
                if declared is axis:
                    array = _take(array, position, perm)
            tensors.write(entry, array)
    return tensors.state


@register("permute_mlp")
def permute_mlp_units(state: State, config: dict[str, Any], rng: np.random.Generator) -> Derived:
    """A random permutation of each MLP's hidden units (per layer, and per expert)."""
    resolved = resolve_state(state, config)
    units = []
    for layer, expert, axis in _unit_groups(resolved):
        size = axis_size(axis, resolved.dims)
        if size is None:
            raise ArchitectureError(f"the size of {axis.value} is unknown; cannot permute it")
        perm = rng.permutation(size).tolist()
        units.append({"layer": layer, "expert": expert, "axis": axis.value, "perm": perm})
    return Derived(
        state=apply_unit_permutation(state, config, units),
        config=copy.deepcopy(config),
        transformation="permute_mlp",
        function_preserving=True,
        maps={"mlp_units": units},
    )


# --- attention heads ------------------------------------------------------------------------


def _head_counts(resolved: ResolvedModel) -> tuple[int, int]:
    dims = resolved.dims
    if not dims.heads or not dims.kv_heads or dims.heads % dims.kv_heads:
        raise ArchitectureError(
            f"{resolved.family}: heads={dims.heads}, kv_heads={dims.kv_heads} "
            "do not form key/value groups",
            hint="set num_attention_heads and num_key_value_heads in config.json",
        )
    return dims.heads, dims.kv_heads


def _check_attention(tensors: RoleTensors, layer: int) -> None:
    resolved = tensors.resolved
    missing = [r.role_name for r in _ATTENTION_ROLES if not resolved.has(r, layer)]
    if missing:
        raise ArchitectureError(
            f"permute_heads needs separate attn.q/k/v/o; {resolved.family} layer {layer} "
            f"lacks {', '.join(missing)}",
            hint="latent attention (MLA) heads are not supported",
        )


def _check_groups(heads: Array, kv: Array, group: int) -> None:
    """A query head must stay with its key/value head, or GQA would pair it with another."""
    if not np.array_equal(heads // group, np.repeat(kv, group)):
        raise ValueError("the head permutation moves a query head out of its key/value group")


def apply_head_permutation(
    state: State,
    config: Mapping[str, Any],
    heads: Sequence[Sequence[int]],
    kv_heads: Sequence[Sequence[int]],
) -> State:
    """Permute attention heads per layer: ``heads[layer]`` for query-side blocks (q rows,
    o columns, their biases and full-width q norms), ``kv_heads[layer]`` for k and v."""
    tensors = RoleTensors(state, config)
    n_heads, n_kv = _head_counts(tensors.resolved)
    for layer in tensors.resolved.layers:
        _check_attention(tensors, layer)
        query = _check_perm(heads[layer], n_heads, f"heads[{layer}]")
        kv = _check_perm(kv_heads[layer], n_kv, f"kv_heads[{layer}]")
        _check_groups(query, kv, n_heads // n_kv)
        for entry in tensors.entries(layer):
            array, moved = tensors.read(entry), False
            for position, axis in enumerate(entry.role.axes):
                perm = query if axis in _QUERY_HEAD_AXES else kv if axis in _KV_HEAD_AXES else None
                if perm is not None:
                    array = _take(array, position, _block_index(perm, array.shape[position]))
                    moved = True
            if moved:
                tensors.write(entry, array)
    return tensors.state


def _draw_heads(rng: np.random.Generator, n_heads: int, n_kv: int) -> tuple[list[int], list[int]]:
    """Key/value groups shuffled, and the query heads shuffled within each group."""
    group = n_heads // n_kv
    kv = rng.permutation(n_kv)
    query = [int(old) * group + int(j) for old in kv for j in rng.permutation(group)]
    return query, kv.tolist()


@register("permute_heads")
def permute_heads(state: State, config: dict[str, Any], rng: np.random.Generator) -> Derived:
    """A random GQA-consistent permutation of each layer's attention heads."""
    resolved = resolve_state(state, config)
    n_heads, n_kv = _head_counts(resolved)
    drawn = [_draw_heads(rng, n_heads, n_kv) for _ in resolved.layers]
    heads, kv = [q for q, _ in drawn], [k for _, k in drawn]
    return Derived(
        state=apply_head_permutation(state, config, heads, kv),
        config=copy.deepcopy(config),
        transformation="permute_heads",
        function_preserving=True,
        maps={"heads": heads, "kv_heads": kv},
    )


# --- residual stream ------------------------------------------------------------------------


def invert_signed_permutation(
    perm: Sequence[int], signs: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """The (perm, signs) that undoes ``new[i] = signs[i] * old[perm[i]]``."""
    inverse = np.argsort(np.asarray(perm))
    sign_array = np.ones(len(perm), dtype=np.int64) if signs is None else np.asarray(signs)
    return inverse.tolist(), sign_array[inverse].astype(int).tolist()


def _signs_allowed(tensors: RoleTensors, config: Mapping[str, Any], signs: Array) -> None:
    if np.all(signs == 1) or uses_rms_norm(tensors.resolved, config):
        return
    raise UnsupportedFormatError(
        f"sign flips of the residual stream are not function-preserving for "
        f"{tensors.resolved.family}: its LayerNorm subtracts the mean",
        hint="use signs=None (a plain permutation commutes with mean-centering)",
    )


def apply_residual_permutation(
    state: State,
    config: Mapping[str, Any],
    perm: Sequence[int],
    signs: Sequence[int] | None = None,
) -> State:
    """Move residual coordinate ``perm[i]`` to ``i`` (times ``signs[i]``) in every tensor
    that reads or writes the residual stream: every axis a role declares ``hidden``.

    Why the signs are safe under RMSNorm: with x' = D P x, rms(x') = rms(x), so a
    norm with gain P g outputs D P (g ⊙ x) / rms(x); the readers' columns carry D
    (W' = W Pᵀ D) and cancel it, while the gains themselves only move. The same
    holds for a norm after a writer, whose output then lies in the new residual
    basis. A tied head reads with the embedding's own columns, so it stays tied.
    """
    tensors = RoleTensors(state, config)
    hidden = axis_size(Axis.HIDDEN, tensors.resolved.dims)
    index = _check_perm(perm, hidden, "perm")
    sign = np.ones(len(index)) if signs is None else np.asarray(signs, dtype=np.float64)
    if sign.shape != index.shape or not np.all(np.abs(sign) == 1):
        raise ValueError("signs must hold one +1 or -1 per residual coordinate")
    _signs_allowed(tensors, config, sign)
    for entry in tensors.entries(any_layer=True):
        axes = entry.role.axes
        if Axis.HIDDEN not in axes:
            continue
        array = tensors.read(entry)
        norm = entry.role in NORM_SCALES or entry.role in NORM_BIASES
        for position, axis in enumerate(axes):
            if axis is Axis.HIDDEN:
                array = _take(array, position, index)
                if not norm:
                    shape = [1] * array.ndim
                    shape[position] = -1
                    array = (array * sign.reshape(shape)).astype(array.dtype)
        tensors.write(entry, array)
    return tensors.state


@register("permute_residual")
def permute_residual(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator,
    *,
    signs: bool = False,
) -> Derived:
    """A random permutation of the residual stream, with random sign flips if ``signs``."""
    hidden = axis_size(Axis.HIDDEN, resolve_state(state, config).dims)
    if hidden is None:
        raise ArchitectureError("the hidden size is unknown; cannot permute the residual stream")
    perm = rng.permutation(hidden).tolist()
    flips = rng.choice([-1, 1], size=hidden).tolist() if signs else [1] * hidden
    return Derived(
        state=apply_residual_permutation(state, config, perm, flips),
        config=copy.deepcopy(config),
        transformation="permute_residual",
        params={"signs": signs},
        function_preserving=True,
        maps={"residual": perm, "signs": flips},
    )


@register("permute_all")
def permute_all(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator,
    *,
    signs: bool = False,
) -> Derived:
    """MLP units, then attention heads, then the residual stream, each randomly permuted."""
    mlp = permute_mlp_units(state, config, rng)
    heads = permute_heads(mlp.state, config, rng)
    residual = permute_residual(heads.state, config, rng, signs=signs)
    return Derived(
        state=residual.state,
        config=copy.deepcopy(config),
        transformation="permute_all",
        params={"signs": signs},
        function_preserving=True,
        maps={**mlp.maps, **heads.maps, **residual.maps},
    )
