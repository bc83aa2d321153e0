"""The safetensors reader against files written by the reference library, and hostile headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from forebear.errors import (
    CorruptCheckpointError,
    InputNotFoundError,
    LimitExceededError,
    UnsupportedFormatError,
)
from forebear.formats.safetensors import SafetensorsReader, open_safetensors_folder
from forebear.sources import LocalDirectory, LocalFile
from recording import RecordingSource

SHAPES = [(), (5,), (3, 4), (2, 3, 5), (0,), (4, 0), (0, 3, 2)]
NUMPY_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I8": np.int8,
    "U8": np.uint8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
}


def _values(dtype: type[np.generic], shape: tuple[int, ...], seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def _raw_file(header: object, data: bytes = b"", *, header_bytes: bytes | None = None) -> bytes:
    body = header_bytes if header_bytes is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + data


def _open_bytes(data: bytes, **kwargs: Any) -> SafetensorsReader:
    return SafetensorsReader(RecordingSource(data, "mem.safetensors"), **kwargs)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype_name", sorted(NUMPY_DTYPES))
def test_numpy_written_file_round_trips_every_shape(tmp_path: Path, dtype_name: str) -> None:
    dtype = NUMPY_DTYPES[dtype_name]
    arrays = {f"t{i}": _values(dtype, shape, i) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path), metadata={"format": "np"})
    with SafetensorsReader(LocalFile(path)) as reader:
        assert reader.format == "safetensors"
        assert dict(reader.metadata) == {"format": "np"}
        for key, expected in arrays.items():
            info = reader.tensors()[key]
            assert (info.dtype, info.shape) == (dtype_name, expected.shape)
            assert info.nbytes == expected.nbytes
            got = reader.read(key)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype_name", ["BF16", "F8_E4M3", "F8_E5M2"])
def test_torch_written_reduced_floats_decode_like_torch(tmp_path: Path, dtype_name: str) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save

    torch_dtype = {
        "BF16": torch.bfloat16,
        "F8_E4M3": torch.float8_e4m3fn,
        "F8_E5M2": torch.float8_e5m2,
    }[dtype_name]
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"t{i}": (torch.randn(shape, generator=generator) * 3).to(torch_dtype)
        for i, shape in enumerate(SHAPES)
    }
    # Every one of the 256 fp8 codes (NaN included) must decode as torch does.
    if dtype_name != "BF16":
        tensors["codes"] = torch.arange(256, dtype=torch.uint8).view(torch_dtype)
    path = tmp_path / "m.safetensors"
    torch_save(tensors, str(path))
    with SafetensorsReader(LocalFile(path)) as reader:
        for key, tensor in tensors.items():
            assert reader.tensors()[key].dtype == dtype_name
            got = reader.read(key)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, tensor.float().numpy())


def test_read_rows_touches_only_the_rows(tmp_path: Path) -> None:
    array = _values(np.float32, (6, 3, 4), 1)
    path = tmp_path / "m.safetensors"
    save_file({"a": np.zeros(7, np.float16), "w": array}, str(path))
    source = RecordingSource(path.read_bytes(), "mem.safetensors")
    reader = SafetensorsReader(source)
    (span,) = reader.tensors()["w"].spans
    source.reads.clear()
    np.testing.assert_array_equal(reader.read_rows("w", 2, 5), array[2:5])
    assert source.reads == [(span.offset + 2 * 48, 3 * 48)]
    assert reader.read_rows("w", 4, 4).shape == (0, 3, 4)


def test_opening_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, str(path))
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    source = RecordingSource(data, "mem.safetensors")
    SafetensorsReader(source).close()
    assert source.reads == [(0, 8), (8, length)]
    assert source.closed


def test_spans_are_absolute_file_offsets(tmp_path: Path) -> None:
    arrays = {"a": np.arange(3, dtype=np.int16), "b": np.arange(4, dtype=np.float64)}
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path))
    data = path.read_bytes()
    with SafetensorsReader(LocalFile(path)) as reader:
        for key, array in arrays.items():
            (span,) = reader.tensors()[key].spans
            assert span.file == str(path)
            assert data[span.offset : span.offset + span.length] == array.tobytes()


def test_zero_size_tensors_may_share_an_offset() -> None:
    header = {
        "e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [4, 4]},
        "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    reader = _open_bytes(_raw_file(header, np.array([1, 2], np.float32).tobytes()))
    assert reader.read("e").shape == (0, 4)
    np.testing.assert_array_equal(reader.read("w"), [1, 2])


# ---------------------------------------------------------------- folders


def _shard_folder(tmp_path: Path) -> dict[str, np.ndarray[Any, Any]]:
    arrays = {f"layer.{i}.w": _values(np.float32, (3, 2 + i), i) for i in range(4)}
    save_file({k: arrays[k] for k in ("layer.0.w", "layer.1.w")}, str(tmp_path / "a.safetensors"))
    save_file({k: arrays[k] for k in ("layer.2.w", "layer.3.w")}, str(tmp_path / "b.safetensors"))
    return arrays


def _write_index(tmp_path: Path, weight_map: dict[str, str]) -> None:
    document = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(document))


def test_sharded_folder_with_index(tmp_path: Path) -> None:
    arrays = _shard_folder(tmp_path)
    _write_index(
        tmp_path, {k: "a.safetensors" if k[6] in "01" else "b.safetensors" for k in arrays}
    )
    reader = open_safetensors_folder(LocalDirectory(tmp_path))
    assert reader.format == "safetensors"
    assert sorted(reader.tensors()) == sorted(arrays)
    for key, array in arrays.items():
        np.testing.assert_array_equal(reader.read(key), array)
        np.testing.assert_array_equal(reader.read_rows(key, 1, 3), array[1:3])
    reader.close()


def test_folder_of_shards_without_index(tmp_path: Path) -> None:
    arrays = _shard_folder(tmp_path)
    reader = open_safetensors_folder(LocalDirectory(tmp_path))
    assert sorted(reader.tensors()) == sorted(arrays)
    np.testing.assert_array_equal(reader.read("layer.3.w"), arrays["layer.3.w"])
    reader.close()


def test_folder_with_one_file(tmp_path: Path) -> None:
    save_file({"w": np.eye(3, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    reader = open_safetensors_folder(LocalDirectory(tmp_path))
    assert isinstance(reader, SafetensorsReader)
    np.testing.assert_array_equal(reader.read("w"), np.eye(3))
    reader.close()


def test_folder_without_safetensors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputNotFoundError, match=r"no \.safetensors file in the folder"):
        open_safetensors_folder(LocalDirectory(tmp_path))


def test_index_that_is_not_json(tmp_path: Path) -> None:
    _shard_folder(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="index is not valid UTF-8 JSON"):
        open_safetensors_folder(LocalDirectory(tmp_path))


def test_index_naming_a_missing_shard(tmp_path: Path) -> None:
    _shard_folder(tmp_path)
    _write_index(tmp_path, {"layer.0.w": "a.safetensors", "layer.9.w": "c.safetensors"})
    with pytest.raises(
        InputNotFoundError, match=r"c\.safetensors is missing from the model folder"
    ):
        open_safetensors_folder(LocalDirectory(tmp_path))


def test_index_naming_a_tensor_no_shard_holds(tmp_path: Path) -> None:
    _shard_folder(tmp_path)
    _write_index(tmp_path, {"layer.0.w": "a.safetensors", "layer.9.w": "a.safetensors"})
    with pytest.raises(CorruptCheckpointError, match=r"named by the index are in no shard"):
        open_safetensors_folder(LocalDirectory(tmp_path))


def test_index_path_escaping_the_folder(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    _shard_folder(model)
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "x.safetensors"))
    _write_index(model, {"layer.0.w": "a.safetensors", "x": "../x.safetensors"})
    with pytest.raises(CorruptCheckpointError, match="points outside the model folder"):
        open_safetensors_folder(LocalDirectory(model))


def test_shards_holding_one_tensor_twice(tmp_path: Path) -> None:
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(CorruptCheckpointError, match="tensor 'w' appears in two shards"):
        open_safetensors_folder(LocalDirectory(tmp_path))


# ---------------------------------------------------------------- hostile headers

GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
DATA = bytes(8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"file is 0 bytes, too short for the 8-byte header length \(truncated\)"),
        (b"\x05\x00\x00", r"file is 3 bytes, too short"),
        (struct.pack("<Q", 100) + b"{}", r"header declares 100 bytes but the file has only 2"),
        (_raw_file(None, header_bytes=b'{"\xff": 1}'), r"header is not UTF-8 \(byte 2\)"),
        (_raw_file(None, header_bytes=b'{"w": '), r"header is not valid JSON"),
        (_raw_file([1, 2]), r"header is a JSON list, expected an object"),
        (
            _raw_file(None, header_bytes=b'{"w": {}, "w": {}}'),
            r"header lists 'w' twice",
        ),
        (_raw_file({"w": [1]}), r"header entry for 'w' is not an object"),
        (_raw_file({"w": {"dtype": "F32", "shape": [2]}}), r"header entry for 'w' has no data_off"),
        (_raw_file({"w": {**GOOD["w"], "dtype": 3}}, DATA), r"dtype of 'w' is not a string"),
        (_raw_file({"w": {**GOOD["w"], "shape": [-2]}}, DATA), r"shape of 'w' is not a list of"),
        (_raw_file({"w": {**GOOD["w"], "shape": [2.0]}}, DATA), r"shape of 'w' is not a list of"),
        (_raw_file({"w": {**GOOD["w"], "shape": [True]}}, DATA), r"shape of 'w' is not a list of"),
        (
            _raw_file({"w": {**GOOD["w"], "data_offsets": [0]}}, DATA),
            r"data_offsets of 'w' is not a pair of integers",
        ),
        (
            _raw_file({"w": {**GOOD["w"], "data_offsets": [8, 0]}}, DATA),
            r"data_offsets of 'w' are \[8, 0\], not ordered",
        ),
        (
            _raw_file({"w": {**GOOD["w"], "shape": [3]}}, DATA),
            r"tensor 'w' is F32 \[3\] = 12 bytes but data_offsets span 8",
        ),
        (
            _raw_file({"w": {**GOOD["w"], "data_offsets": [4, 12]}}, DATA),
            r"tensor 'w' ends at data byte 12, beyond the 8-byte data section \(truncated\)",
        ),
        (
            _raw_file(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F16", "shape": [2], "data_offsets": [6, 10]},
                },
                bytes(12),
            ),
            r"tensors 'a' and 'b' overlap in the data section",
        ),
        (_raw_file({**GOOD, "__metadata__": {"k": 1}}, DATA), r"__metadata__ must map strings"),
        (
            _raw_file({"e": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}),
            r"shape of 'e' is beyond what an array can hold",
        ),
        (
            _raw_file({"e": {"dtype": "U8", "shape": [0] * 65, "data_offsets": [0, 0]}}),
            r"shape of 'e' is beyond what an array can hold",
        ),
    ],
)
def test_hostile_header_is_refused(data: bytes, message: str) -> None:
    source = RecordingSource(data, "mem.safetensors")
    with pytest.raises(CorruptCheckpointError, match=message) as caught:
        SafetensorsReader(source)
    assert caught.value.path == "mem.safetensors"
    assert source.closed


def test_deeply_nested_header_is_refused_cleanly() -> None:
    with pytest.raises(CorruptCheckpointError, match="header JSON is nested too deeply"):
        _open_bytes(_raw_file(None, header_bytes=b"[" * 100_000 + b"]" * 100_000))


def test_unknown_dtype_is_unsupported() -> None:
    header = {"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}
    with pytest.raises(UnsupportedFormatError, match="tensor 'w' has dtype 'F4'"):
        _open_bytes(_raw_file(header, b"\x00"))


def test_header_over_the_limit_is_refused() -> None:
    data = _raw_file(GOOD, DATA)
    assert _open_bytes(data, max_header_bytes=len(data)).read("w").shape == (2,)
    with pytest.raises(LimitExceededError, match=r"over the 16-byte limit"):
        _open_bytes(data, max_header_bytes=16)


def test_huge_declared_header_is_refused_before_reading_it() -> None:
    source = RecordingSource(struct.pack("<Q", 2**63) + b"{}", "mem.safetensors")
    with pytest.raises(LimitExceededError, match=r"header declares 9223372036854775808 bytes"):
        SafetensorsReader(source)
    assert source.reads == [(0, 8)]


def test_truncated_real_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptCheckpointError, match=r"ends at data byte 64, beyond the 63-byte"):
        SafetensorsReader(LocalFile(path))
