"""Shape-changing transformations: width pruning, depth pruning, depth up-scaling, MoE upcycling.

Owns four registered transformations that change a model's shape, and the
ground truth of each (which units, heads and layers survived or were copied
from where). Tensors are found by role through ``resolve`` and cut along the
axes their roles declare; a tensor's new name comes from the definition's own
template (the matched ``{layer}`` span, or the target family's template), never
from editing substrings. The config comes back with the new shape under the
keys the family's definition reads it from, so transformers loads the result.
It does not touch vocabularies (``vocab``) or permute anything (``reparam``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from forebear.architectures import Axis, Definition, Entry, ResolvedModel, Role, definitions
from forebear.architectures.dims import axis_size
from forebear.architectures.matching import match_names
from forebear.errors import ArchitectureError, UnsupportedFormatError
from forebear.formats.base import Array
from forebear.zoo.transforms.base import Derived, State, register
from forebear.zoo.transforms.reparam import resolve_state

__all__ = [
    "depth_prune",
    "depth_upscale",
    "moe_upcycle",
    "relayer",
    "set_config_dim",
    "width_prune",
]

_DENSE_MLP = {
    Role.MLP_GATE: Role.MOE_EXPERT_GATE,
    Role.MLP_UP: Role.MOE_EXPERT_UP,
    Role.MLP_DOWN: Role.MOE_EXPERT_DOWN,
}
# transformers 5 configs list each layer's attention kind; the list must follow the layers.
_PER_LAYER_CONFIG_KEYS = ("layer_types",)


# --- config -------------------------------------------------------------------------------------


def _text_section(
    config: MutableMapping[str, Any], definition: Definition
) -> MutableMapping[str, Any]:
    section = definition.hf_config_section
    nested = config.get(section) if section else None
    return nested if isinstance(nested, MutableMapping) else config


def set_config_dim(
    config: MutableMapping[str, Any], definition: Definition, field: str, value: Any
) -> None:
    """Write dimension ``field`` under the config key the definition reads it from."""
    for source in definition.dims["hf"].get(field, ()):
        if source.combine == "key":
            _text_section(config, definition)[source.keys[0]] = value
            return
    raise ArchitectureError(
        f"the {definition.family} definition names no config key for {field}",
        path=str(definition.path),
        hint=f"add dims.hf.{field} to the definition",
    )


# --- width pruning ------------------------------------------------------------------------------


def _canonical(state: State, entry: Entry) -> Array:
    stored = state[entry.tensor]
    return stored.T if entry.transposed and stored.ndim == 2 else stored


def _whole(entry: Entry, what: str) -> None:
    if entry.cut is not None or entry.expert_index is not None:
        raise UnsupportedFormatError(
            f"{entry.tensor}: {what} cannot cut a fused or stacked tensor",
            hint="unfuse the checkpoint's tensors first (save it with per-role tensors)",
        )


def _blocks(kept: Sequence[int], total: int, length: int) -> Array:
    width = length // total
    return (np.asarray(kept)[:, None] * width + np.arange(width)[None, :]).reshape(-1)


def _unit_scores(resolved: ResolvedModel, layer: int) -> Array:
    """Per MLP unit: norm of its down-projection column times norm of its up-projection row."""
    down = resolved.read(Role.MLP_DOWN, layer).astype(np.float64)
    up = resolved.read(Role.MLP_UP, layer).astype(np.float64)
    result: Array = np.linalg.norm(down, axis=0) * np.linalg.norm(up, axis=1)
    return result


def _group_scores(resolved: ResolvedModel, layer: int, groups: int) -> Array:
    """Per key/value group: norm of its value rows times norm of its heads' output columns."""
    value = resolved.read(Role.ATTN_V, layer).astype(np.float64)
    out = resolved.read(Role.ATTN_O, layer).astype(np.float64)
    v_norm = np.linalg.norm(value.reshape(groups, -1), axis=1)
    o_norm = np.linalg.norm(out.T.reshape(groups, -1), axis=1)
    result: Array = v_norm * o_norm
    return result


def _select(scores: Array, count: int, selection: str, rng: np.random.Generator) -> list[int]:
    if selection == "magnitude":
        chosen = np.argsort(-scores, kind="stable")[:count]
    elif selection == "random":
        chosen = rng.choice(len(scores), size=count, replace=False)
    else:
        raise ValueError(f"selection must be 'magnitude' or 'random', not {selection!r}")
    return sorted(int(i) for i in chosen)


def _kept_count(fraction: float, total: int, what: str) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"{what} must be a fraction in (0, 1], got {fraction}")
    return max(1, round(fraction * total))


def _prune_axes(state: State, entry: Entry, index: Mapping[Axis, Array]) -> None:
    """Replace ``entry``'s tensor by its slice along every declared axis that ``index`` cuts."""
    positions = [(p, a) for p, a in enumerate(entry.role.axes) if a in index]
    if not positions:
        return
    _whole(entry, "width_prune")
    array = _canonical(state, entry)
    for position, axis in positions:
        array = np.take(array, index[axis], axis=position)
    state[entry.tensor] = np.ascontiguousarray(array.T if entry.transposed else array)


def _head_index(resolved: ResolvedModel, groups: list[int]) -> tuple[list[int], dict[Axis, Array]]:
    """The query heads of the kept key/value ``groups``, and the element indices of every
    per-head axis that keeps them."""
    dims = resolved.dims
    heads, kv, head_dim = dims.heads or 0, dims.kv_heads or 0, dims.head_dim or 0
    v_dim = dims.v_head_dim or head_dim
    per_group = heads // kv
    query = [g * per_group + j for g in groups for j in range(per_group)]
    return query, {
        Axis.Q_OUT: _blocks(query, heads, head_dim * heads),
        Axis.ATTN_OUT: _blocks(query, heads, v_dim * heads),
        Axis.KV_OUT: _blocks(groups, kv, head_dim * kv),
        Axis.V_OUT: _blocks(groups, kv, v_dim * kv),
    }


def _check_prunable(resolved: ResolvedModel, heads_keep: float | None) -> tuple[int, int, int]:
    dims = resolved.dims
    if dims.experts or any(e.expert is not None for e in resolved.entries):
        raise UnsupportedFormatError(
            f"width_prune prunes dense MLPs; this {resolved.family} model has experts",
            hint="prune the dense model before upcycling it",
        )
    if dims.intermediate is None:
        raise ArchitectureError("the intermediate size is unknown; cannot prune MLP units")
    if heads_keep is not None and not (
        dims.heads and dims.kv_heads and dims.head_dim and dims.heads % dims.kv_heads == 0
    ):
        raise ArchitectureError(
            f"{resolved.family}: heads={dims.heads}, kv_heads={dims.kv_heads}, "
            f"head_dim={dims.head_dim} do not form key/value groups",
            hint="set num_attention_heads, num_key_value_heads and head_dim in config.json",
        )
    return dims.intermediate, dims.heads or 0, dims.kv_heads or 0


@register("width_prune")
def width_prune(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator,
    *,
    keep: float = 0.75,
    selection: str = "magnitude",
    heads_keep: float | None = None,
) -> Derived:
    """Keep a fraction ``keep`` of each layer's MLP units and, if ``heads_keep`` is given,
    that fraction of its key/value groups (each with all its query heads).

    ``selection`` is "magnitude" (largest norm of down column × up row; for heads,
    of value rows × output columns) or "random" (drawn from ``rng``). Kept indices
    stay in their original order. Every layer keeps the same number, since the
    config holds one intermediate size and one head count.
    """
    resolved = resolve_state(state, config)
    intermediate, heads, kv = _check_prunable(resolved, heads_keep)
    units = _kept_count(keep, intermediate, "keep")
    groups = 0 if heads_keep is None else _kept_count(heads_keep, kv, "heads_keep")
    out = dict(state)  # arrays replaced, never written into
    maps: dict[str, list[list[int]]] = {"mlp_units": []}
    for layer in resolved.layers:
        kept_units = _select(_unit_scores(resolved, layer), units, selection, rng)
        index: dict[Axis, Array] = {Axis.INTERMEDIATE: np.asarray(kept_units)}
        maps["mlp_units"].append(kept_units)
        if groups:
            kept = _select(_group_scores(resolved, layer, kv), groups, selection, rng)
            query, head_index = _head_index(resolved, kept)
            index.update(head_index)
            maps.setdefault("kv_heads", []).append(kept)
            maps.setdefault("heads", []).append(query)
        for entry in (e for e in resolved.entries if e.layer == layer):
            _prune_axes(out, entry, index)
    new_config = copy.deepcopy(config)
    set_config_dim(new_config, resolved.definition, "intermediate", units)
    if groups:
        set_config_dim(new_config, resolved.definition, "heads", groups * (heads // kv))
        set_config_dim(new_config, resolved.definition, "kv_heads", groups)
        set_config_dim(new_config, resolved.definition, "head_dim", resolved.dims.head_dim)
    return Derived(
        state={name: np.array(array, copy=True) for name, array in out.items()},
        config=new_config,
        transformation="width_prune",
        params={"keep": keep, "selection": selection, "heads_keep": heads_keep},
        maps=maps,
    )


# --- depth: dropping and duplicating layers -----------------------------------------------------


def _renumbered(definition: Definition, name: str, layer: int) -> str:
    """``name`` with the ``{layer}`` its definition template matched set to ``layer``."""
    matched = match_names(definition, "hf", [name]).matches
    found = matched[0].pattern.regex.fullmatch(name) if matched else None
    if found is None or found.groupdict().get("layer") is None:
        raise ArchitectureError(f"{name}: no layer template of {definition.family} matches it")
    return name[: found.start("layer")] + str(layer) + name[found.end("layer") :]


def relayer(
    state: State, config: Mapping[str, Any], sources: Sequence[int]
) -> tuple[State, dict[str, Any]]:
    """A model whose layer ``i`` is a copy of layer ``sources[i]``; the new config.

    Tensors that a definition ignores (rotary buffers) are left out: transformers
    rebuilds them, and their layer numbers would be stale.
    """
    resolved = resolve_state(state, config)
    count = resolved.dims.layers or 0
    if not sources or any(not 0 <= s < count for s in sources):
        raise ValueError(
            f"layer sources must be a non-empty list in range({count}), got {list(sources)}"
        )
    by_layer: dict[int, list[str]] = {}
    out: State = {}
    for entry in resolved.entries:
        if entry.layer is None:
            out[entry.tensor] = np.array(state[entry.tensor], copy=True)
        else:
            by_layer.setdefault(entry.layer, [])
            if entry.tensor not in by_layer[entry.layer]:
                by_layer[entry.layer].append(entry.tensor)
    for new, old in enumerate(sources):
        for name in by_layer.get(old, []):
            out[_renumbered(resolved.definition, name, new)] = np.array(state[name], copy=True)
    new_config = copy.deepcopy(dict(config))
    set_config_dim(new_config, resolved.definition, "layers", len(sources))
    section = _text_section(new_config, resolved.definition)
    for key in _PER_LAYER_CONFIG_KEYS:
        value = section.get(key)
        if isinstance(value, list) and len(value) == count:
            section[key] = [value[s] for s in sources]
    return out, new_config


def _layer_count(state: State, config: Mapping[str, Any]) -> int:
    layers = resolve_state(state, config).dims.layers
    if not layers:
        raise ArchitectureError("the layer count is unknown; cannot change the depth")
    return layers


@register("depth_prune")
def depth_prune(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator | None = None,
    *,
    which: str = "last",
    count: int = 1,
    layers: Sequence[int] = (),
) -> Derived:
    """Drop layers: the ``count`` last ("last"), every odd-numbered one ("every_other"),
    or those listed in ``layers`` ("layers"); the rest are renumbered in order.

    ``maps["layers"][i]`` is the original layer that new layer ``i`` is.
    """
    del rng  # deterministic; the parameter keeps the transformation signature uniform
    total = _layer_count(state, config)
    if which == "last":
        dropped = set(range(total - count, total))
    elif which == "every_other":
        dropped = set(range(1, total, 2))
    elif which == "layers":
        dropped = set(layers)
        if not dropped <= set(range(total)):
            raise ValueError(f"layers to drop must lie in range({total}), got {sorted(dropped)}")
    else:
        raise ValueError(f"which must be 'last', 'every_other' or 'layers', not {which!r}")
    sources = [layer for layer in range(total) if layer not in dropped]
    new_state, new_config = relayer(state, config, sources)
    return Derived(
        state=new_state,
        config=new_config,
        transformation="depth_prune",
        params={"which": which, "count": count, "layers": sorted(int(x) for x in layers)},
        maps={"layers": sources},
    )


@register("depth_upscale")
def depth_upscale(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator | None = None,
    *,
    mode: str = "solar",
    k: int = 1,
    block: Sequence[int] = (0, 1),
    layers: Sequence[int] = (),
) -> Derived:
    """Duplicate layers. "solar": layers ``[0, n-k)`` then ``[k, n)`` (SOLAR's depth
    up-scaling); "repeat": the ``block = (start, stop)`` of layers is inserted a second
    time right after itself; "layers": the explicit source list ``layers``.

    ``maps["layers"][i]`` is the source layer of new layer ``i`` (duplicates repeat).
    """
    del rng
    total = _layer_count(state, config)
    if mode == "solar":
        if not 0 < k < total:
            raise ValueError(f"k must be in (0, {total}), got {k}")
        sources = [*range(total - k), *range(k, total)]
    elif mode == "repeat":
        start, stop = block
        if not 0 <= start < stop <= total:
            raise ValueError(f"block must be (start, stop) with 0 <= start < stop <= {total}")
        sources = [*range(stop), *range(start, total)]
    elif mode == "layers":
        sources = [int(x) for x in layers]
    else:
        raise ValueError(f"mode must be 'solar', 'repeat' or 'layers', not {mode!r}")
    new_state, new_config = relayer(state, config, sources)
    return Derived(
        state=new_state,
        config=new_config,
        transformation="depth_upscale",
        params={"mode": mode, "k": k, "block": list(block), "layers": list(layers)},
        maps={"layers": sources},
    )


# --- MoE upcycling ------------------------------------------------------------------------------


def _family(name: str) -> Definition:
    for definition in definitions():
        if definition.family == name:
            return definition
    raise ArchitectureError(f"no architecture definition for {name!r}")


def _render(
    definition: Definition, role: Role, layer: int | None, expert: int | None
) -> tuple[str, bool]:
    """The name ``definition`` gives one role instance stored on its own, and whether transposed."""
    for pattern in definition.patterns_for("hf"):
        if pattern.parts == (role,) and not pattern.fused and not pattern.stacked:
            name = pattern.template.replace("{base}", definition.base_prefixes[0])
            name = name.replace("{layer}", str(layer)).replace("{expert}", str(expert))
            return name, pattern.transposed
    raise ArchitectureError(
        f"{definition.family} has no tensor for {role.role_name}; cannot upcycle to it",
        hint="upcycle a llama-style model (no attention biases)",
    )


def _put(
    out: State, target: Definition, entry: Entry, array: Array, expert: int | None = None
) -> None:
    role = _DENSE_MLP.get(entry.role, entry.role) if expert is not None else entry.role
    name, transposed = _render(target, role, entry.layer, expert)
    out[name] = np.ascontiguousarray(array.T if transposed else array)


def _noisy(array: Array, noise: float, rng: np.random.Generator) -> Array:
    if noise == 0:
        return np.array(array, copy=True)
    scale = noise * float(np.std(array))
    return (array + rng.normal(0.0, scale, array.shape)).astype(array.dtype)


@register("moe_upcycle")
def moe_upcycle(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator,
    *,
    experts: int = 4,
    top_k: int = 2,
    noise: float = 0.0,
    router_std: float = 0.02,
) -> Derived:
    """A dense llama-style model as a Mixtral: every expert a copy of its layer's MLP.

    ``noise`` adds Gaussian noise of that fraction of each weight's own standard
    deviation to every expert copy; routers are drawn from N(0, router_std²). With
    ``noise=0`` the function is preserved: Mixtral renormalises the top-k routing
    weights to sum to one, and identical experts then sum to the dense MLP.
    Saved in the hub's per-expert layout (``block_sparse_moe.experts.{e}.w1``).
    """
    if not 0 < top_k <= experts:
        raise ValueError(f"top_k must be in [1, experts={experts}], got {top_k}")
    resolved = resolve_state(state, config)
    if resolved.dims.experts or any(e.expert is not None for e in resolved.entries):
        raise UnsupportedFormatError(
            f"{resolved.family} model already has experts; upcycle a dense one"
        )
    target = _family("mixtral")
    hidden = axis_size(Axis.HIDDEN, resolved.dims)
    if hidden is None:
        raise ArchitectureError("the hidden size is unknown; cannot draw the routers")
    out: State = {}
    for entry in resolved.entries:
        _whole(entry, "moe_upcycle")
        array = _canonical(state, entry)
        if entry.role not in _DENSE_MLP:
            _put(out, target, entry, np.array(array, copy=True))
            continue
        for expert in range(experts):
            _put(out, target, entry, _noisy(array, noise, rng), expert)
    for layer in resolved.layers:
        dtype = state[resolved.entry(Role.MLP_DOWN, layer).tensor].dtype
        router = rng.normal(0.0, router_std, (experts, hidden)).astype(dtype)
        name, transposed = _render(target, Role.MOE_ROUTER, layer, None)
        out[name] = np.ascontiguousarray(router.T if transposed else router)
    new_config = copy.deepcopy(config)
    # Jitter would make training-mode routing random; the rest is Mixtral's own switches.
    new_config.update(
        model_type=target.hf_model_types[0],
        architectures=[target.hf_architectures[0]],
        router_jitter_noise=0.0,
        output_router_logits=False,
    )
    set_config_dim(new_config, target, "experts", experts)
    set_config_dim(new_config, target, "experts_per_token", top_k)
    return Derived(
        state=out,
        config=new_config,
        transformation="moe_upcycle",
        params={"experts": experts, "top_k": top_k, "noise": noise, "router_std": router_std},
        function_preserving=noise == 0,
        maps={"expert_source_layer": [[layer] * experts for layer in resolved.layers]},
    )
