"""Random byte mutations of valid files: every reader fails only with ForebearError.

Each seed file is small but holds several dtypes, shapes and metadata kinds, so
mutations hit the header parser, the tensor table and the data. For every
mutated file, whatever opens is listed and read in full and by rows.
"""

from __future__ import annotations

import contextlib
import io
from functools import cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forebear.errors import ForebearError
from forebear.formats import open_checkpoint
from forebear.sources import MemorySource


@cache
def safetensors_seed() -> bytes:
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    return save(
        {
            "a.weight": rng.standard_normal((6, 5)).astype(np.float32),
            "b.weight": rng.standard_normal((4,)).astype(np.float16),
            "c.bias": np.arange(3, dtype=np.int64),
            "d.scalar": np.array(1.5, dtype=np.float64),
        },
        metadata={"format": "pt"},
    )


@cache
def pytorch_seed() -> bytes:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    base = torch.randn(6, 5)
    torch.save(
        {
            "a.weight": base,
            "b.weight": torch.randn(4, dtype=torch.bfloat16),
            "c.view": base.t(),
            "d.ids": torch.arange(3),
        },
        buffer,
    )
    return buffer.getvalue()


@cache
def gguf_seed() -> bytes:
    import tempfile
    from pathlib import Path

    import gguf

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.gguf"
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_block_count(1)
        writer.add_head_count(2)
        writer.add_head_count_kv(1)
        writer.add_string("general.name", "seed")
        writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
        writer.add_tensor("token_embd.weight", rng.standard_normal((3, 32)).astype(np.float32))
        q8 = gguf.quants.quantize(
            rng.standard_normal((4, 32)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0
        )
        writer.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor("output_norm.weight", rng.standard_normal(32).astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


SEEDS = {"safetensors": safetensors_seed, "pytorch": pytorch_seed, "gguf": gguf_seed}


def exercise(data: bytes) -> None:
    reader = open_checkpoint(MemorySource(data, "fuzzed"))
    try:
        for name, info in reader.tensors().items():
            reader.read(name)
            if info.shape:
                reader.read_rows(name, 0, min(1, info.shape[0]))
    finally:
        reader.close()


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    # Most interesting bytes are in the first few hundred (headers, tables); bias towards them.
    position = st.one_of(st.integers(0, min(size - 1, 512)), st.integers(0, size - 1))
    edit = st.tuples(st.sampled_from(["set", "delete", "insert"]), position, st.integers(0, 255))
    edits = draw(st.lists(edit, min_size=1, max_size=6))
    if draw(st.booleans()):
        edits.append(("truncate", draw(st.integers(0, size)), 0))
    return edits


def apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in edits:
        position = min(position, max(len(buffer) - 1, 0))
        if kind == "set" and buffer:
            buffer[position] = value
        elif kind == "delete" and buffer:
            del buffer[position]
        elif kind == "insert":
            buffer.insert(position, value)
        elif kind == "truncate":
            del buffer[position:]
    return bytes(buffer)


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_seed_files_read_cleanly(fmt: str) -> None:
    exercise(SEEDS[fmt]())


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_mutated_files_raise_only_forebear_errors(fmt: str) -> None:
    seed = SEEDS[fmt]()

    @given(mutations(len(seed)))
    def check(edits: list[tuple[str, int, int]]) -> None:
        with contextlib.suppress(ForebearError):
            exercise(apply(seed, edits))

    check()
