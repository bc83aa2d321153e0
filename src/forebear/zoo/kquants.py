"""A numpy quantiser for ggml's Q6_K blocks, which gguf-py can decode but not encode.

Owns ``quantize_q6_k``: float rows whose length is a multiple of 256 become
ggml ``block_q6_K`` bytes (210 per 256 values), laid out exactly as ggml's C
struct so that llama.cpp and ``gguf.quants.dequantize`` decode them:

* ``ql[128]``: the low four bits of the 6-bit codes. In each half of 128
  values, byte ``j`` (0…63) holds value ``j`` in its low nibble and value
  ``64 + j`` in its high nibble.
* ``qh[64]``: the top two bits. In each half, byte ``j`` (0…31) holds values
  ``j``, ``32 + j``, ``64 + j``, ``96 + j`` in bit pairs 0-1, 2-3, 4-5, 6-7.
* ``scales[16]``: int8, one per 16 consecutive values.
* ``d``: float16 super-scale. Value = ``d · scales[i // 16] · (code − 32)``.

The encoder is simple rather than llama.cpp's error-minimising search: each
sub-block's step is ``d · scale ≥ max|x_sub| / 31`` (the super-scale is the
float16 at or above ``max_sub_step / 127`` and each scale is rounded up), so no
code is clipped and **every value is within half its sub-block's step** (plus
float32 rounding); the step is at most ``max|x_sub| / 31 + d``. It writes
nothing and knows no file format beyond the block.
"""

from __future__ import annotations

import numpy as np

from forebear.formats.base import Array

__all__ = ["Q6_K_BLOCK_BYTES", "QK_K", "quantize_q6_k"]

QK_K = 256
Q6_K_BLOCK_BYTES = QK_K // 2 + QK_K // 4 + QK_K // 16 + 2
_SUB = 16  # values per sub-block scale
_CODE_MAX = 31  # codes are -32 … 31; stepping by max/31 never needs -32
_SCALE_MAX = 127


def _super_scales(steps: Array) -> Array:
    """Per block, the float16 ``d`` with ``127 · d ≥`` its largest sub-block step."""
    largest = steps.max(axis=1)
    if not np.all(largest / _SCALE_MAX < np.finfo(np.float16).max):
        raise ValueError("values too large for Q6_K's float16 super-scale")
    d = (largest / _SCALE_MAX).astype(np.float16)
    # float16 rounding may land below the exact quotient; step up one ulp where it did.
    low = d.astype(np.float64) * _SCALE_MAX < largest
    raised: Array = np.where(low, np.nextafter(d, np.float16(np.inf)), d)
    return raised


def _codes_and_scales(blocks: Array) -> tuple[Array, Array, Array]:
    """(codes 0…63 as uint8 (n, 256), scales int8 (n, 16), d float16 (n,))."""
    sub = blocks.reshape(blocks.shape[0], QK_K // _SUB, _SUB)
    steps = np.abs(sub).max(axis=2) / _CODE_MAX
    d = _super_scales(steps)
    wide = d.astype(np.float64)[:, None]
    ratio = np.divide(steps, wide, out=np.zeros_like(steps), where=wide > 0)
    scales = np.clip(np.ceil(ratio), 0, _SCALE_MAX)
    step = wide * scales
    quotient = np.divide(sub, step[:, :, None], out=np.zeros_like(sub), where=step[:, :, None] > 0)
    codes = np.clip(np.rint(quotient), -32, _CODE_MAX) + 32
    return codes.reshape(blocks.shape).astype(np.uint8), scales.astype(np.int8), d


def _pack(codes: Array, scales: Array, d: Array) -> Array:
    n = codes.shape[0]
    halves = codes.reshape(n, 2, 128)
    low = halves & 0x0F
    ql = low[:, :, :64] | (low[:, :, 64:] << 4)
    high = (halves >> 4).reshape(n, 2, 4, 32)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    return np.concatenate(
        [
            ql.reshape(n, 128),
            qh.reshape(n, 64),
            scales.view(np.uint8),
            d.astype("<f2").view(np.uint8).reshape(n, 2),
        ],
        axis=1,
    )


def quantize_q6_k(array: Array) -> Array:
    """``array`` (…, k·256) as Q6_K blocks: uint8 (…, k·210), the layout GGUFWriter takes."""
    if array.ndim == 0 or array.shape[-1] % QK_K:
        raise ValueError(f"Q6_K needs rows that are a multiple of {QK_K} values, got {array.shape}")
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("Q6_K cannot store infinite or NaN values")
    blocks = values.reshape(-1, QK_K)
    packed = _pack(*_codes_and_scales(blocks))
    return packed.reshape(*array.shape[:-1], array.shape[-1] // QK_K * Q6_K_BLOCK_BYTES)
