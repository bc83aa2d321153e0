"""FP8 weights stored in safetensors with their scales, presented as the floats they encode.

Owns the two FP8 layouts of DeepSeek-V3 and compressed-tensors checkpoints: an ``F8_*``
tensor ``T`` with a sibling ``T_scale_inv`` of one float per ``weight_block_size`` block
(block-scaled), or ``T_scale`` of one float per tensor or per output row (scaled). Despite
its name, ``_scale_inv`` multiplies. This module detects those pairs by exact name suffix,
checks the scale's shape and dequantises rows; it reads bytes only through the reader it is
given. Parsing ``quantization_config`` and wrapping the reader belong to ``formats.quantized``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from forebear.errors import CorruptCheckpointError
from forebear.formats._layout import FLOAT_DTYPES, Layout
from forebear.formats.base import Array, CheckpointReader, TensorInfo

__all__ = ["DEFAULT_BLOCK", "FP8_DTYPES", "ScaledLayout", "fp8_layout"]

FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
# DeepSeek-V3's weight_block_size, assumed when no quantization_config gives one.
DEFAULT_BLOCK = (128, 128)
# Checked in this order: a tensor with both siblings is read as block-scaled.
_SCALE_SUFFIXES = (("_scale_inv", True), ("_scale", False))


@dataclass(frozen=True)
class ScaledLayout(Layout):
    """An FP8 layout that also says which stored rows a run of its rows reads."""

    scale: TensorInfo
    blocked: bool
    block: tuple[int, int]

    def prefetch(self, reader: CheckpointReader, runs: Sequence[tuple[int, int]]) -> None:
        """Hint ``reader`` at the weight's rows and at the scale rows they are scaled by."""
        hint = getattr(reader, "prefetch_rows", None)
        if hint is None:
            return
        hint(self.info.name, runs)
        if self.blocked and len(self.info.shape) == 2:
            rows = self.block[0]
            hint(self.scale.name, [(start // rows, -(-stop // rows)) for start, stop in runs])
        elif self.blocked or self.scale.shape[:1] == self.info.shape[:1]:
            hint(self.scale.name, runs)  # one scale row (or block grid) per weight row


def fp8_layout(
    name: str, infos: Mapping[str, TensorInfo], block: tuple[int, int], where: str
) -> Layout | None:
    """The layout of stored tensor ``name`` with its scale sibling, or None when it has none."""
    info = infos[name]
    if info.dtype not in FP8_DTYPES or len(info.shape) < 2:
        return None
    for suffix, blocked in _SCALE_SUFFIXES:
        if name + suffix in infos:
            return _scaled_layout(info, infos[name + suffix], blocked, block, where)
    return None


def _scaled_layout(
    info: TensorInfo, scale: TensorInfo, blocked: bool, block: tuple[int, int], where: str
) -> Layout:
    shape = info.shape
    lead, (out, in_features) = shape[:-2], shape[-2:]
    if blocked:
        expected: tuple[tuple[int, ...], ...] = (
            (*lead, -(-out // block[0]), -(-in_features // block[1])),
        )
    else:
        expected = ((), (1,), (out, 1), (out,)) if not lead else ((), (1,))
    if scale.shape not in expected or scale.dtype not in FLOAT_DTYPES:
        raise CorruptCheckpointError(
            f"{scale.name!r} is {scale.dtype} {scale.shape}, expected a float tensor of "
            f"shape {' or '.join(str(s) for s in expected)} for {info.name!r} {shape}",
            path=where,
            hint="the checkpoint is damaged or weight_block_size does not match it",
        )

    def rows_of(reader: CheckpointReader, start: int, stop: int) -> Array:
        values = reader.read_rows(info.name, start, stop).astype(np.float32)
        return values * _scales(reader, scale, blocked, block, start, stop, shape)

    kind = "BLOCK" if blocked else "SCALED"
    logical = TensorInfo(
        info.name, f"{info.dtype}_{kind}", shape, info.spans + scale.spans, (info.name, scale.name)
    )
    return ScaledLayout(logical, rows_of, scale, blocked, block)


def _scales(
    reader: CheckpointReader,
    scale: TensorInfo,
    blocked: bool,
    block: tuple[int, int],
    start: int,
    stop: int,
    shape: tuple[int, ...],
) -> Array:
    """Scales broadcastable against rows ``[start, stop)`` of the weight."""
    if blocked and len(shape) == 2:  # rows of the weight share scale rows block by block
        first = start // block[0]
        rows = reader.read_rows(scale.name, first, -(-stop // block[0])).astype(np.float32)
        rows = np.repeat(rows, block[0], axis=0)[start - first * block[0] :][: stop - start]
        return np.repeat(rows, block[1], axis=1)[:, : shape[-1]]
    if blocked:  # one block grid per leading index (stacked experts)
        grid = reader.read_rows(scale.name, start, stop).astype(np.float32)
        grid = np.repeat(np.repeat(grid, block[0], axis=-2), block[1], axis=-1)
        return grid[..., : shape[-2], : shape[-1]]
    if scale.shape in ((), (1,)):
        return reader.read(scale.name).astype(np.float32).reshape(())
    rows = reader.read_rows(scale.name, start, stop).astype(np.float32)
    return rows.reshape(stop - start, 1)
