"""The command line end to end: output shapes, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from forebear.cli import main
from forebear.demo import build_demo_models


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = build_demo_models(tmp_path_factory.mktemp("demo"))
    return {path.name: path for path in paths}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out, err = run(["inspect", str(path), "--format", "json"], capsys)
    assert code == 0, err
    return dict(json.loads(out))


def test_inspect_llama_folder(
    demo_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = inspect_json(demo_models["llama-safetensors"], capsys)
    assert data["family"] == "llama"
    assert data["format"] == "safetensors"
    dims = data["dimensions"]
    assert isinstance(dims, dict)
    assert (dims["hidden"], dims["intermediate"], dims["layers"]) == (64, 96, 2)
    assert (dims["heads"], dims["kv_heads"], dims["vocab"]) == (4, 2, 300)
    assert data["tied_head"] is False
    assert data["parameters"] == 300 * 64 * 2 + 64 + 2 * (
        64 * 2 + 64 * 64 * 2 + 32 * 64 * 2 + 96 * 64 * 3
    )
    vocabulary = data["vocabulary"]
    assert isinstance(vocabulary, dict)
    assert (vocabulary["size"], vocabulary["kind"]) == (300, "byte_bpe")
    assert vocabulary["source"].endswith("tokenizer.json")
    roles = data["roles"]
    assert isinstance(roles, dict)
    assert roles["missing"] == [] and roles["unknown"] == []


@pytest.mark.parametrize("name", ["llama-sharded", "llama-Q8_0.gguf", "llama-pytorch"])
def test_every_format_gives_the_same_architecture(
    name: str, demo_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    if name not in demo_models:
        pytest.skip("torch is not installed, so the demo wrote no .bin")
    reference = inspect_json(demo_models["llama-safetensors"], capsys)
    other = inspect_json(demo_models[name], capsys)
    assert other["family"] == "llama"
    assert other["parameters"] == reference["parameters"]
    for key in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab"):
        assert other["dimensions"][key] == reference["dimensions"][key]  # type: ignore[index]
    assert other["roles"]["found"] == reference["roles"]["found"]  # type: ignore[index]
    assert other["vocabulary"]["size"] == 300  # type: ignore[index]


def test_inspect_gpt2_splits_fused_attention_and_ties_head(
    demo_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = inspect_json(demo_models["gpt2-safetensors"], capsys)
    assert data["family"] == "gpt2"
    assert data["tied_head"] is True
    found = data["roles"]["found"]  # type: ignore[index]
    assert found["attn.q"] == found["attn.k"] == found["attn.v"] == 2
    assert data["roles"]["unknown"] == []  # type: ignore[index]


def test_text_output_names_family_and_coverage(
    demo_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["inspect", str(demo_models["llama-safetensors"])], capsys)
    assert code == 0
    assert "llama" in out and "role coverage" in out and "unknown tensors: none" in out


def test_tensors_flag_lists_every_tensor(
    demo_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["inspect", str(demo_models["llama-safetensors"]), "--tensors", "--format", "json"], capsys
    )
    listed = json.loads(out)["tensor_list"]
    assert code == 0 and len(listed) == 2 * 9 + 3
    assert {"name": "lm_head.weight", "dtype": "F32", "shape": [300, 64]} in listed


def test_demo_command_inspects_every_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["demo", str(tmp_path / "demo"), "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    families = [m["family"] for m in data["models"]]
    assert families.count("llama") >= 3 and "gpt2" in families
    verdicts = {Path(c["b"]).name: c["verdict"] for c in data["comparisons"]}
    assert verdicts == {
        "llama-Q8_0.gguf": "repackaged copy",
        "suspect-finetuned": "derived: light fine-tune",
        "suspect-disguised": "derived: light fine-tune",
        "suspect-independent": "independent",
    }
    disguised = next(c for c in data["comparisons"] if c["b"].endswith("suspect-disguised"))
    assert any("permuted" in reason for reason in disguised["reasons"])


# --- errors: one line, the file named, the way out, an exit code -------------------------


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("forebear: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["inspect", str(tmp_path / "nope")], capsys)
    assert code == 3 and out == ""
    assert_one_line_error(
        err, str(tmp_path / "nope"), "no such file or folder", "give a model folder"
    )


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["inspect", str(tmp_path)], capsys)
    assert code == 4
    assert_one_line_error(err, str(tmp_path), "holds no weights")


def test_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_text("hello, these are not weights\n")
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 4
    assert_one_line_error(err, str(path), "not a recognised checkpoint")


def test_truncated_safetensors(
    demo_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (demo_models["llama-safetensors"] / "model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) // 2])
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 5
    assert_one_line_error(err, str(path))


def test_bad_config_json(
    demo_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(
        (demo_models["llama-safetensors"] / "model.safetensors").read_bytes()
    )
    (folder / "config.json").write_text("{not json")
    code, _, err = run(["inspect", str(folder)], capsys)
    assert code == 5
    assert_one_line_error(
        err, "config.json", "is not valid UTF-8 JSON", "fix or remove config.json"
    )


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _Exploit(marker)}, protocol=2))
        archive.writestr("archive/version", "3\n")
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 6
    assert_one_line_error(err, str(path), "system")
    assert not marker.exists()


def test_unknown_architecture_lists_what_was_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.blocks.0.wobble": np.zeros((4, 4), np.float32)}, str(path))
    code, _, err = run(["inspect", str(path)], capsys)
    assert code == 7
    assert_one_line_error(err, str(path), "encoder.blocks.0.wobble")


def test_debug_env_shows_the_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forebear.errors import InputNotFoundError

    monkeypatch.setenv("FOREBEAR_DEBUG", "1")
    with pytest.raises(InputNotFoundError):
        main(["inspect", str(tmp_path / "nope")])


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["inspect"], capsys)
    assert code == 2 and "Missing argument" in err


def test_python_dash_m_and_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "forebear", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("forebear ")
