"""The GGUF reader against gguf-py's writer, reader and dequantisers, and against hostile bytes."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from hypothesis import given
from hypothesis import strategies as st

from forebear.errors import (
    CorruptCheckpointError,
    ForebearError,
    LimitExceededError,
    UnsupportedFormatError,
)
from forebear.formats.gguf import GGUFReader, find_gguf, hf_row_order, open_gguf_file
from forebear.sources.local import LocalDirectory, LocalFile
from forebear.sources.memory import MemorySource
from gguf_writing import (
    PLAIN,
    GGUFBytes,
    can_dequantize,
    encode,
    gguf_string,
    kv_array_header,
    kv_string,
    kv_uint32,
    llama_cpp_permute,
    llama_cpp_unpermute,
    random_blocks,
    tensor_info,
    write_gguf,
    write_raw_gguf,
)
from recording import RecordingSource

Q = GGMLQuantizationType
N_HEAD, N_KV, HEAD_DIM, VOCAB, LAYERS = 4, 2, 16, 32, 2


def tiny_llama(hidden: int, intermediate: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A llama-shaped state dict in HF names and orientation, with q/k biases."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    kv = N_KV * HEAD_DIM
    state = {"model.embed_tokens.weight": w(VOCAB, hidden), "model.norm.weight": w(hidden)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        state |= {
            p + "self_attn.q_proj.weight": w(N_HEAD * HEAD_DIM, hidden),
            p + "self_attn.q_proj.bias": w(N_HEAD * HEAD_DIM),
            p + "self_attn.k_proj.weight": w(kv, hidden),
            p + "self_attn.k_proj.bias": w(kv),
            p + "self_attn.v_proj.weight": w(kv, hidden),
            p + "self_attn.o_proj.weight": w(hidden, N_HEAD * HEAD_DIM),
            p + "mlp.gate_proj.weight": w(intermediate, hidden),
            p + "mlp.up_proj.weight": w(intermediate, hidden),
            p + "mlp.down_proj.weight": w(hidden, intermediate),
            p + "input_layernorm.weight": w(hidden),
            p + "post_attention_layernorm.weight": w(hidden),
        }
    state["lm_head.weight"] = w(VOCAB, hidden)
    return state


def config(hidden: int, intermediate: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_attention_heads": N_HEAD,
        "num_key_value_heads": N_KV,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": 128,
        "vocab_size": VOCAB,
    }


def groups_of(gguf_name: str) -> int | None:
    if ".attn_q." in gguf_name:
        return N_HEAD
    if ".attn_k." in gguf_name:
        return N_KV
    return None


def oracle(path: Path) -> dict[str, np.ndarray]:
    """gguf-py's own reading of every tensor, dequantised, q/k put back in HF row order."""
    out = {}
    for tensor in gguf.GGUFReader(path).tensors:
        values = gguf.quants.dequantize(np.array(tensor.data), tensor.tensor_type)
        values = values.reshape(tuple(reversed(tensor.shape.tolist())))
        groups = groups_of(tensor.name)
        out[tensor.name] = values if groups is None else llama_cpp_unpermute(values, groups)
    return out


@pytest.fixture(params=[(64, 96), (64, 64)], ids=["rect", "square"])
def dims(request: pytest.FixtureRequest) -> tuple[int, int]:
    return request.param


def test_f32_reads_back_the_hf_tensors_exactly(tmp_path: Path, dims: tuple[int, int]) -> None:
    state = tiny_llama(*dims)
    written = write_gguf(tmp_path / "m.gguf", "llama", state, config(*dims))
    with GGUFReader(LocalFile(written.path)) as reader:
        assert reader.format == "gguf"
        for hf_name, array in state.items():
            name = written.names[hf_name]
            got = reader.read(name)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, array)  # q/k exact: the un-permutation is right
            assert reader.tensors()[name].shape == array.shape
        assert reader.unpermuted == {
            f"blk.{i}.attn_{x}.{kind}"
            for i in range(LAYERS)
            for x in "qk"
            for kind in ("weight", "bias")
        }


def test_without_undo_rows_are_in_llama_cpp_order(tmp_path: Path) -> None:
    state = tiny_llama(64, 96)
    written = write_gguf(tmp_path / "m.gguf", "llama", state, config(64, 96))
    with GGUFReader(LocalFile(written.path), undo_qk_permutation=False) as reader:
        assert reader.unpermuted == frozenset()
        q = state["model.layers.1.self_attn.q_proj.weight"]
        k = state["model.layers.1.self_attn.k_proj.bias"]
        np.testing.assert_array_equal(
            reader.read("blk.1.attn_q.weight"), llama_cpp_permute(q, N_HEAD, N_HEAD)
        )
        np.testing.assert_array_equal(
            reader.read("blk.1.attn_k.bias"), llama_cpp_permute(k, N_HEAD, N_KV)
        )
        assert not np.array_equal(reader.read("blk.1.attn_q.weight"), q)


def test_non_llama_architectures_are_not_unpermuted(tmp_path: Path) -> None:
    state = {k: v for k, v in tiny_llama(64, 96).items() if "bias" not in k}
    written = write_gguf(tmp_path / "m.gguf", "qwen2", state, config(64, 96))
    with GGUFReader(LocalFile(written.path)) as reader:
        assert reader.unpermuted == frozenset()
        q = state["model.layers.0.self_attn.q_proj.weight"]
        np.testing.assert_array_equal(reader.read("blk.0.attn_q.weight"), q)


# Worst error of each type as a fraction of the tensor's largest magnitude: half a step for
# the min/max types, a whole step for Q4_0/Q5_0, whose largest positive value is clipped.
TOLERANCE = {
    Q.F16: 1e-3,
    Q.BF16: 8e-3,
    Q.Q8_0: 1e-2,
    Q.Q5_0: 7e-2,
    Q.Q5_1: 4e-2,
    Q.Q4_0: 13e-2,
    Q.Q4_1: 8e-2,
}


@pytest.mark.parametrize("qtype", list(TOLERANCE), ids=lambda q: q.name)
def test_quantised_reads_equal_gguf_py_and_stay_close(
    tmp_path: Path, dims: tuple[int, int], qtype: GGMLQuantizationType
) -> None:
    state = tiny_llama(*dims)

    def chooser(name: str, array: np.ndarray) -> GGMLQuantizationType:
        return qtype if array.ndim == 2 else Q.F32  # llama.cpp keeps norms and biases in F32

    written = write_gguf(tmp_path / "m.gguf", "llama", state, config(*dims), qtype=chooser)
    expected = oracle(written.path)
    with GGUFReader(LocalFile(written.path)) as reader:
        for hf_name, array in state.items():
            name = written.names[hf_name]
            got = reader.read(name)
            assert reader.tensors()[name].dtype == written.qtypes[name].name
            assert got.dtype == (np.float16 if written.qtypes[name] == Q.F16 else np.float32)
            np.testing.assert_array_equal(got.astype(np.float32), expected[name])
            bound = TOLERANCE[qtype] * np.abs(array).max() if array.ndim == 2 else 0.0
            assert np.abs(got.astype(np.float32) - array).max() <= bound
            for start, stop in [(0, 1), (1, 7), (5, 6), (0, array.shape[0])]:
                np.testing.assert_array_equal(reader.read_rows(name, start, stop), got[start:stop])


DEQUANTISED = [q for q in GGML_QUANT_SIZES if q not in PLAIN and can_dequantize(q)]
UNREADABLE = [q for q in GGML_QUANT_SIZES if q not in PLAIN and not can_dequantize(q)]


def all_types_file(path: Path) -> dict[str, np.ndarray]:
    """One tensor per ggml type plus quantised q/k; returns the stored (ggml-order) arrays."""
    rng = np.random.default_rng(1)
    tensors: dict[str, tuple[np.ndarray, GGMLQuantizationType]] = {}
    for qtype in DEQUANTISED + UNREADABLE:
        block = GGML_QUANT_SIZES[qtype][0]
        shape = (2, 3, 2 * block) if qtype == Q.Q4_K else (5, 2 * block)
        if qtype in UNREADABLE:
            raw = rng.integers(0, 256, size=(*shape[:-1], 2 * GGML_QUANT_SIZES[qtype][1]))
            tensors[f"t.{qtype.name}"] = (raw.astype(np.uint8), qtype)
        else:
            values = rng.standard_normal(shape).astype(np.float32)
            tensors[f"t.{qtype.name}"] = (encode(values, qtype, rng), qtype)
    for qtype, dtype in [(Q.I8, np.int8), (Q.I16, np.int16), (Q.I32, np.int32), (Q.I64, np.int64)]:
        tensors[f"t.{qtype.name}"] = (rng.integers(-100, 100, size=(3, 4)).astype(dtype), qtype)
    tensors["t.F64"] = (rng.standard_normal((3, 4)), Q.F64)
    # q/k of one layer in K and IQ types, permuted by llama.cpp's rule (2 heads, 1 kv head).
    tensors["blk.0.attn_q.weight"] = (random_blocks(Q.Q4_K, 8, rng).reshape(8, -1), Q.Q4_K)
    tensors["blk.0.attn_k.weight"] = (random_blocks(Q.IQ4_XS, 4, rng).reshape(4, -1), Q.IQ4_XS)
    write_raw_gguf(
        path,
        tensors,
        metadata={"llama.attention.head_count": 2, "llama.attention.head_count_kv": 1},
    )
    return {name: data for name, (data, _) in tensors.items()}


def test_every_dequantisable_type_matches_gguf_py(tmp_path: Path) -> None:
    path = tmp_path / "all.gguf"
    stored = all_types_file(path)
    theirs = {t.name: t for t in gguf.GGUFReader(path).tensors}
    with GGUFReader(LocalFile(path)) as reader:
        assert reader.unpermuted == {"blk.0.attn_q.weight", "blk.0.attn_k.weight"}
        for name, tensor in theirs.items():
            info = reader.tensors()[name]
            assert info.dtype == tensor.tensor_type.name
            assert info.shape == tuple(reversed(tensor.shape.tolist()))
            assert info.spans[0].offset == tensor.data_offset
            assert info.nbytes == tensor.n_bytes
            if tensor.tensor_type in UNREADABLE:
                continue
            got = reader.read(name)
            if tensor.tensor_type in PLAIN:
                assert got.dtype == stored[name].dtype
                np.testing.assert_array_equal(got, stored[name])
                continue
            want = gguf.quants.dequantize(np.array(tensor.data), tensor.tensor_type)
            want = want.reshape(info.shape)
            if name.startswith("blk."):
                want = llama_cpp_unpermute(want, 2 if ".attn_q." in name else 1)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
            rows = info.shape[0]
            for start, stop in [(0, 1), (1, rows), (rows - 1, rows), (2, 2)]:
                np.testing.assert_array_equal(reader.read_rows(name, start, stop), got[start:stop])


def test_every_dequantisable_type_is_exercised() -> None:
    assert {Q.Q2_K, Q.Q6_K, Q.IQ1_M, Q.IQ2_XXS, Q.IQ3_S, Q.IQ4_NL, Q.TQ1_0, Q.MXFP4} <= set(
        DEQUANTISED
    )
    assert Q.BF16 in DEQUANTISED and Q.Q8_K in UNREADABLE


@pytest.mark.parametrize("qtype", UNREADABLE, ids=lambda q: q.name)
def test_types_gguf_py_cannot_dequantise_are_listed_but_refused(
    tmp_path: Path, qtype: GGMLQuantizationType
) -> None:
    path = tmp_path / "all.gguf"
    all_types_file(path)
    with GGUFReader(LocalFile(path)) as reader:
        assert reader.tensors()[f"t.{qtype.name}"].dtype == qtype.name
        with pytest.raises(UnsupportedFormatError, match=f"stored as {qtype.name}, which"):
            reader.read(f"t.{qtype.name}")
        with pytest.raises(UnsupportedFormatError, match=qtype.name):
            reader.read_rows(f"t.{qtype.name}", 0, 1)


def test_read_rows_touches_only_the_rows_it_needs(tmp_path: Path) -> None:
    state = tiny_llama(64, 96)
    written = write_gguf(tmp_path / "m.gguf", "llama", state, config(64, 96), qtype=Q.Q8_0)
    source = RecordingSource(written.path.read_bytes(), "rec.gguf")
    reader = GGUFReader(source)
    row_bytes = 64 // 32 * 34
    down = reader.tensors()["blk.0.ffn_up.weight"].spans[0]
    source.reads.clear()
    reader.read_rows("blk.0.ffn_up.weight", 3, 5)
    assert source.reads == [(down.offset + 3 * row_bytes, 2 * row_bytes)]
    q = reader.tensors()["blk.0.attn_q.weight"].spans[0]
    source.reads.clear()
    one = reader.read_rows("blk.0.attn_q.weight", 9, 10)  # head 0, second half, position 1
    assert source.reads == [(q.offset + 3 * row_bytes, row_bytes)]
    source.reads.clear()
    head = reader.read_rows("blk.0.attn_q.weight", HEAD_DIM, 2 * HEAD_DIM)
    assert source.reads == [(q.offset + HEAD_DIM * row_bytes, HEAD_DIM * row_bytes)]
    np.testing.assert_array_equal(one, reader.read("blk.0.attn_q.weight")[9:10])
    np.testing.assert_array_equal(head, reader.read("blk.0.attn_q.weight")[HEAD_DIM:32])
    reader.close()
    assert source.closed


def test_metadata_matches_what_was_written(tmp_path: Path) -> None:
    tokens = ["<s>", "</s>", "▁hello", "é"] + [f"t{i}" for i in range(VOCAB - 4)]
    extra = {
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [float(i) / 2 for i in range(VOCAB)],
        "general.name": "tiny",
        "tokenizer.ggml.add_bos_token": True,
    }
    written = write_gguf(
        tmp_path / "m.gguf", "llama", tiny_llama(64, 96), config(64, 96), extra_metadata=extra
    )
    with open_gguf_file(LocalFile(written.path)) as reader:
        meta = reader.metadata
        assert meta["general.architecture"] == "llama"
        assert reader.architecture == "llama"
        assert meta["llama.attention.head_count"] == N_HEAD
        assert meta["llama.attention.head_count_kv"] == N_KV
        assert meta["llama.feed_forward_length"] == 96
        assert meta["llama.embedding_length"] == 64
        assert meta["llama.block_count"] == LAYERS
        assert meta["tokenizer.ggml.tokens"] == tokens
        assert meta["tokenizer.ggml.scores"] == extra["tokenizer.ggml.scores"]
        assert meta["tokenizer.ggml.add_bos_token"] is True
        assert meta["general.name"] == "tiny"
        assert reader.version == 3 and reader.alignment == 32
        assert reader.data_offset % 32 == 0
        theirs = gguf.GGUFReader(written.path)
        assert set(reader.tensors()) == {t.name for t in theirs.tensors}
        assert set(meta) == set(theirs.fields) - {"GGUF.version", "GGUF.tensor_count"} - {
            "GGUF.kv_count"
        }


def test_legacy_permutation_groups_k_by_heads_over_kv_heads(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    k = rng.standard_normal((2 * 8, 32)).astype(np.float32)  # 2 kv heads of 8 rows
    stored = llama_cpp_permute(k, 8 // 2, None)  # _reverse_hf_permute: n_head //= n_kv
    write_raw_gguf(
        tmp_path / "m.gguf",
        {"blk.0.attn_k.weight": (stored, Q.F32)},
        arch="minicpm",
        metadata={"minicpm.attention.head_count": 8, "minicpm.attention.head_count_kv": 2},
    )
    with GGUFReader(LocalFile(tmp_path / "m.gguf")) as reader:
        np.testing.assert_array_equal(reader.read("blk.0.attn_k.weight"), k)


@given(
    groups=st.integers(1, 6),
    half=st.integers(1, 8),
    cols=st.integers(1, 3),
)
def test_hf_row_order_inverts_llama_cpp_permute(groups: int, half: int, cols: int) -> None:
    hf = np.arange(groups * 2 * half * cols).reshape(groups * 2 * half, cols)
    stored = llama_cpp_permute(hf, groups, groups)
    np.testing.assert_array_equal(stored[hf_row_order(hf.shape[0], groups)], hf)


def test_find_gguf_lists_gguf_files(tmp_path: Path) -> None:
    for name in ("b.gguf", "a.GGUF", "c.safetensors"):
        (tmp_path / name).write_bytes(b"")
    assert find_gguf(LocalDirectory(tmp_path)) == ["a.GGUF", "b.gguf"]


# --- hostile files ---------------------------------------------------------------------------

F32_16 = tensor_info("w", [16], Q.F32, 0)  # 64 bytes at data offset 0


def open_bytes(data: bytes, **kwargs: Any) -> GGUFReader:
    return GGUFReader(MemorySource(data, name="bad.gguf"), **kwargs)


HOSTILE: list[tuple[str, bytes, type[ForebearError], str]] = [
    (
        "bad magic",
        GGUFBytes(magic=b"GGML").build(),
        UnsupportedFormatError,
        r"not a GGUF file \(bad magic\)",
    ),
    (
        "version 1",
        GGUFBytes(version=1).build(),
        UnsupportedFormatError,
        "GGUF version 1 is not supported",
    ),
    (
        "version 9",
        GGUFBytes(version=9).build(),
        UnsupportedFormatError,
        "GGUF version 9 is not supported",
    ),
    (
        "big-endian",
        GGUFBytes(version=3 << 24).build(),
        UnsupportedFormatError,
        "big-endian GGUF files are not supported",
    ),
    (
        "alignment 0",
        GGUFBytes(kvs=[kv_uint32("general.alignment", 0)]).build(),
        CorruptCheckpointError,
        "general.alignment must be a positive power of two, got 0",
    ),
    (
        "alignment 3",
        GGUFBytes(kvs=[kv_uint32("general.alignment", 3)]).build(),
        CorruptCheckpointError,
        "general.alignment must be a positive power of two, got 3",
    ),
    (
        "alignment string",
        GGUFBytes(kvs=[kv_string("general.alignment", "32")]).build(),
        CorruptCheckpointError,
        "general.alignment must be a positive power of two, got '32'",
    ),
    (
        "truncated header",
        GGUFBytes(kvs=[kv_uint32("a.b", 1)]).build()[:37],
        CorruptCheckpointError,
        r"the type of a\.b needs 4 bytes but only 2 remain in the file",
    ),
    (
        "truncated before counts",
        b"GGUF\x03\x00\x00\x00\x01",
        CorruptCheckpointError,
        "the tensor count needs 8 bytes but only 1 remain",
    ),
    (
        "truncated tensor data",
        GGUFBytes(infos=[F32_16], data=b"\0" * 60).build(),
        CorruptCheckpointError,
        r"tensor 'w' has data at bytes \d+\.\.\d+, beyond the end of the file",
    ),
    (
        "string beyond file",
        GGUFBytes(kvs=[kv_string("k", "abc", length=10**6)]).build(),
        CorruptCheckpointError,
        r"metadata 'k' needs 1000000 bytes but only \d+ remain in the file",
    ),
    (
        "array beyond file",
        GGUFBytes(kvs=[kv_array_header("k", GGUFValueType.UINT32, 10**12)]).build(),
        CorruptCheckpointError,
        r"metadata 'k' \(1000000000000 items\) needs 4000000000000 bytes",
    ),
    (
        "string array beyond file",
        GGUFBytes(kvs=[kv_array_header("k", GGUFValueType.STRING, 2**40)]).build(),
        CorruptCheckpointError,
        r"\(1099511627776 items\) needs 8796093022208 bytes",
    ),
    (
        "kv count beyond file",
        GGUFBytes(n_kv=2**60).build(),
        CorruptCheckpointError,
        r"1152921504606846976 key/value pairs needs \d+ bytes but only 8 remain",
    ),
    (
        "tensor count beyond file",
        GGUFBytes(n_tensors=2**50).build(),
        CorruptCheckpointError,
        r"1125899906842624 tensor infos needs",
    ),
    (
        "unknown value type",
        GGUFBytes(kvs=[gguf_string("k") + struct.pack("<I", 13)]).build(),
        CorruptCheckpointError,
        "metadata 'k' has unknown value type 13",
    ),
    (
        "unknown array item type",
        GGUFBytes(kvs=[kv_array_header("k", 99, 0)]).build(),
        CorruptCheckpointError,
        r"metadata 'k'\[\] has unknown value type 99",
    ),
    (
        "duplicate key",
        GGUFBytes(kvs=[kv_uint32("k", 1), kv_uint32("k", 2)]).build(),
        CorruptCheckpointError,
        "metadata key 'k' appears twice",
    ),
    (
        "key not utf-8",
        GGUFBytes(kvs=[gguf_string(b"\xff\xfe") + struct.pack("<IB", 0, 1)]).build(),
        CorruptCheckpointError,
        "metadata key #0 is not valid UTF-8",
    ),
    (
        "offset out of range",
        GGUFBytes(infos=[tensor_info("w", [16], Q.F32, 2**40)]).build(),
        CorruptCheckpointError,
        "beyond the end of the file",
    ),
    (
        "offset unaligned",
        GGUFBytes(infos=[tensor_info("w", [4], Q.F32, 4)], data=b"\0" * 64).build(),
        CorruptCheckpointError,
        "tensor 'w' starts at data offset 4, not a multiple of the alignment 32",
    ),
    (
        "overlapping tensors",
        GGUFBytes(infos=[F32_16, tensor_info("v", [16], Q.F32, 32)], data=b"\0" * 128).build(),
        CorruptCheckpointError,
        r"tensors 'w' and 'v' overlap",
    ),
    (
        "duplicate names",
        GGUFBytes(infos=[F32_16, tensor_info("w", [16], Q.F32, 64)], data=b"\0" * 128).build(),
        CorruptCheckpointError,
        "tensor 'w' appears twice in the header",
    ),
    (
        "unknown ggml type",
        GGUFBytes(infos=[tensor_info("w", [16], 4, 0)], data=b"\0" * 64).build(),
        UnsupportedFormatError,
        "tensor 'w' has unknown ggml type 4",
    ),
    (
        "five dims",
        GGUFBytes(infos=[tensor_info("w", [1, 1, 1, 1, 1], Q.F32, 0)]).build(),
        CorruptCheckpointError,
        "tensor 'w' has 5 dimensions; GGUF allows 1 to 4",
    ),
    (
        "zero dims",
        GGUFBytes(infos=[tensor_info("w", [], Q.F32, 0)]).build(),
        CorruptCheckpointError,
        "tensor 'w' has 0 dimensions",
    ),
    (
        "zero size",
        GGUFBytes(infos=[tensor_info("w", [4, 0], Q.F32, 0)]).build(),
        CorruptCheckpointError,
        r"tensor 'w' has dimensions \[4, 0\]; every dimension must be",
    ),
    (
        "negative size",
        GGUFBytes(infos=[tensor_info("w", [-1], Q.F32, 0)]).build(),
        CorruptCheckpointError,
        r"dimensions \[-1\]; every dimension must be positive",
    ),
    (
        "row not whole blocks",
        GGUFBytes(infos=[tensor_info("w", [16, 2], Q.Q4_0, 0)], data=b"\0" * 64).build(),
        CorruptCheckpointError,
        "tensor 'w' has rows of 16 values, not a multiple of the Q4_0 block size 32",
    ),
    (
        "llama q without head count",
        GGUFBytes(
            kvs=[kv_string("general.architecture", "llama")],
            infos=[tensor_info("blk.0.attn_q.weight", [4, 4], Q.F32, 0)],
            data=b"\0" * 64,
        ).build(),
        CorruptCheckpointError,
        r"llama\.attention\.head_count is missing for layer 0",
    ),
    (
        "heads do not divide rows",
        GGUFBytes(
            kvs=[
                kv_string("general.architecture", "llama"),
                kv_uint32("llama.attention.head_count", 3),
            ],
            infos=[tensor_info("blk.0.attn_q.weight", [4, 4], Q.F32, 0)],
            data=b"\0" * 64,
        ).build(),
        CorruptCheckpointError,
        "has 4 rows, which do not split into 3 heads of an even size",
    ),
]


@pytest.mark.parametrize(
    ("data", "error", "message"), [case[1:] for case in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_files_are_refused(data: bytes, error: type[ForebearError], message: str) -> None:
    source = RecordingSource(data, "rec.gguf")
    with pytest.raises(error, match=message) as caught:
        GGUFReader(source)
    assert type(caught.value) is error
    assert str(caught.value).startswith("rec.gguf: ")
    assert source.closed  # the reader owned the source and released it


def test_a_file_cut_anywhere_is_refused_as_corrupt() -> None:
    data = GGUFBytes(
        kvs=[kv_string("general.architecture", "llama"), kv_array_header("v", 4, 2) + b"\1" * 8],
        infos=[F32_16],
        data=b"\0" * 64,
    ).build()
    open_bytes(data).close()
    for length in range(len(data)):
        with pytest.raises(CorruptCheckpointError):
            open_bytes(data[:length])


def test_valid_bytes_from_the_hostile_builder_open() -> None:
    data = GGUFBytes(
        kvs=[kv_uint32("general.alignment", 64)],
        infos=[F32_16],
        data=struct.pack("<16f", *range(16)),
        alignment=64,
    ).build()
    with open_bytes(data) as reader:
        np.testing.assert_array_equal(reader.read("w"), np.arange(16, dtype=np.float32))
        assert reader.alignment == 64


def test_version_2_and_nested_arrays_are_read() -> None:
    nested = kv_array_header("k", GGUFValueType.ARRAY, 2) + b"".join(
        struct.pack("<IQ", GGUFValueType.UINT8, 2) + bytes([i, i + 1]) for i in (1, 5)
    )
    flags = kv_array_header("flags", GGUFValueType.BOOL, 2) + bytes([1, 0])
    data = GGUFBytes(version=2, kvs=[nested, flags], infos=[F32_16], data=b"\0" * 64).build()
    with open_bytes(data) as reader:
        assert reader.version == 2
        assert reader.metadata == {"k": [[1, 2], [5, 6]], "flags": [True, False]}


def test_per_layer_head_counts_are_honoured(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    k = rng.standard_normal((2 * 8, 32)).astype(np.float32)  # layer 1: 2 kv heads of 8 rows
    write_raw_gguf(
        tmp_path / "m.gguf",
        {"blk.1.attn_k.weight": (llama_cpp_permute(k, 4, 2), Q.F32)},
        arch="granitehybrid",
        metadata={
            "granitehybrid.attention.head_count": [4, 4],
            "granitehybrid.attention.head_count_kv": [0, 2],  # layer 0 is a Mamba layer
        },
    )
    with GGUFReader(LocalFile(tmp_path / "m.gguf")) as reader:
        np.testing.assert_array_equal(reader.read("blk.1.attn_k.weight"), k)
        np.testing.assert_array_equal(reader.read_rows("blk.1.attn_k.weight", 3, 11), k[3:11])


def test_header_over_the_metadata_limit_is_refused() -> None:
    data = GGUFBytes(kvs=[kv_string("general.name", "x" * 500)]).build()
    with pytest.raises(LimitExceededError, match="passes the 200-byte metadata limit"):
        open_bytes(data, max_metadata_bytes=200)
    with open_bytes(data, max_metadata_bytes=1000) as reader:
        assert reader.metadata["general.name"] == "x" * 500


def test_undo_can_be_turned_off_for_files_without_head_counts() -> None:
    data = GGUFBytes(
        kvs=[kv_string("general.architecture", "llama")],
        infos=[tensor_info("blk.0.attn_q.weight", [4, 4], Q.F32, 0)],
        data=struct.pack("<16f", *range(16)),
    ).build()
    with open_bytes(data, undo_qk_permutation=False) as reader:
        assert reader.read("blk.0.attn_q.weight").shape == (4, 4)
