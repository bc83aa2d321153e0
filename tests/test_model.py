"""Model folders and single files put together: which weights, which config, which vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from factories import make_hf_model, save_hf
from forebear.errors import CorruptCheckpointError, UnsupportedFormatError
from forebear.model import open_model


def test_folder_prefers_safetensors_over_bin(tmp_path: Path) -> None:
    folder = save_hf(tmp_path / "both", "qwen2", "safetensors")
    bin_folder = save_hf(tmp_path / "bin", "qwen2", "bin")
    shutil.copy(bin_folder / "pytorch_model.bin", folder / "pytorch_model.bin")
    with open_model(folder) as model:
        assert model.reader.format == "safetensors"
        assert [p.name for p in model.weight_files] == ["model.safetensors"]


def test_single_file_uses_the_config_beside_it(tmp_path: Path) -> None:
    folder = save_hf(tmp_path / "m", "gpt_neox", "safetensors")
    with open_model(folder / "model.safetensors") as model:
        assert model.config is not None and model.config["model_type"] == "gpt_neox"
        assert model.resolved.family == "gpt_neox"
        assert model.bytes_on_disk == (folder / "model.safetensors").stat().st_size


def test_single_file_without_config_is_detected_from_tensor_names(tmp_path: Path) -> None:
    _, state = make_hf_model("qwen3")
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with open_model(path) as model:
        assert model.config is None
        assert model.resolved.family == "qwen3"
        assert model.resolved.coverage.complete


def test_gptq_folder_takes_quantize_config_json(tmp_path: Path) -> None:
    out, inp, groups = 24, 64, 4
    save_file(
        {
            "l.qweight": np.zeros((inp // 8, out), np.int32),
            "l.qzeros": np.zeros((groups, out // 8), np.int32),
            "l.scales": np.ones((groups, out), np.float16),
        },
        str(tmp_path / "model.safetensors"),
    )
    with pytest.raises(UnsupportedFormatError, match="quantization"):
        open_model(tmp_path)
    (tmp_path / "quantize_config.json").write_text(
        json.dumps({"quant_method": "gptq", "bits": 4, "group_size": 16})
    )
    with open_model(tmp_path) as model:
        info = model.reader.tensors()["l.weight"]
        assert (info.dtype, info.shape) == ("GPTQ_INT4", (out, inp))
        # GPTQ v1 stores zero - 1: packed zeros of 0 mean a zero point of 1, so q=0 → -1 × scale.
        np.testing.assert_array_equal(model.reader.read("l.weight"), -np.ones((out, inp)))


def test_config_that_is_not_an_object(tmp_path: Path) -> None:
    save_hf(tmp_path, "llama", "safetensors")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CorruptCheckpointError, match=r"config\.json: is not a JSON object"):
        open_model(tmp_path)


def test_several_gguf_files_ask_which(tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(UnsupportedFormatError, match="holds 2 GGUF files"):
        open_model(tmp_path)


def test_safetensors_header_length_with_a_pickle_like_first_byte(tmp_path: Path) -> None:
    # A header of 0x80 + 256·k bytes starts with the byte a legacy pickle starts with.
    path = tmp_path / "model.safetensors"
    name = "x" * 40
    for pad in range(64):
        save_file({name: np.zeros(2, np.float32)}, str(path), metadata={"p": "y" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    with open_model(path) as model:
        assert model.reader.format == "safetensors"
