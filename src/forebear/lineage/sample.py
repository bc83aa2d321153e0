"""The same rows of every tensor several models share, for fits across models.

``shared_sample(models, budget)`` walks the first model's role instances
(canonical orientation, so a GGUF and a safetensors copy line up), keeps those
every model holds with the same shape, and reads the same deterministic row
sample of each: every tensor gets an equal share of ``budget`` elements per
model, so a small model is read whole and a 7B one in a few rows a tensor.
Memory is the sample's: ``budget`` float64 values per model.

This module reads; ``decompose`` fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forebear.architectures import Role
from forebear.compare.evidence import sample_units
from forebear.compare.verdict import Shape, storage_error
from forebear.errors import ArchitectureError
from forebear.formats.base import Array
from forebear.model import Model

__all__ = ["SharedSample", "TensorSample", "shared_sample", "unit_roundoff"]


@dataclass(frozen=True)
class TensorSample:
    """One role instance: the sampled rows of each model, flattened (float64)."""

    name: str  # "layer 3 mlp_up", "token_embeddings", ...
    layer: int | None
    values: tuple[Array, ...]  # one per model, in the order given
    size: int  # the whole tensor's size (elements), for weighting and reporting


@dataclass(frozen=True)
class SharedSample:
    tensors: tuple[TensorSample, ...]
    skipped: tuple[str, ...]  # role instances some model lacks or holds in another shape

    @property
    def elements(self) -> int:
        return sum(len(t.values[0]) for t in self.tensors)


def _label(role: str, layer: int | None, expert: int | None) -> str:
    parts = [] if layer is None else [f"layer {layer}"]
    parts += [] if expert is None else [f"expert {expert}"]
    return " ".join([*parts, role])


def shared_sample(models: Sequence[Model], budget: int = 1 << 24) -> SharedSample:
    """The row sample every model shares (see the module docstring)."""
    first = models[0].resolved
    shared = []
    skipped: list[str] = []
    for entry in first.entries:
        role, layer, expert = entry.role, entry.layer, entry.expert
        shape = first.shape(role, layer, expert)
        if any(
            not m.resolved.has(role, layer, expert)
            or m.resolved.shape(role, layer, expert) != shape
            for m in models[1:]
        ):
            skipped.append(_label(role.value.name, layer, expert))
        else:
            shared.append((role, layer, expert, shape))
    if not shared:
        raise ArchitectureError(
            f"{models[0].name}: shares no tensor of the same shape with the other models",
            hint="a merge's parents have the merged model's architecture and size",
        )
    allowance = max(1, budget // len(shared))
    found = []
    for role, layer, expert, shape in shared:
        columns = int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape))
        rows = max(1, allowance // max(columns, 1))
        values = tuple(_read(m, role, layer, expert, rows) for m in models)
        found.append(
            TensorSample(_label(role.value.name, layer, expert), layer, values, int(np.prod(shape)))
        )
    return SharedSample(tuple(found), tuple(skipped))


def _read(model: Model, role: Role, layer: int | None, expert: int | None, rows: int) -> Array:
    """``rows`` of the tensor spread over its first axis (all of them when it has fewer)."""
    resolved = model.resolved
    shape = resolved.shape(role, layer, expert)
    if len(shape) == 2 and shape[0] > rows:
        positions = sample_units(shape[0], rows)
        if resolved.rows_contiguous(role, layer, expert):
            matrix = resolved.read_row_set(role, layer, expert, rows=positions)
        else:
            matrix = resolved.read(role, layer, expert)[positions]
    else:
        matrix = resolved.read(role, layer, expert)
    flat: Array = np.asarray(matrix, dtype=np.float64).reshape(-1)
    return flat


def unit_roundoff(model: Model) -> float:
    """The relative rounding of the model's coarsest stored weight type."""
    found = storage_error(Shape.of_model(model).dtypes)
    return 2.0**-24 if found is None else found
