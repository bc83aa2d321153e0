"""GPTQ, AWQ and FP8 layouts: quantised and packed here, independently of the reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from forebear.errors import CorruptCheckpointError, UnsupportedFormatError
from forebear.formats.base import TensorInfo
from forebear.formats.memory import MemoryReader
from forebear.formats.quantized import QuantizedReader, dequantizing
from forebear.formats.safetensors import SafetensorsReader
from forebear.sources import LocalFile

NDArray = np.ndarray[Any, Any]
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # column AWQ_ORDER[i] goes to nibble i
ROW_RANGES = [(0, 1), (3, 13), (8, 16)]


# ---------------------------------------------------------------- quantisation written for the test


def quantize(w_in_out: NDArray, groups: NDArray, n_groups: int, bits: int) -> tuple[NDArray, ...]:
    """Asymmetric min/max quantisation of ``(in, out)`` weights, one scale per (group, out)."""
    maxq = 2**bits - 1
    q = np.zeros(w_in_out.shape, np.int64)
    zeros = np.zeros((n_groups, w_in_out.shape[1]), np.int64)
    scales = np.zeros((n_groups, w_in_out.shape[1]), np.float16)
    for g in range(n_groups):
        member = groups == g
        lo = np.minimum(w_in_out[member].min(axis=0), 0)
        hi = np.maximum(w_in_out[member].max(axis=0), 0)
        # A scale slightly over range/maxq keeps every code inside [0, maxq] after fp16 rounding.
        scales[g] = (hi - lo) / maxq * 1.001
        s = scales[g].astype(np.float32)
        zeros[g] = np.round(-lo / s)
        q[member] = np.clip(np.round(w_in_out[member] / s) + zeros[g], 0, maxq)
    return q, zeros, scales


def implied(q: NDArray, zeros: NDArray, scales: NDArray, groups: NDArray) -> NDArray:
    """The (out, in) float32 weight that the codes, zeros and scales stand for."""
    return ((q - zeros[groups]).astype(np.float32) * scales.astype(np.float32)[groups]).T


def pack_words_down_rows(codes: NDArray, bits: int) -> NDArray:
    per = 32 // bits
    words = np.zeros((codes.shape[0] // per, codes.shape[1]), np.uint32)
    for row in range(words.shape[0]):
        for j in range(per):
            words[row] |= codes[row * per + j].astype(np.uint32) << np.uint32(bits * j)
    return words.view(np.int32)


def pack_words_across_cols(codes: NDArray, bits: int, order: list[int] | None = None) -> NDArray:
    per = 32 // bits
    order = order or list(range(per))
    words = np.zeros((codes.shape[0], codes.shape[1] // per), np.uint32)
    for col in range(words.shape[1]):
        for i in range(per):
            nibble = codes[:, col * per + order[i]].astype(np.uint32)
            words[:, col] |= nibble << np.uint32(bits * i)
    return words.view(np.int32)


def group_map(in_features: int, group_size: int, act_order: bool, seed: int) -> NDArray:
    size = in_features if group_size == -1 else group_size
    groups = np.arange(in_features) // size
    # Act-order: groups are formed over a permutation of the input rows, as g_idx records.
    return np.random.default_rng(seed).permutation(groups) if act_order else groups


def save_and_open(tmp_path: Path, arrays: dict[str, NDArray]) -> SafetensorsReader:
    path = tmp_path / "q.safetensors"
    save_file(arrays, str(path))
    return SafetensorsReader(LocalFile(path))


def check_logical(reader: Any, inner: dict[str, TensorInfo], name: str, parts: list[str]) -> None:
    info = reader.tensors()[name]
    assert info.parts == tuple(parts)
    assert info.spans == tuple(span for part in parts for span in inner[part].spans)
    assert not set(parts) & (set(reader.tensors()) - {name})


def check_values(reader: Any, name: str, expected: NDArray) -> None:
    got = reader.read(name)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    for start, stop in ROW_RANGES:
        np.testing.assert_array_equal(reader.read_rows(name, start, stop), expected[start:stop])


# ---------------------------------------------------------------- GPTQ


GPTQ_CASES = [
    # out, in, bits, group_size, act_order, checkpoint_format
    (24, 64, 4, 16, False, "gptq"),
    (24, 64, 4, 32, True, "gptq"),
    (32, 32, 4, -1, False, "gptq_v2"),
    (32, 32, 4, 16, True, "gptq_v2"),
    (24, 64, 8, 16, True, "gptq"),
    (32, 64, 2, 32, False, "gptq"),
]


@pytest.mark.parametrize(("out", "inp", "bits", "group_size", "act_order", "fmt"), GPTQ_CASES)
def test_gptq_dequantises_to_the_packed_values(
    tmp_path: Path, out: int, inp: int, bits: int, group_size: int, act_order: bool, fmt: str
) -> None:
    rng = np.random.default_rng(out + inp + bits)
    source = rng.standard_normal((out, inp)).astype(np.float32)
    groups = group_map(inp, group_size, act_order, seed=1)
    n_groups = int(groups.max()) + 1
    q, zeros, scales = quantize(source.T, groups, n_groups, bits)
    stored_zeros = (zeros - 1) & (2**bits - 1) if fmt == "gptq" else zeros
    arrays = {
        "mlp.down.qweight": pack_words_down_rows(q, bits),
        "mlp.down.qzeros": pack_words_across_cols(stored_zeros, bits),
        "mlp.down.scales": scales,
        "mlp.down.g_idx": groups.astype(np.int32),
        "mlp.down.bias": rng.standard_normal(out).astype(np.float16),
    }
    config = {"quant_method": "gptq", "bits": bits, "group_size": group_size}
    config["checkpoint_format"] = fmt
    inner = save_and_open(tmp_path, arrays)
    infos = dict(inner.tensors())
    reader = dequantizing(inner, config)
    assert isinstance(reader, QuantizedReader)
    assert sorted(reader.tensors()) == ["mlp.down.bias", "mlp.down.weight"]
    info = reader.tensors()["mlp.down.weight"]
    assert (info.dtype, info.shape) == (f"GPTQ_INT{bits}", (out, inp))
    check_logical(
        reader,
        infos,
        "mlp.down.weight",
        [f"mlp.down.{p}" for p in ("qweight", "qzeros", "scales", "g_idx")],
    )
    expected = implied(q, zeros, scales, groups)
    check_values(reader, "mlp.down.weight", expected)
    half_step = scales.astype(np.float32)[groups].T / 2
    assert np.all(np.abs(reader.read("mlp.down.weight") - source) <= half_step * 1.0001 + 1e-6)
    np.testing.assert_array_equal(reader.read("mlp.down.bias"), arrays["mlp.down.bias"])
    reader.close()


def test_gptq_without_g_idx_uses_group_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    groups = np.arange(64) // 16
    q, zeros, scales = quantize(rng.standard_normal((64, 24)), groups, 4, 4)
    arrays = {
        "l.qweight": pack_words_down_rows(q, 4),
        "l.qzeros": pack_words_across_cols((zeros - 1) & 15, 4),
        "l.scales": scales,
    }
    reader = dequantizing(
        save_and_open(tmp_path, arrays), {"quant_method": "gptq", "bits": 4, "group_size": 16}
    )
    check_values(reader, "l.weight", implied(q, zeros, scales, groups))
    assert reader.tensors()["l.weight"].parts == ("l.qweight", "l.qzeros", "l.scales")
    reader.close()


def test_gptq_word_layout_is_lowest_bits_first() -> None:
    # One word per column: rows 0..7 of each column hold codes 0..7; v1 stores zero 0 as 15.
    arrays = {
        "l.qweight": np.full((1, 8), 0x76543210, np.int32),
        "l.qzeros": np.array([[-1]], np.int32),
        "l.scales": np.ones((1, 8), np.float16),
    }
    reader = dequantizing(MemoryReader(arrays), {"quant_method": "gptq", "group_size": -1})
    np.testing.assert_array_equal(reader.read("l.weight"), np.tile(np.arange(8.0), (8, 1)))


# ---------------------------------------------------------------- AWQ


@pytest.mark.parametrize(
    ("out", "inp", "group_size"), [(24, 64, 16), (24, 64, 32), (32, 32, -1), (32, 32, 16)]
)
def test_awq_dequantises_to_the_packed_values(
    tmp_path: Path, out: int, inp: int, group_size: int
) -> None:
    rng = np.random.default_rng(out * inp)
    source = rng.standard_normal((out, inp)).astype(np.float32)
    groups = group_map(inp, group_size, act_order=False, seed=0)
    n_groups = int(groups.max()) + 1
    q, zeros, scales = quantize(source.T, groups, n_groups, 4)
    arrays = {
        "attn.o.qweight": pack_words_across_cols(q, 4, AWQ_ORDER),
        "attn.o.qzeros": pack_words_across_cols(zeros, 4, AWQ_ORDER),
        "attn.o.scales": scales,
    }
    inner = save_and_open(tmp_path, arrays)
    infos = dict(inner.tensors())
    config = {"quant_method": "awq", "bits": 4, "group_size": group_size, "version": "GEMM"}
    reader = dequantizing(inner, config)
    info = reader.tensors()["attn.o.weight"]
    assert (info.dtype, info.shape) == ("AWQ_INT4", (out, inp))
    check_logical(
        reader, infos, "attn.o.weight", [f"attn.o.{p}" for p in ("qweight", "qzeros", "scales")]
    )
    check_values(reader, "attn.o.weight", implied(q, zeros, scales, groups))
    half_step = scales.astype(np.float32)[groups].T / 2
    assert np.all(np.abs(reader.read("attn.o.weight") - source) <= half_step * 1.0001 + 1e-6)
    reader.close()


def test_awq_nibble_order_is_interleaved() -> None:
    # Output columns 0..7 hold codes 0..7: nibbles low to high read 0,2,4,6,1,3,5,7.
    arrays = {
        "l.qweight": np.array([[0x75316420]], np.int32),
        "l.qzeros": np.zeros((1, 1), np.int32),
        "l.scales": np.ones((1, 8), np.float16),
    }
    reader = dequantizing(MemoryReader(arrays), {"quant_method": "awq", "group_size": -1})
    np.testing.assert_array_equal(reader.read("l.weight"), np.arange(8.0).reshape(8, 1))


def _packed_arrays(out: int = 24, inp: int = 64, awq: bool = False) -> dict[str, NDArray]:
    """Zeros in a consistent GPTQ (or AWQ) layout with group size 16."""
    groups = inp // 16
    shape = (inp, out // 8) if awq else (inp // 8, out)
    qweight = np.zeros(shape, np.int32)
    return {
        "l.qweight": qweight,
        "l.qzeros": np.zeros((groups, out // 8), np.int32),
        "l.scales": np.ones((groups, out), np.float16),
    }


def test_method_is_decided_from_shapes_when_config_omits_it() -> None:
    gptq = dequantizing(MemoryReader(_packed_arrays()), {"bits": 4, "group_size": 16})
    awq = dequantizing(MemoryReader(_packed_arrays(awq=True)), {"bits": 4, "group_size": 16})
    assert gptq.tensors()["l.weight"].dtype == "GPTQ_INT4"
    assert awq.tensors()["l.weight"].dtype == "AWQ_INT4"
    # Stored GPTQ v1 zeros of 0 mean 1, so the all-zero codes read back as -1.
    np.testing.assert_array_equal(gptq.read("l.weight"), -np.ones((24, 64)))
    np.testing.assert_array_equal(awq.read("l.weight"), np.zeros((24, 64)))


# ---------------------------------------------------------------- FP8


def _fp8_block_quantize(torch: Any, w: Any, block: int) -> tuple[Any, Any]:
    out, inp = w.shape[-2:]
    rows, cols = -(-out // block), -(-inp // block)
    scale = torch.zeros((*w.shape[:-2], rows, cols))
    q = torch.zeros(w.shape, dtype=torch.float8_e4m3fn)
    for r in range(rows):
        for c in range(cols):
            tile = w[..., r * block : (r + 1) * block, c * block : (c + 1) * block]
            s = tile.abs().amax(dim=(-2, -1)) / 448.0
            scale[..., r, c] = s
            q[..., r * block : (r + 1) * block, c * block : (c + 1) * block] = (
                tile / s[..., None, None]
            ).to(torch.float8_e4m3fn)
    return q, scale


def _fp8_expected(torch: Any, q: Any, scale: Any, block: int) -> Any:
    full = scale.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return q.float() * full[..., : q.shape[-2], : q.shape[-1]]


@pytest.mark.parametrize("shape", [(40, 24), (32, 32), (2, 40, 24)])
def test_fp8_block_scales(tmp_path: Path, shape: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save

    w = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    q, scale = _fp8_block_quantize(torch, w, 16)
    path = tmp_path / "fp8.safetensors"
    norm = torch.ones(shape[-1], dtype=torch.bfloat16)
    torch_save({"x.weight": q, "x.weight_scale_inv": scale, "norm.weight": norm}, str(path))
    inner = SafetensorsReader(LocalFile(path))
    infos = dict(inner.tensors())
    config = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [16, 16]}
    reader = dequantizing(inner, config)
    assert sorted(reader.tensors()) == ["norm.weight", "x.weight"]
    info = reader.tensors()["x.weight"]
    assert (info.dtype, info.shape) == ("F8_E4M3_BLOCK", shape)
    check_logical(reader, infos, "x.weight", ["x.weight", "x.weight_scale_inv"])
    expected = _fp8_expected(torch, q, scale, 16).numpy()
    got = reader.read("x.weight")
    np.testing.assert_array_equal(got, expected)
    for start, stop in [(0, 1), (1, 2)] if len(shape) == 3 else [(0, 1), (3, 21), (16, 32)]:
        np.testing.assert_array_equal(
            reader.read_rows("x.weight", start, stop), expected[start:stop]
        )
    # e4m3 keeps 3 mantissa bits: relative error 2^-4, or half the subnormal step 2^-10 per scale.
    step = _fp8_expected(torch, torch.ones_like(q.float()).to(q.dtype), scale, 16).numpy()
    bound = np.abs(w.numpy()) * 2.0**-4 + step * 2.0**-10 + 1e-7
    assert np.all(np.abs(got - w.numpy()) <= bound)
    np.testing.assert_array_equal(reader.read("norm.weight"), np.ones(shape[-1]))
    reader.close()


@pytest.mark.parametrize("scale_shape", [(), (1,), (24, 1)])
def test_fp8_per_tensor_and_per_channel_scale(tmp_path: Path, scale_shape: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save

    q = torch.randn((24, 40), generator=torch.Generator().manual_seed(5)).to(torch.float8_e4m3fn)
    scale = torch.rand(scale_shape, generator=torch.Generator().manual_seed(6)) + 0.5
    path = tmp_path / "fp8.safetensors"
    torch_save({"x.weight": q, "x.weight_scale": scale}, str(path))
    reader = dequantizing(SafetensorsReader(LocalFile(path)), None)
    assert reader.tensors()["x.weight"].dtype == "F8_E4M3_SCALED"
    expected = (q.float() * scale).numpy()
    np.testing.assert_array_equal(reader.read("x.weight"), expected)
    np.testing.assert_array_equal(reader.read_rows("x.weight", 5, 9), expected[5:9])


# ---------------------------------------------------------------- refusals


class ClosingProbe(MemoryReader):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_reader_without_packed_layouts_is_returned_as_is() -> None:
    inner = MemoryReader({"w": np.ones((2, 2), np.float32)})
    assert dequantizing(inner, {"quant_method": "gptq"}) is inner
    assert dequantizing(inner, None) is inner


@pytest.mark.parametrize(
    ("arrays", "config", "error", "message"),
    [
        (
            _packed_arrays(),
            None,
            UnsupportedFormatError,
            r"'l' is stored packed \(qweight/qzeros/scales\) and no quantization_config says how",
        ),
        (
            {**_packed_arrays(), "l.scales": np.ones((3, 24), np.float16)},
            {"quant_method": "gptq", "group_size": 16},
            CorruptCheckpointError,
            r"packed tensors of 'l': qzeros is \(4, 3\), expected \(3, 3\)",
        ),
        (
            _packed_arrays(),
            {"quant_method": "gptq", "group_size": 32},
            CorruptCheckpointError,
            r"packed tensors of 'l': 4 groups do not match group_size 32",
        ),
        (
            {**_packed_arrays(), "l.qweight": np.zeros((8, 24), np.int64)},
            {"quant_method": "gptq", "group_size": 16},
            CorruptCheckpointError,
            r"packed tensors of 'l': qweight is I64, expected I32",
        ),
        (
            {**_packed_arrays(), "l.scales": np.ones((4, 24), np.int8)},
            {"quant_method": "gptq", "group_size": 16},
            CorruptCheckpointError,
            r"packed tensors of 'l': scales is I8, expected F32 or F16 or BF16",
        ),
        (
            {**_packed_arrays(), "l.g_idx": np.zeros(63, np.int32)},
            {"quant_method": "gptq", "group_size": 16},
            CorruptCheckpointError,
            r"packed tensors of 'l': g_idx is \(63,\), expected \(64,\)",
        ),
        (
            {**_packed_arrays(), "l.weight": np.zeros((24, 64), np.float32)},
            {"quant_method": "gptq", "group_size": 16},
            CorruptCheckpointError,
            r"packed tensors of 'l': a plain weight is stored beside the packed one",
        ),
        (
            _packed_arrays(awq=True),
            {"quant_method": "awq", "group_size": 32},
            CorruptCheckpointError,
            r"packed tensors of 'l': scales is \(4, 24\), expected \(2, 24\)",
        ),
        (
            {**_packed_arrays(), "l.qweight": np.zeros((8, 5), np.int32)},
            {"bits": 4, "group_size": 16},
            CorruptCheckpointError,
            r"packed tensors of 'l': qweight \(8, 5\) fits neither GPTQ nor AWQ",
        ),
        (
            _packed_arrays(),
            {"quant_method": "gptq", "bits": 3, "group_size": 16},
            UnsupportedFormatError,
            r"GPTQ with 3-bit codes is not supported",
        ),
        (
            _packed_arrays(),
            {"quant_method": "gptq", "group_size": 16, "checkpoint_format": "marlin"},
            UnsupportedFormatError,
            r"GPTQ checkpoint_format is neither gptq nor gptq_v2",
        ),
        (
            _packed_arrays(awq=True),
            {"quant_method": "awq", "group_size": 16, "version": "gemv"},
            UnsupportedFormatError,
            r"AWQ version 'gemv' packs differently",
        ),
        (
            _packed_arrays(),
            {"quant_method": "bitsandbytes"},
            UnsupportedFormatError,
            r"'l' is stored packed but quant_method is 'bitsandbytes'",
        ),
        (
            _packed_arrays(),
            {"quant_method": "gptq", "bits": "four"},
            CorruptCheckpointError,
            r"quantization_config bits is 'four', expected an integer",
        ),
        (
            _packed_arrays(),
            {"quant_method": "gptq", "group_size": 0},
            CorruptCheckpointError,
            r"quantization_config group_size is 0, expected -1 or a positive size",
        ),
        (
            _packed_arrays(),
            {"quant_method": "fp8", "weight_block_size": [128]},
            CorruptCheckpointError,
            r"quantization_config weight_block_size is \[128\], expected two positive sizes",
        ),
    ],
)
def test_refusals(
    arrays: dict[str, NDArray], config: Any, error: type[Exception], message: str
) -> None:
    probe = ClosingProbe(arrays, name="probe.safetensors")
    with pytest.raises(error, match=message) as caught:
        dequantizing(probe, config)
    assert str(caught.value).startswith("probe.safetensors: ")
    assert probe.closed


def test_g_idx_naming_a_missing_group_is_refused_on_read() -> None:
    arrays = {**_packed_arrays(), "l.g_idx": np.full(64, 4, np.int32)}
    reader = dequantizing(MemoryReader(arrays), {"quant_method": "gptq", "group_size": 16})
    with pytest.raises(
        CorruptCheckpointError, match=r"packed tensors of 'l': g_idx names groups outside 0\.\.3"
    ):
        reader.read("l.weight")


def test_fp8_scale_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save

    path = tmp_path / "fp8.safetensors"
    q = torch.zeros((40, 24), dtype=torch.float8_e4m3fn)
    torch_save({"x.weight": q, "x.weight_scale_inv": torch.ones((3, 2))}, str(path))
    with pytest.raises(
        CorruptCheckpointError,
        match=r"'x.weight_scale_inv' is F32 \(3, 2\), expected a float tensor of shape \(1, 1\) "
        r"for 'x.weight' \(40, 24\)",
    ):
        dequantizing(SafetensorsReader(LocalFile(path)), None)
