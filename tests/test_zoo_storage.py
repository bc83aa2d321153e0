"""Storage copies: each checkpoint opens in forebear, resolves, and reads back within its error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from factories import make_hf_model
from forebear.architectures import ResolvedModel, resolve
from forebear.architectures.vocabulary import vocabulary_from_tokenizer_json
from forebear.errors import TokenizerError, UnsupportedFormatError
from forebear.formats.memory import MemoryReader
from forebear.model import open_model
from forebear.zoo.kquants import Q6_K_BLOCK_BYTES, QK_K, quantize_q6_k
from forebear.zoo.transforms.storage import STORAGE, bf16_bits, gptq_quantize

torch.set_num_threads(1)

FAMILIES = ("llama", "qwen2", "gpt_neox")
Q = gguf.GGMLQuantizationType


def _tokenizer_json() -> bytes:
    """A small byte-level BPE tokenizer.json: 100 tokens, one special and one plain added token."""
    alphabet = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ċ", "."]
    pieces = [*alphabet, "th", "Ġt", "Ġth", "he", "Ġa", "in", "er", "an"]
    pieces += [f"w{i}" for i in range(100 - len(pieces))]
    document = {
        "version": "1.0",
        "added_tokens": [
            {"id": 100, "content": "<|endoftext|>", "special": True},
            {"id": 101, "content": "<user>", "special": False},
        ],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
        "decoder": {"type": "ByteLevel"},
        "model": {
            "type": "BPE",
            "vocab": {piece: ident for ident, piece in enumerate(pieces)},
            "merges": [["t", "h"], ["Ġ", "t"], ["Ġt", "h"], ["h", "e"]],
        },
    }
    return json.dumps(document).encode()


def _hf(family: str) -> tuple[dict[str, Any], dict[str, np.ndarray], ResolvedModel]:
    config, state = make_hf_model(family)
    return config, state, resolve(MemoryReader(state), config)


def _assert_roles_close(hf: ResolvedModel, copy: ResolvedModel, bound: Any) -> int:
    """Every HF role read back from ``copy`` within ``bound(expected)``; returns how many."""
    assert copy.family == hf.family
    assert copy.coverage.complete, (copy.coverage.missing, copy.coverage.unknown)
    for entry in hf.entries:
        expected = hf.read(entry.role, entry.layer, entry.expert).astype(np.float64)
        got = copy.read(entry.role, entry.layer, entry.expert).astype(np.float64)
        assert got.shape == expected.shape, entry
        assert np.all(np.abs(got - expected) <= bound(expected)), entry
    return len(hf.entries)


# ---------------------------------------------------------------- recasts


def test_bf16_bits_round_to_nearest_even() -> None:
    one = 1.0
    values = np.array(
        [one, one + 2**-8, one + 3 * 2**-8, one + 2**-8 + 2**-20, -2.5, np.inf, 3.4e38],
        dtype=np.float32,
    )
    expected = [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020, 0x7F80, 0x7F80]
    assert bf16_bits(values).tolist() == expected
    nan = bf16_bits(np.array([np.nan], dtype=np.float32))
    assert (nan & 0x7F80) == 0x7F80 and (nan & 0x007F) != 0


def test_bf16_bits_agree_with_torch() -> None:
    values = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 3
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy()
    np.testing.assert_array_equal(bf16_bits(values), expected.view(np.uint16))


@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_recast_reads_back_as_numpy_float16(family: str, tmp_path: Path) -> None:
    config, state, hf = _hf(family)
    path = STORAGE["recast_fp16"](state, config, _tokenizer_json(), tmp_path / "fp16")
    assert path == tmp_path / "fp16"
    written = json.loads((path / "config.json").read_text())
    assert written["torch_dtype"] == "float16" and written["num_hidden_layers"] == 2
    assert (path / "tokenizer.json").read_bytes() == _tokenizer_json()
    with open_model(path) as model:
        assert {info.dtype for info in model.reader.tensors().values()} == {"F16"}
        for name, array in state.items():
            np.testing.assert_array_equal(model.reader.read(name), array.astype(np.float16))
        _assert_roles_close(hf, model.resolved, lambda x: np.abs(x) * 2**-11 + 2**-25)
        assert model.vocabulary is not None and model.vocabulary.size == 102


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_recast_is_within_bf16_rounding(family: str, tmp_path: Path) -> None:
    config, state, hf = _hf(family)
    path = STORAGE["recast_bf16"](state, config, None, tmp_path / "bf16")
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with open_model(path) as model:
        assert {info.dtype for info in model.reader.tensors().values()} == {"BF16"}
        _assert_roles_close(hf, model.resolved, lambda x: np.abs(x) * 2**-8)
        name = next(iter(state))
        expected = torch.from_numpy(state[name]).to(torch.bfloat16).float().numpy()
        np.testing.assert_array_equal(model.reader.read(name), expected)


def test_fp16_recast_refuses_values_it_would_overflow(tmp_path: Path) -> None:
    config, state = make_hf_model("llama")
    state["model.norm.weight"][0] = 1e6
    with pytest.raises(ValueError, match="overflows float16; recast to bf16 instead"):
        STORAGE["recast_fp16"](state, config, None, tmp_path / "fp16")


# ---------------------------------------------------------------- GPTQ int8


def _group_steps(parts: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """Per weight (out, in), the step of its group: scales[g_idx[i], o]."""
    scales = parts[prefix + ".scales"].astype(np.float64)
    return scales[parts[prefix + ".g_idx"].astype(np.int64)].T


@pytest.mark.parametrize(("family", "sym"), [("llama", True), ("qwen2", False), ("gpt_neox", True)])
def test_int8_gptq_folder_reads_back_within_half_a_step(
    family: str, sym: bool, tmp_path: Path
) -> None:
    config, state, hf = _hf(family)
    path = STORAGE["int8"](state, config, None, tmp_path / "int8", group_size=32, sym=sym)
    written = json.loads((path / "config.json").read_text())
    assert written["quantization_config"] == {
        "quant_method": "gptq",
        "bits": 8,
        "group_size": 32,
        "desc_act": False,
        "sym": sym,
        "checkpoint_format": "gptq",
    }
    parts = load_file(str(path / "model.safetensors"))
    quantised = [n for n in state if n.removesuffix(".weight") + ".qweight" in parts]
    # Every 2-D weight of the decoder layers (qkv fused for GPT-NeoX), nothing else.
    assert len(quantised) == 2 * (4 if family == "gpt_neox" else 7)
    assert "model.embed_tokens.weight" in parts or "gpt_neox.embed_in.weight" in parts
    with open_model(path) as model:
        assert model.resolved.coverage.complete
        for name in quantised:
            prefix = name.removesuffix(".weight")
            assert model.reader.tensors()[name].dtype == "GPTQ_INT8"
            error = np.abs(model.reader.read(name) - state[name].astype(np.float64))
            assert np.all(error <= _group_steps(parts, prefix) / 2 + 1e-7), name
            assert np.unique(parts[prefix + ".g_idx"]).size == state[name].shape[1] // 32
        # Coarser than the check above: float16 for the rest, and one int8 step of these
        # ~0.02-scale weights is well under 1e-3.
        _assert_roles_close(hf, model.resolved, lambda x: np.abs(x) * 2**-11 + 1e-3)


def test_gptq_quantize_uses_the_full_code_range() -> None:
    weight = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    sym = gptq_quantize(weight, group_size=-1, sym=True)
    assert sym["qweight"].shape == (16, 8) and sym["qzeros"].shape == (1, 2)
    assert sym["scales"].dtype == np.float16 and sym["g_idx"].tolist() == [0] * 64
    # Symmetric: zero point 128, stored minus one in every byte of every word.
    assert set(sym["qzeros"].view(np.uint32).ravel().tolist()) == {0x7F7F7F7F}
    steps = 2 * np.abs(weight).max(axis=1) / 255
    np.testing.assert_allclose(sym["scales"][0], steps, rtol=2**-10)
    assert np.all(sym["scales"][0].astype(np.float64) >= steps)
    asym = gptq_quantize(weight, group_size=32, sym=False)
    codes = (asym["qweight"].view(np.uint32)[:, None, :] >> np.array([0, 8, 16, 24])[:, None]) & 255
    assert codes.min() == 0 and codes.max() == 255


def test_gptq_quantize_refuses_sizes_that_do_not_fill_words() -> None:
    with pytest.raises(ValueError, match=r"\(6, 8\) does not fill 8-bit words"):
        gptq_quantize(np.zeros((6, 8), np.float32))
    with pytest.raises(ValueError, match="GPTQ takes 2, 4 or 8 bits"):
        gptq_quantize(np.zeros((8, 8), np.float32), bits=3)


# ---------------------------------------------------------------- GGUF


def _q8_0_bound(expected: np.ndarray) -> np.ndarray:
    if expected.ndim < 2:
        return np.zeros_like(expected)  # norms and biases stay F32
    blocks = np.abs(expected).reshape(-1, 32).max(axis=1, keepdims=True)
    return np.broadcast_to(blocks / 127 + 1e-7, (blocks.shape[0], 32)).reshape(expected.shape)


@pytest.mark.parametrize("family", FAMILIES)
def test_gguf_q8_0_roles_equal_the_hf_roles_within_a_step(family: str, tmp_path: Path) -> None:
    config, state, hf = _hf(family)
    path = STORAGE["gguf_q8_0"](state, config, _tokenizer_json(), tmp_path / "q8")
    assert path == tmp_path / "q8" / "model-Q8_0.gguf"
    with open_model(path) as model:
        assert model.reader.format == "gguf"
        dtypes = {info.dtype for info in model.reader.tensors().values()}
        assert dtypes == {"Q8_0", "F32"}
        if family == "llama":
            assert "blk.0.attn_q.weight" in model.reader.unpermuted
        assert _assert_roles_close(hf, model.resolved, _q8_0_bound) == len(hf.entries)


def test_gguf_vocabulary_is_the_tokenizers_padded_to_the_embedding(tmp_path: Path) -> None:
    config, state, _ = _hf("qwen2")
    path = STORAGE["gguf_q8_0"](state, config, _tokenizer_json(), tmp_path / "q8")
    expected = vocabulary_from_tokenizer_json(_tokenizer_json(), "tokenizer.json")
    with open_model(path) as model:
        vocabulary = model.vocabulary
        metadata = model.reader.metadata
    assert vocabulary is not None and vocabulary.size == config["vocab_size"]
    assert vocabulary.normalized[: expected.size] == expected.normalized
    assert metadata["tokenizer.ggml.model"] == "gpt2"
    types = list(metadata["tokenizer.ggml.token_type"])
    assert types[99:101] == [gguf.TokenType.NORMAL, gguf.TokenType.CONTROL]
    assert types[101:103] == [gguf.TokenType.USER_DEFINED, gguf.TokenType.UNUSED]
    assert metadata[gguf.Keys.Tokenizer.EOS_ID] == config["eos_token_id"]


def test_gguf_refuses_what_it_cannot_convert(tmp_path: Path) -> None:
    config, state = make_hf_model("gpt2")
    with pytest.raises(UnsupportedFormatError, match="the zoo converts gpt_neox, llama"):
        STORAGE["gguf_q8_0"](state, config, None, tmp_path / "gpt2")
    config, state = make_hf_model("llama")
    wordpiece = json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}}).encode()
    with pytest.raises(TokenizerError, match="is not a BPE tokenizer"):
        STORAGE["gguf_q8_0"](state, config, wordpiece, tmp_path / "wp")
    with pytest.raises(TokenizerError, match="is not valid UTF-8 JSON"):
        STORAGE["gguf_q8_0"](state, config, b"\xff{", tmp_path / "bad")
    document = json.loads(_tokenizer_json())
    document["added_tokens"][0]["id"] = 128
    with pytest.raises(TokenizerError, match="token ids outside the model's 128 embedding rows"):
        STORAGE["gguf_q8_0"](state, config, json.dumps(document).encode(), tmp_path / "big")


# ---------------------------------------------------------------- K-quant


def _q6_k_steps(raw: np.ndarray) -> np.ndarray:
    """Per 16-value sub-block, d · scale read from the block bytes (ggml's block_q6_K)."""
    blocks = raw.reshape(-1, Q6_K_BLOCK_BYTES)
    d = blocks[:, 208:210].copy().view(np.float16).astype(np.float64)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float64)
    return (d * scales).reshape(-1)


def test_q6_k_blocks_decode_through_gguf_within_half_a_step() -> None:
    rng = np.random.default_rng(2)
    values = rng.standard_normal((6, 2 * QK_K)).astype(np.float32) * 0.02
    values[0, :16] *= 100  # an outlier sub-block
    values[1, :QK_K] = 0.0  # an all-zero block
    values[2] = rng.integers(-32, 32, values.shape[1]) * 0.5  # coarse, repeated values
    raw = quantize_q6_k(values)
    assert raw.shape == (6, 2 * Q6_K_BLOCK_BYTES) and raw.dtype == np.uint8
    decoded = gguf.quants.dequantize(raw, Q.Q6_K)
    steps = _q6_k_steps(raw)
    error = np.abs(decoded.astype(np.float64) - values).reshape(-1, 16)
    assert np.all(error <= steps[:, None] / 2 * (1 + 1e-6) + 1e-12)
    np.testing.assert_array_equal(decoded[1, :QK_K], 0.0)
    # A coarse block-wide scale would lose the small sub-blocks beside the outlier.
    assert np.abs(decoded[0, 16:QK_K] - values[0, 16:QK_K]).max() < 0.02 * 4 / 31
    # Per sub-block, the step is at most max|x|/31 plus the super-scale d.
    sub = np.abs(values.astype(np.float64)).reshape(-1, 16).max(axis=1)
    block_max = np.repeat(sub.reshape(-1, 16).max(axis=1), 16)
    assert np.all(steps <= sub / 31 + block_max / 31 / 127 * (1 + 2**-10) + 2**-24)


def test_q6_k_refuses_rows_that_do_not_fill_blocks_and_non_finite_values() -> None:
    with pytest.raises(ValueError, match="multiple of 256 values, got \\(2, 96\\)"):
        quantize_q6_k(np.zeros((2, 96), np.float32))
    with pytest.raises(ValueError, match="cannot store infinite or NaN"):
        quantize_q6_k(np.full((1, QK_K), np.nan, np.float32))


def _wide_llama() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A one-layer llama whose rows fill 256-value K blocks (hidden 256, intermediate 512)."""
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    state = {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}
    return {**config.to_dict(), "architectures": ["LlamaForCausalLM"]}, state


def test_gguf_k_quant_reads_back_within_its_bound_and_as_gguf_decodes_it(tmp_path: Path) -> None:
    config, state = _wide_llama()
    hf = resolve(MemoryReader(state), config)
    path = STORAGE["gguf_k"](state, config, _tokenizer_json(), tmp_path / "k")
    assert path.name == "model-Q6_K.gguf"

    def bound(expected: np.ndarray) -> np.ndarray:
        if expected.ndim < 2:
            return np.zeros_like(expected)
        sub = np.abs(expected).reshape(-1, 16).max(axis=1)
        block = np.repeat(sub.reshape(-1, 16).max(axis=1), 16)
        step = sub / 31 + block / 31 / 127 * (1 + 2**-10) + 2**-24
        return np.repeat(step / 2, 16).reshape(expected.shape) * (1 + 1e-6)

    independent = gguf.GGUFReader(str(path))
    with open_model(path) as model:
        assert _assert_roles_close(hf, model.resolved, bound) == len(hf.entries)
        k_quantised = 0
        for tensor in independent.tensors:
            if tensor.tensor_type != Q.Q6_K or tensor.name in model.reader.unpermuted:
                continue
            decoded = gguf.quants.dequantize(np.asarray(tensor.data), Q.Q6_K)
            np.testing.assert_array_equal(model.reader.read(tensor.name), decoded)
            k_quantised += 1
        assert k_quantised >= 5  # embedding, head, v, o, gate, up, down
        assert model.vocabulary is not None and model.vocabulary.size == 128


def test_gguf_k_falls_back_to_q8_0_for_rows_shorter_than_a_block(tmp_path: Path) -> None:
    config, state, hf = _hf("llama")
    path = STORAGE["gguf_k"](state, config, None, tmp_path / "k")
    with open_model(path) as model:
        assert {info.dtype for info in model.reader.tensors().values()} == {"Q8_0", "F32"}
        _assert_roles_close(hf, model.resolved, _q8_0_bound)
