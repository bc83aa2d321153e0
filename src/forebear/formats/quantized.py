"""Quantised layouts stored in safetensors, presented as the float weights they encode.

Three layouts are recognised by exact tensor-name suffixes on one module prefix:

* **GPTQ** (AutoGPTQ, GPTQModel, transformers): ``qweight`` int32 ``(in·bits/32, out)``
  packed along the input axis, ``qzeros`` int32 ``(groups, out·bits/32)`` packed along
  the output axis, ``scales`` ``(groups, out)`` and optional ``g_idx`` ``(in,)`` giving
  each input row its group (act-order). ``checkpoint_format`` ``gptq`` (v1, the
  default) stores every zero point minus one; ``gptq_v2`` stores it as is.
* **AWQ** (AutoAWQ GEMM): ``qweight`` int32 ``(in, out/8)`` and ``qzeros`` int32
  ``(groups, out/8)``, both packed along the output axis in the interleaved nibble
  order 0,2,4,6,1,3,5,7; ``scales`` ``(groups, out)``.
* **FP8** (DeepSeek-V3 and compressed-tensors): an ``F8_*`` tensor with a sibling
  ``_scale_inv`` or ``_scale``; its detection and dequantisation live in ``formats.fp8``.

Each packed module becomes one float32 tensor ``<prefix>.weight`` of shape
``(out, in)`` (the orientation of ``nn.Linear``) whose ``parts`` name the stored
tensors and whose ``spans`` are theirs; the stored parts are hidden. Everything
else passes through. This module owns the bit layouts; it reads bytes only
through the wrapped reader. It also owns ``quantization_config`` parsing and
``QuantizedReader``, which presents every layout (FP8 included) over the wrapped reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forebear.errors import CorruptCheckpointError, UnsupportedFormatError
from forebear.formats._layout import FLOAT_DTYPES, Layout
from forebear.formats.base import Array, BaseReader, CheckpointReader, TensorInfo
from forebear.formats.fp8 import DEFAULT_BLOCK, ScaledLayout, fp8_layout

__all__ = ["QuantizedReader", "dequantizing"]

_QWEIGHT, _QZEROS, _SCALES, _G_IDX = ".qweight", ".qzeros", ".scales", ".g_idx"
# AutoAWQ writes output column order_map[i] into nibble i of each word.
_AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_AWQ_UNPACK_ORDER = tuple(int(i) for i in np.argsort(_AWQ_PACK_ORDER))
_GPTQ_ZERO_OFFSET = {"gptq": 1, "gptq_v2": 0}
_CONFIG_HINT = "pass the quantization_config from the model's config.json"


@dataclass(frozen=True)
class _Settings:
    method: str | None  # "gptq", "awq", another method, or None to decide from shapes
    bits: int
    group_size: int  # -1: one group over the whole input axis
    zero_offset: int
    awq_version: str
    block: tuple[int, int]


def _config_error(where: str, message: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"quantization_config {message}", path=where, hint=_CONFIG_HINT)


def _int_setting(config: Mapping[str, Any], keys: tuple[str, ...], default: int, where: str) -> int:
    # AutoAWQ's own quant_config.json says w_bit / q_group_size for bits / group_size.
    value = next((config[key] for key in keys if key in config), default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _config_error(where, f"{keys[0]} is {value!r}, expected an integer")
    return value


def _parse_settings(config: Mapping[str, Any], where: str) -> _Settings:
    method = config.get("quant_method")
    if method is not None and not isinstance(method, str):
        raise _config_error(where, f"quant_method is {method!r}, expected a string")
    bits = _int_setting(config, ("bits", "w_bit"), 4, where)
    group_size = _int_setting(config, ("group_size", "q_group_size"), 128, where)
    if group_size != -1 and group_size <= 0:
        raise _config_error(where, f"group_size is {group_size}, expected -1 or a positive size")
    fmt = config.get("checkpoint_format", "gptq")
    if config.get("is_marlin_format") is True:
        fmt = "marlin"
    block = config.get("weight_block_size") or DEFAULT_BLOCK
    if (
        not isinstance(block, list | tuple)
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise _config_error(where, f"weight_block_size is {block!r}, expected two positive sizes")
    offset = _GPTQ_ZERO_OFFSET.get(fmt) if isinstance(fmt, str) else None
    return _Settings(
        method=method.lower() if method else None,
        bits=bits,
        group_size=group_size,
        zero_offset=-1 if offset is None else offset,  # -1 marks a format refused on use
        awq_version=str(config.get("version", "gemm")).lower(),
        block=(block[0], block[1]),
    )


# ---------------------------------------------------------------- bit unpacking


def _shifts(bits: int) -> Array:
    return np.arange(0, 32, bits, dtype=np.uint32)


def _unpack_along_rows(words: Array, bits: int) -> Array:
    """Word ``[r, c]`` holds codes of rows ``r·k … r·k+k-1`` (k = 32/bits), lowest bits first."""
    codes = (words.view(np.uint32)[:, None, :] >> _shifts(bits)[None, :, None]) & ((1 << bits) - 1)
    return codes.reshape(words.shape[0] * (32 // bits), words.shape[1]).astype(np.int16)


def _unpack_along_cols(words: Array, bits: int, order: tuple[int, ...] | None = None) -> Array:
    """Word ``[r, c]`` holds codes of columns ``c·k … c·k+k-1``, in ``order`` when interleaved."""
    codes = (words.view(np.uint32)[:, :, None] >> _shifts(bits)[None, None, :]) & ((1 << bits) - 1)
    if order is not None:
        codes = codes[:, :, list(order)]
    return codes.reshape(words.shape[0], words.shape[1] * codes.shape[2]).astype(np.int16)


def _packed_cols(
    reader: CheckpointReader,
    name: str,
    start: int,
    stop: int,
    bits: int,
    order: tuple[int, ...] | None,
) -> Array:
    """Logical columns ``[start, stop)`` of a tensor packed along its columns."""
    per_word = 32 // bits
    first = start // per_word
    words = reader.read(name)[:, first : -(-stop // per_word)]
    codes = _unpack_along_cols(words, bits, order)
    return codes[:, start - first * per_word : stop - first * per_word]


def _affine(codes: Array, zeros: Array, scales: Array, groups: Array) -> Array:
    """``(q - z[g]) · s[g]`` over ``(in, n)`` codes, returned as ``(n, in)`` float32."""
    weight = (codes - zeros[groups]).astype(np.float32) * scales.astype(np.float32)[groups]
    return np.ascontiguousarray(weight.T)


def _default_groups(in_features: int, group_size: int) -> Array:
    if group_size == -1:
        return np.zeros(in_features, dtype=np.int64)
    return np.arange(in_features, dtype=np.int64) // group_size


def _group_count(in_features: int, group_size: int) -> int:
    return 1 if group_size == -1 else -(-in_features // group_size)


# ---------------------------------------------------------------- GPTQ and AWQ


@dataclass(frozen=True)
class _IntModule:
    prefix: str
    where: str
    infos: Mapping[str, TensorInfo]
    has_g_idx: bool

    def shape(self, suffix: str) -> tuple[int, ...]:
        return self.infos[self.prefix + suffix].shape

    def fail(self, message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"packed tensors of {self.prefix!r}: {message}",
            path=self.where,
            hint="the quantised checkpoint is damaged or its config does not match it",
        )

    def expect(self, suffix: str, shape: tuple[int, ...], dtypes: tuple[str, ...]) -> None:
        info = self.infos[self.prefix + suffix]
        if info.shape != shape:
            raise self.fail(f"{suffix[1:]} is {info.shape}, expected {shape}")
        if info.dtype not in dtypes:
            raise self.fail(f"{suffix[1:]} is {info.dtype}, expected {' or '.join(dtypes)}")

    def parts(self) -> tuple[str, ...]:
        suffixes = (_QWEIGHT, _QZEROS, _SCALES) + ((_G_IDX,) if self.has_g_idx else ())
        return tuple(self.prefix + suffix for suffix in suffixes)

    def logical(self, dtype: str, shape: tuple[int, int]) -> TensorInfo:
        parts = self.parts()
        spans = tuple(span for part in parts for span in self.infos[part].spans)
        return TensorInfo(self.prefix + ".weight", dtype, shape, spans, parts)


def _gptq_layout(module: _IntModule, settings: _Settings) -> Layout:
    bits = settings.bits
    if bits not in (2, 4, 8):
        raise UnsupportedFormatError(
            f"GPTQ with {bits}-bit codes is not supported (2, 4 and 8 are)",
            path=module.where,
            hint="dequantise the model with its own tooling first",
        )
    if settings.zero_offset < 0:
        raise UnsupportedFormatError(
            "GPTQ checkpoint_format is neither gptq nor gptq_v2 (a kernel-specific repacking)",
            path=module.where,
            hint="convert the checkpoint to the gptq format first",
        )
    per_word = 32 // bits
    rows, out = module.shape(_QWEIGHT)
    in_features = rows * per_word
    groups = module.shape(_SCALES)[0]
    if out % per_word:
        raise module.fail(f"{out} output features do not fill {bits}-bit words")
    module.expect(_SCALES, (groups, out), FLOAT_DTYPES)
    module.expect(_QZEROS, (groups, out // per_word), ("I32",))
    if module.has_g_idx:
        module.expect(_G_IDX, (in_features,), ("I32", "I64"))
    elif groups != _group_count(in_features, settings.group_size):
        raise module.fail(f"{groups} groups do not match group_size {settings.group_size}")

    def rows_of(reader: CheckpointReader, start: int, stop: int) -> Array:
        prefix = module.prefix
        codes = _unpack_along_rows(reader.read(prefix + _QWEIGHT)[:, start:stop], bits)
        zeros = _packed_cols(reader, prefix + _QZEROS, start, stop, bits, None)
        zeros = (zeros + settings.zero_offset) & ((1 << bits) - 1)
        scales = reader.read(prefix + _SCALES)[:, start:stop]
        return _affine(
            codes,
            zeros,
            scales,
            _gptq_groups(module, reader, in_features, groups, settings.group_size),
        )

    return Layout(module.logical(f"GPTQ_INT{bits}", (out, in_features)), rows_of)


def _gptq_groups(
    module: _IntModule, reader: CheckpointReader, in_features: int, groups: int, group_size: int
) -> Array:
    if not module.has_g_idx:
        return _default_groups(in_features, group_size)
    g_idx = reader.read(module.prefix + _G_IDX).astype(np.int64)
    if g_idx.size and not (g_idx.min() >= 0 and g_idx.max() < groups):
        raise module.fail(f"g_idx names groups outside 0..{groups - 1}")
    return g_idx


def _awq_layout(module: _IntModule, settings: _Settings) -> Layout:
    if settings.bits != 4:
        raise UnsupportedFormatError(
            f"AWQ with {settings.bits}-bit codes is not supported (4 is)",
            path=module.where,
            hint="dequantise the model with its own tooling first",
        )
    if settings.awq_version != "gemm":
        raise UnsupportedFormatError(
            f"AWQ version {settings.awq_version!r} packs differently (gemm is read)",
            path=module.where,
            hint="convert the checkpoint to AWQ GEMM first",
        )
    in_features, words = module.shape(_QWEIGHT)
    out = words * 8
    groups = _group_count(in_features, settings.group_size)
    module.expect(_SCALES, (groups, out), FLOAT_DTYPES)
    module.expect(_QZEROS, (groups, words), ("I32",))
    group_of = _default_groups(in_features, settings.group_size)

    def rows_of(reader: CheckpointReader, start: int, stop: int) -> Array:
        prefix = module.prefix
        codes = _packed_cols(reader, prefix + _QWEIGHT, start, stop, 4, _AWQ_UNPACK_ORDER)
        zeros = _packed_cols(reader, prefix + _QZEROS, start, stop, 4, _AWQ_UNPACK_ORDER)
        scales = reader.read(prefix + _SCALES)[:, start:stop]
        return _affine(codes, zeros, scales, group_of)

    return Layout(module.logical("AWQ_INT4", (out, in_features)), rows_of)


def _int_method(module: _IntModule, settings: _Settings | None) -> str:
    if settings is None:
        raise UnsupportedFormatError(
            f"{module.prefix!r} is stored packed (qweight/qzeros/scales) and no "
            "quantization_config says how",
            path=module.where,
            hint=_CONFIG_HINT,
        )
    if settings.method is not None:
        return settings.method
    # No quant_method (AutoGPTQ's old quantize_config.json): GPTQ keeps one column per
    # output feature, AWQ packs eight output features per column.
    (_, columns), (_, out) = module.shape(_QWEIGHT), module.shape(_SCALES)
    if columns == out:
        return "gptq"
    if columns * 8 == out:
        return "awq"
    raise module.fail(f"qweight {module.shape(_QWEIGHT)} fits neither GPTQ nor AWQ")


# ---------------------------------------------------------------- the reader


def _find_layouts(
    infos: Mapping[str, TensorInfo], settings: _Settings | None, where: str
) -> dict[str, Layout]:
    """Stored name of each layout's first part → the layout."""
    layouts: dict[str, Layout] = {}
    block = settings.block if settings else DEFAULT_BLOCK
    for name in infos:
        if name.endswith(_QWEIGHT):
            prefix = name[: -len(_QWEIGHT)]
            if prefix + _QZEROS in infos and prefix + _SCALES in infos:
                layouts[name] = _int_layout(prefix, infos, settings, where)
        elif (fp8 := fp8_layout(name, infos, block, where)) is not None:
            layouts[name] = fp8
    return layouts


def _int_layout(
    prefix: str, infos: Mapping[str, TensorInfo], settings: _Settings | None, where: str
) -> Layout:
    module = _IntModule(prefix, where, infos, prefix + _G_IDX in infos)
    for suffix in (_QWEIGHT, _QZEROS, _SCALES):
        if len(module.shape(suffix)) != 2:
            raise module.fail(f"{suffix[1:]} is {module.shape(suffix)}, expected two axes")
    module.expect(_QWEIGHT, module.shape(_QWEIGHT), ("I32",))
    if prefix + ".weight" in infos:
        raise module.fail("a plain weight is stored beside the packed one")
    method = _int_method(module, settings)
    assert settings is not None  # _int_method refuses a missing config
    if method == "gptq":
        return _gptq_layout(module, settings)
    if method == "awq":
        return _awq_layout(module, settings)
    raise UnsupportedFormatError(
        f"{prefix!r} is stored packed but quant_method is {method!r} (gptq and awq are read)",
        path=where,
        hint="dequantise the model with its own tooling first",
    )


class QuantizedReader(BaseReader):
    """A reader whose packed layouts appear as float32 tensors; owns the wrapped reader."""

    def __init__(self, inner: CheckpointReader, layouts: Mapping[str, Layout]) -> None:
        self._inner = inner
        self._name = inner.name
        self._format = inner.format
        self._metadata = inner.metadata
        hidden = {part for layout in layouts.values() for part in layout.info.parts}
        self._layouts = {layout.info.name: layout for layout in layouts.values()}
        tensors: dict[str, TensorInfo] = {}
        for name, info in inner.tensors().items():
            if name in layouts:
                tensors[layouts[name].info.name] = layouts[name].info
            elif name not in hidden:
                tensors[name] = info
        self._tensors = tensors

    def read(self, name: str) -> Array:
        info = self.info(name)
        layout = self._layouts.get(name)
        if layout is None:
            return self._inner.read(name)
        return layout.rows(self._inner, 0, info.shape[0])

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        self.row_range(name, start, stop)
        layout = self._layouts.get(name)
        if layout is None:
            return self._inner.read_rows(name, start, stop)
        return layout.rows(self._inner, start, stop)

    def prefetch_rows(self, name: str, runs: Sequence[tuple[int, int]]) -> None:
        """Pass the hint on: as is for a plain tensor, as the weight's and its scales' rows
        for an FP8 layout that knows them; packed GPTQ/AWQ layouts read whole tensors."""
        self.info(name)
        layout = self._layouts.get(name)
        if layout is None:
            hint = getattr(self._inner, "prefetch_rows", None)
            if hint is not None:
                hint(name, runs)
        elif isinstance(layout, ScaledLayout):
            layout.prefetch(self._inner, runs)

    def close(self) -> None:
        self._inner.close()


def dequantizing(
    reader: CheckpointReader, quantization_config: Mapping[str, Any] | None
) -> CheckpointReader:
    """``reader`` with its packed layouts dequantised, or ``reader`` itself when it has none.

    Takes ownership of ``reader``: it is closed when the layouts cannot be read.
    """
    try:
        settings = (
            None
            if quantization_config is None
            else _parse_settings(quantization_config, reader.name)
        )
        layouts = _find_layouts(reader.tensors(), settings, reader.name)
    except BaseException:
        reader.close()
        raise
    return QuantizedReader(reader, layouts) if layouts else reader
