"""The virtual DeepSeek-V3 repository: exact safetensors bytes, sane values, forebear reads it.

The tiny repository (same names and layout, toy sizes) is read end to end; the full
≈ 689 GB one only through its headers, its index and a few generated ranges.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forebear.architectures import Role
from forebear.architectures.resolve import ResolvedModel, resolve
from forebear.architectures.vocabulary import load_vocabulary
from forebear.bench import virtual_files
from forebear.bench.virtual import (
    FULL,
    TINY,
    VirtualLocation,
    VirtualSafetensors,
    deepseek_v3_repo,
    deepseek_v3_tensors,
)
from forebear.errors import CorruptCheckpointError, InputNotFoundError, LimitExceededError
from forebear.formats import open_weights
from forebear.formats.base import CheckpointReader
from forebear.formats.safetensors import SafetensorsReader

MTP_ONLY = ("embed_tokens", "enorm", "hnorm", "eh_proj", "shared_head.norm", "shared_head.head")


def _json(location: VirtualLocation, relpath: str) -> Any:
    return json.loads(location.read_bytes(relpath, 1 << 26))


def _shards(files: dict[str, Any]) -> list[str]:
    return sorted(name for name in files if name.endswith(".safetensors"))


@pytest.fixture(scope="module")
def tiny() -> VirtualLocation:
    return VirtualLocation(deepseek_v3_repo(seed=0, scale="tiny"), "virtual/tiny")


@pytest.fixture(scope="module")
def tiny_reader(tiny: VirtualLocation) -> CheckpointReader:
    config = _json(tiny, "config.json")
    return open_weights(tiny, quantization_config=config["quantization_config"])


@pytest.fixture(scope="module")
def tiny_resolved(tiny: VirtualLocation, tiny_reader: CheckpointReader) -> ResolvedModel:
    return resolve(tiny_reader, _json(tiny, "config.json"))


@pytest.fixture(scope="module")
def full() -> VirtualLocation:
    return VirtualLocation(deepseek_v3_repo(seed=0), "virtual/deepseek-v3")


# ---------------------------------------------------------------- bytes


def test_tiny_shards_are_what_the_safetensors_library_writes(tiny: VirtualLocation) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load, save

    for name in _shards(dict(tiny.files)):
        data = tiny.read_bytes(name, 1 << 26)
        tensors = load(data)
        assert save(tensors, metadata={"format": "pt"}) == data, name
        assert all(bool(torch.isfinite(t.float()).all()) for t in tensors.values()), name
        dtypes = {str(t.dtype) for t in tensors.values()}
        assert "torch.float8_e4m3fn" in dtypes, name


def test_values_are_sane_for_their_dtype(tiny: VirtualLocation) -> None:
    files = tiny.files
    raw: dict[str, list[np.ndarray]] = {}
    for name in _shards(dict(files)):
        reader = SafetensorsReader(tiny.open(name))
        for tensor, info in reader.tensors().items():
            kind = "scale" if tensor.endswith("_scale_inv") else info.dtype
            kind = "norm" if tensor.endswith(("norm.weight", "enorm.weight")) else kind
            span = info.spans[0]
            stored = files[name].read(span.offset, span.length)
            values = reader.read(tensor) if info.dtype != "F8_E4M3" else np.frombuffer(stored, "u1")
            raw.setdefault(kind, []).append(values.ravel())
    codes = np.concatenate(raw["F8_E4M3"])
    assert not np.isin(codes, [0x7F, 0xFF]).any()  # e4m3's NaN codes
    assert len(np.unique(codes)) > 40  # a spread of magnitudes, not a constant
    scales = np.concatenate(raw["scale"])
    assert scales.min() >= 1e-3 and scales.max() <= 1e-2
    norms = np.concatenate(raw["norm"])
    assert abs(norms.mean() - 1) < 0.02 and 0.02 < norms.std() < 0.1
    weights = np.concatenate(raw["BF16"])
    assert np.isfinite(weights).all() and abs(weights.std() - 0.02) < 0.002


def test_the_full_index_covers_every_tensor_once(full: VirtualLocation) -> None:
    index = _json(full, "model.safetensors.index.json")
    held = [
        (spec.name, name)
        for name in _shards(dict(full.files))
        for spec in full.files[name].tensors()
    ]
    assert len(held) == len({tensor for tensor, _ in held}) == 91_991
    assert dict(held) == index["weight_map"]
    assert {spec.name for spec in deepseek_v3_tensors(FULL)} == set(index["weight_map"])
    total = index["metadata"]["total_size"]
    assert 680e9 <= total <= 700e9
    assert total == sum(spec.nbytes for spec in deepseek_v3_tensors(FULL))
    shards = _shards(dict(full.files))
    assert len(shards) == 163 and shards[-1] == "model-00163-of-000163.safetensors"
    headers = sum(len(full.files[name].header) for name in shards)
    assert sum(full.files[name].size for name in shards) == total + headers


@pytest.mark.parametrize("number", [1, 82, 160, 163])
def test_full_shard_headers_parse(full: VirtualLocation, number: int) -> None:
    name = f"model-{number:05d}-of-000163.safetensors"
    reader = SafetensorsReader(full.open(name))
    index = _json(full, "model.safetensors.index.json")["weight_map"]
    assert set(reader.tensors()) == {t for t, shard in index.items() if shard == name}
    assert reader.metadata == {"format": "pt"}
    last = max(info.spans[0].offset + info.spans[0].length for info in reader.tensors().values())
    assert last == full.files[name].size


def test_full_ranges_are_deterministic_and_split_invariant(full: VirtualLocation) -> None:
    shard = full.files["model-00082-of-000163.safetensors"]
    assert isinstance(shard, VirtualSafetensors)
    # Across the header's end, several tensors and many 64 KiB blocks.
    offset, length = len(shard.header) - 1000, 3_000_001
    whole = shard.read(offset, length)
    virtual_files._block.cache_clear()  # the second read generates every block again
    assert shard.read(offset, length) == whole
    virtual_files._block.cache_clear()
    split = 1_234_567
    assert shard.read(offset, split) + shard.read(offset + split, length - split) == whole
    again = VirtualSafetensors(shard.tensors()[::-1], seed=0, name="again")
    assert again.read(offset, length) == whole
    other = VirtualSafetensors(shard.tensors(), seed=1, name="other")
    assert other.read(0, len(shard.header)) == shard.header
    assert other.read(len(shard.header), 4096) != shard.read(len(shard.header), 4096)


@given(data=st.data())
def test_any_split_of_any_range_reads_the_same_bytes(
    tiny: VirtualLocation, data: st.DataObject
) -> None:
    shard = tiny.files["model-00002-of-000003.safetensors"]
    offset = data.draw(st.integers(0, shard.size))
    length = data.draw(st.integers(0, shard.size - offset))
    cut = data.draw(st.integers(0, length))
    whole = shard.read(offset, length)
    assert len(whole) == length
    assert shard.read(offset, cut) + shard.read(offset + cut, length - cut) == whole


def test_hostile_requests_are_refused_with_one_line(tiny: VirtualLocation) -> None:
    name = "model-00001-of-000003.safetensors"
    size = tiny.files[name].size
    with pytest.raises(CorruptCheckpointError) as outside:
        tiny.open(name).read(size - 4, 8)
    assert str(outside.value) == (
        f"virtual/tiny/{name}: byte range {size - 4}..{size + 4} is outside the file "
        f"({size} bytes) — the file is truncated or its header is wrong; download it again"
    )
    with pytest.raises(InputNotFoundError) as missing:
        tiny.open("pytorch_model.bin")
    assert str(missing.value) == (
        "virtual/tiny: pytorch_model.bin is missing from the model folder — "
        "the virtual repository has no such file; check the name"
    )
    with pytest.raises(LimitExceededError, match="over the 100-byte limit"):
        tiny.read_bytes("config.json", 100)


# ---------------------------------------------------------------- forebear reads it


def test_tiny_resolves_as_deepseek_v3_with_mla_and_experts(tiny_resolved: ResolvedModel) -> None:
    resolved = tiny_resolved
    assert resolved.family == "deepseek_v3"
    assert resolved.coverage.complete, resolved.coverage
    assert (resolved.dims.experts, resolved.dims.kv_lora_rank) == (TINY.experts, TINY.kv_lora_rank)
    assert list(resolved.layers) == list(range(TINY.layers))
    mtp = f"model.layers.{TINY.layers}"
    assert sorted(resolved.coverage.ignored) == sorted(f"{mtp}.{n}.weight" for n in MTP_ONLY)
    assert not resolved.has(Role.MOE_ROUTER, 0) and resolved.has(Role.MLP_UP, 0)
    last = TINY.layers - 1
    assert resolved.has(Role.MOE_EXPERT_UP, last, TINY.experts - 1)
    kv_a = (TINY.kv_lora_rank + TINY.rope_head_dim, TINY.hidden)
    assert resolved.shape(Role.ATTN_KV_A, last) == kv_a


def test_fp8_expert_rows_dequantise_to_their_codes_times_block_scales(
    tiny: VirtualLocation, tiny_reader: CheckpointReader, tiny_resolved: ResolvedModel
) -> None:
    layer, expert = TINY.layers - 1, 3
    rows = np.array([0, 5, TINY.moe_intermediate - 1])
    found = tiny_resolved.read_row_set(Role.MOE_EXPERT_UP, layer, expert, rows=rows)
    assert found.shape == (3, TINY.hidden) and np.isfinite(found).all() and found.any()
    # The same rows by hand, from the stored codes and their 32×32 block scales.
    name = f"model.layers.{layer}.mlp.experts.{expert}.up_proj.weight"
    shard = _json(tiny, "model.safetensors.index.json")["weight_map"][name]
    plain = SafetensorsReader(tiny.open(shard))
    codes = plain.read(name)
    scales = plain.read(name + "_scale_inv")
    grid = np.repeat(np.repeat(scales, TINY.block, axis=0), TINY.block, axis=1)
    expected = (codes * grid[: codes.shape[0], : codes.shape[1]])[rows]
    np.testing.assert_array_equal(found, expected)
    assert tiny_reader.tensors()[name].dtype == "F8_E4M3_BLOCK"


def test_the_mtp_layer_holds_copies_of_the_embedding_and_head(
    tiny_reader: CheckpointReader,
) -> None:
    mtp = f"model.layers.{TINY.layers}"
    for copy, original in [("embed_tokens", "model.embed_tokens"), ("shared_head.head", "lm_head")]:
        np.testing.assert_array_equal(
            tiny_reader.read(f"{mtp}.{copy}.weight"), tiny_reader.read(f"{original}.weight")
        )
    assert not np.array_equal(
        tiny_reader.read("lm_head.weight"), tiny_reader.read("model.embed_tokens.weight")
    )


def test_the_vocabulary_loads_with_distinct_tokens(tiny: VirtualLocation) -> None:
    vocabulary = load_vocabulary(tiny)
    assert vocabulary is not None and vocabulary.kind == "byte_bpe"
    assert len(vocabulary.normalized) == len(set(vocabulary.normalized)) == TINY.vocab
    specials = [form for form in vocabulary.normalized if isinstance(form, str)]
    assert len(specials) == 3 + TINY.added_tokens
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_str(tiny.read_bytes("tokenizer.json", 1 << 26).decode())
    text = " the strange word, 42!"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_a_fingerprint_runs_on_the_tiny_repo(
    tiny: VirtualLocation, tiny_reader: CheckpointReader
) -> None:
    from forebear.fingerprint import fingerprint
    from forebear.model import Model

    model = Model("virtual/tiny", tiny_reader, _json(tiny, "config.json"), tiny, [])
    found = fingerprint(model, dims=8, units=8)
    assert found.meta["structure"]["family"] == "deepseek_v3"
    # Every layer sketched: the dense MLPs, then each MoE layer through its first expert.
    widths = [TINY.intermediate if layer < TINY.dense_layers else TINY.moe_intermediate
              for layer in range(TINY.layers)]  # fmt: skip
    assert [None if s is None else s.width for s in found.layers] == widths
    for sketch in found.layers:
        assert sketch is not None and sketch.content is not None  # FP8 blocks decoded whole
        assert np.isfinite(sketch.content.down.astype(np.float32)).all()
    assert found.embedding.shape[1] == 8 and np.isfinite(found.embedding).all()
