"""The MLPs of one layer as ``MlpView``s: dense, routed experts, shared experts.

Rows are read by role and the norm scale before the MLP is folded into the
reading rows; a ``rotation``, when given, maps them into the other model's
residual basis (``x @ rotation``; the pipeline rotates only B's sampled rows,
in ``evidence.prepare``). Dense MLP and experts alike become views, so an upcycled
MoE's experts are compared with the dense MLP they were copied from.

``ReadCounter`` adds up the stored bytes behind every read, which the
comparison reports. This module owns reading; it tests nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from forebear.align.units import MlpView
from forebear.architectures import Role
from forebear.architectures.resolve import ResolvedModel
from forebear.compare.evidence import Prepared, sample_units
from forebear.formats.base import Array

__all__ = [
    "ReadCounter",
    "first_mlp_view",
    "layer_views",
    "norm_scale",
    "reading_rows",
    "sampled_layer_views",
]


@dataclass
class ReadCounter:
    """Stored bytes read, per model (by the share of each tensor a read touches)."""

    bytes: dict[str, int] = field(default_factory=dict)

    def add(self, model: str, resolved: ResolvedModel, role: Role, layer: int | None,
            expert: int | None = None, rows: int | None = None) -> None:  # fmt: skip
        size = resolved.stored_bytes(role, layer, expert, rows=rows)
        self.bytes[model] = self.bytes.get(model, 0) + size

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


_BLOCK_BYTES = 32 << 20  # decode this much at a time when filling a float32 matrix


def read_float32(
    resolved: ResolvedModel, role: Role, layer: int | None, expert: int | None = None
) -> Array:
    """The role as a fresh float32 array, decoded in row blocks where the layout allows:
    a bf16 matrix then costs its float32 size plus one block, not three times its size."""
    shape = resolved.shape(role, layer, expert)
    if len(shape) != 2 or not resolved.rows_contiguous(role, layer, expert):
        return resolved.read(role, layer, expert).astype(np.float32, copy=False)
    out = np.empty(shape, dtype=np.float32)
    step = max(1, _BLOCK_BYTES // max(shape[1] * 4, 1))
    for start in range(0, shape[0], step):
        rows = np.arange(start, min(start + step, shape[0]))
        out[rows[0] : rows[-1] + 1] = resolved.read_row_set(role, layer, expert, rows=rows)
    return out


_DENSE = (Role.MLP_GATE, Role.MLP_UP, Role.MLP_DOWN)
_EXPERT = (Role.MOE_EXPERT_GATE, Role.MOE_EXPERT_UP, Role.MOE_EXPERT_DOWN)
_SHARED = (Role.MOE_SHARED_GATE, Role.MOE_SHARED_UP, Role.MOE_SHARED_DOWN)


def norm_scale(resolved: ResolvedModel, layer: int, role: Role = Role.FFN_NORM) -> Array | None:
    """The scale of the norm before the rows that read the stream (float32), or None."""
    if resolved.has(role, layer):
        return resolved.norm_scale(role, layer).astype(np.float32)
    return None


def reading_rows(matrix: Array, scale: Array | None, rotation: Array | None) -> Array:
    """Rows that read the stream, with the norm scale folded in (in place: every read
    returns a fresh array) and mapped by ``rotation`` when given."""
    if scale is not None:
        matrix *= scale[None, :]
    return matrix if rotation is None else np.asarray(matrix @ rotation, dtype=np.float32)


def _view(
    resolved: ResolvedModel,
    model: str,
    label: str,
    roles: tuple[Role, Role, Role],
    layer: int,
    expert: int | None,
    scale: Array | None,
    rotation: Array | None,
    counter: ReadCounter,
) -> MlpView | None:
    gate_role, up_role, down_role = roles
    if not (resolved.has(up_role, layer, expert) and resolved.has(down_role, layer, expert)):
        return None

    def read(role: Role) -> Array:
        counter.add(model, resolved, role, layer, expert)
        return read_float32(resolved, role, layer, expert)

    gate = (
        reading_rows(read(gate_role), scale, rotation)
        if resolved.has(gate_role, layer, expert)
        else None
    )
    up = reading_rows(read(up_role), scale, rotation)
    down = read(down_role).T
    if rotation is not None:
        down = down @ rotation
    up = np.asarray(up, dtype=np.float32)
    down = np.asarray(down, dtype=np.float32)
    gate = None if gate is None else np.asarray(gate, dtype=np.float32)
    parameters = up.size * (3 if gate is not None else 2)
    return MlpView(label, gate, up, down, parameters)


def layer_views(
    resolved: ResolvedModel,
    model: str,
    layer: int,
    rotation: Array | None,
    counter: ReadCounter,
) -> list[MlpView]:
    """Every MLP of ``layer``; ``rotation`` maps this model's rows into the other's basis."""
    scale = norm_scale(resolved, layer)
    found: list[MlpView] = []
    dense = _view(resolved, model, "mlp", _DENSE, layer, None, scale, rotation, counter)
    if dense is not None:
        found.append(dense)
    for expert in range(resolved.dims.experts or 0):
        view = _view(
            resolved, model, f"expert {expert}", _EXPERT, layer, expert, scale, rotation, counter
        )
        if view is not None:
            found.append(view)
    shared = _view(resolved, model, "shared expert", _SHARED, layer, None, scale, rotation, counter)
    if shared is not None:
        found.append(shared)
    return found


def first_mlp_view(
    resolved: ResolvedModel, model: str, layer: int, counter: ReadCounter
) -> MlpView | None:
    """The layer's dense MLP, or its first routed expert when it has none (an upcycled MoE's
    experts are copies of one dense MLP), in the model's own basis; None: neither."""
    scale = norm_scale(resolved, layer)
    dense = _view(resolved, model, "mlp", _DENSE, layer, None, scale, None, counter)
    if dense is not None or not resolved.dims.experts:
        return dense
    return _view(resolved, model, "expert 0", _EXPERT, layer, 0, scale, None, counter)


def sampled_layer_views(
    resolved: ResolvedModel,
    model: str,
    layer: int,
    rotation: Array | None,
    counter: ReadCounter,
    units: int,
) -> list[Prepared]:
    """The dense MLP's gate and up rows at ``units`` positions spread over its width (the
    same positions for any model of that width), folded and mapped; no down columns. A
    layer without a dense MLP gives its first routed expert's (``first_mlp_view``'s rule)."""
    gate_role, up_role, _ = _DENSE
    expert: int | None = None
    label = "mlp"
    if not resolved.has(up_role, layer):
        gate_role, up_role, _ = _EXPERT
        expert, label = 0, "expert 0"
        if not resolved.dims.experts or not resolved.has(up_role, layer, expert):
            return []
    width = resolved.shape(up_role, layer, expert)[0]
    positions = sample_units(width, units)
    scale = norm_scale(resolved, layer)

    def rows(role: Role) -> Array:
        counter.add(model, resolved, role, layer, expert, rows=len(positions))
        matrix = resolved.read_row_set(role, layer, expert, rows=positions)
        return reading_rows(matrix.astype(np.float32, copy=False), scale, rotation)

    gate = rows(gate_role) if resolved.has(gate_role, layer, expert) else None
    hidden = resolved.dims.hidden or 0
    parameters = width * hidden * (3 if gate is not None else 2)
    return [Prepared(label, width, positions, (gate, rows(up_role), None), None, parameters)]
