"""Every family, every format: tensors read back exactly and every role resolves.

Tiny random-init transformers models (``factories``) are saved the way the hub
ships them — one safetensors file, sharded safetensors with an index, a
PyTorch ``.bin`` — and opened through ``open_model`` like a user's folder.
Reading goes through forebear's own readers only; the oracle is the state dict
transformers saved.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from factories import FAMILIES, make_hf_model, save_hf
from forebear.architectures import ResolvedModel, resolve
from forebear.formats import MemoryReader
from forebear.model import open_model
from llama_cpp_conversion import GGUF_ARCH, write_converted

FORMATS = ("safetensors", "sharded", "bin")
EXPECTED_FORMAT = {"safetensors": "safetensors", "sharded": "safetensors", "bin": "pytorch"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", FAMILIES)
def test_tensors_equal_and_roles_resolve(family: str, fmt: str, tmp_path: Path) -> None:
    folder = save_hf(tmp_path / family, family, fmt)
    _, state = make_hf_model(family)
    with open_model(folder) as model:
        reader = model.reader
        assert reader.format == EXPECTED_FORMAT[fmt]
        if fmt == "sharded":
            assert len({span.file for info in reader.tensors().values() for span in info.spans}) > 1
        assert set(reader.tensors()) == set(state)
        for name, original in state.items():
            read = reader.read(name)
            assert read.dtype == original.dtype, name
            np.testing.assert_array_equal(read, original, err_msg=name)
            if original.ndim:
                rows = min(3, original.shape[0])
                np.testing.assert_array_equal(reader.read_rows(name, 0, rows), original[:rows])
        resolved = model.resolved
        assert resolved.family == family
        coverage = resolved.coverage
        assert coverage.complete, (coverage.missing, coverage.unknown, coverage.mismatches)
        assert not coverage.duplicates
        for entry in resolved.entries:
            resolved.read(entry.role, entry.layer, entry.expert)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "bert"])
def test_square_models_resolve(family: str, tmp_path: Path) -> None:
    folder = save_hf(tmp_path / family, family, "safetensors", square=True)
    with open_model(folder) as model:
        dims = model.resolved.dims
        assert dims.hidden == dims.intermediate
        assert model.resolved.coverage.complete


# --- GGUF: the same model as llama.cpp would convert it --------------------------------

_GGUF_DIMS = {
    "hidden": gguf.Keys.LLM.EMBEDDING_LENGTH,
    "intermediate": gguf.Keys.LLM.FEED_FORWARD_LENGTH,
    "layers": gguf.Keys.LLM.BLOCK_COUNT,
    "positions": gguf.Keys.LLM.CONTEXT_LENGTH,
    "vocab": gguf.Keys.LLM.VOCAB_SIZE,
    "heads": gguf.Keys.Attention.HEAD_COUNT,
    "kv_heads": gguf.Keys.Attention.HEAD_COUNT_KV,
    "head_dim": gguf.Keys.Attention.KEY_LENGTH,
    "v_head_dim": gguf.Keys.Attention.VALUE_LENGTH,
    "experts": gguf.Keys.LLM.EXPERT_COUNT,
    "experts_per_token": gguf.Keys.LLM.EXPERT_USED_COUNT,
    "shared_experts": gguf.Keys.LLM.EXPERT_SHARED_COUNT,
    "moe_intermediate": gguf.Keys.LLM.EXPERT_FEED_FORWARD_LENGTH,
    "shared_intermediate": gguf.Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH,
    "q_lora_rank": gguf.Keys.Attention.Q_LORA_RANK,
    "kv_lora_rank": gguf.Keys.Attention.KV_LORA_RANK,
    "rope_head_dim": gguf.Keys.Rope.DIMENSION_COUNT,
}


def _hf_and_gguf(
    family: str, path: Path, qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32
) -> tuple[ResolvedModel, Path]:
    """The family's tiny model resolved from its HF state dict, and written as llama.cpp would."""
    config, state = make_hf_model(family)
    hf = resolve(MemoryReader(state), config)
    arch = GGUF_ARCH[family]
    metadata = {
        key.format(arch=arch): value
        for field, key in _GGUF_DIMS.items()
        if (value := getattr(hf.dims, field)) is not None
    }
    write_converted(path, family, config, state, metadata, qtype=qtype)
    return hf, path


@pytest.mark.parametrize("family", FAMILIES)
def test_gguf_roles_equal_the_hf_roles(family: str, tmp_path: Path) -> None:
    hf, path = _hf_and_gguf(family, tmp_path / f"{family}.gguf")
    with open_model(path) as model:
        converted = model.resolved
        assert converted.source_format == "gguf"
        assert converted.coverage.complete, (
            converted.coverage.missing,
            converted.coverage.unknown,
            converted.coverage.mismatches,
        )
        compared = 0
        for entry in hf.entries:
            if not converted.has(entry.role, entry.layer, entry.expert):
                # llama.cpp drops some tensors (BERT's pooler, heads of encoders): say which.
                assert entry.role.role_name in _DROPPED_BY_LLAMA_CPP.get(family, ()), entry
                continue
            expected = hf.read(entry.role, entry.layer, entry.expert)
            got = converted.read(entry.role, entry.layer, entry.expert)
            # Gemma norms went through (1 + w) - 1 in float32: equal to one ulp of 1.
            np.testing.assert_allclose(got, expected, rtol=0, atol=1.2e-7, err_msg=str(entry))
            compared += 1
        assert compared >= len(hf.entries) - 4


_DROPPED_BY_LLAMA_CPP = {"bert": ("pooler", "pooler_bias")}


@pytest.mark.parametrize(
    ("family", "qtype", "levels"),
    [
        ("llama", gguf.GGMLQuantizationType.Q8_0, 127),
        ("qwen3_moe", gguf.GGMLQuantizationType.Q8_0, 127),
        ("llama", gguf.GGMLQuantizationType.Q4_0, 8),
    ],
)
def test_quantised_gguf_roles_stay_within_quantisation_error(
    family: str, qtype: gguf.GGMLQuantizationType, levels: int, tmp_path: Path
) -> None:
    hf, path = _hf_and_gguf(family, tmp_path / f"{family}.gguf", qtype)
    with open_model(path) as model:
        converted = model.resolved
        quantised = 0
        for entry in hf.entries:
            expected = hf.read(entry.role, entry.layer, entry.expert)
            got = converted.read(entry.role, entry.layer, entry.expert)
            info = model.reader.tensors()[
                converted.entry(entry.role, entry.layer, entry.expert).tensor
            ]
            if info.dtype != qtype.name:
                np.testing.assert_array_equal(got, expected)
                continue
            quantised += 1
            # One quantisation step per 32-value block is at most max|block| / levels.
            blocks = np.abs(expected).reshape(-1, 32).max(axis=1, keepdims=True)
            error = np.abs(got - expected).reshape(-1, 32)
            assert np.all(error <= blocks / levels + 1e-7), entry
        assert quantised >= 10
