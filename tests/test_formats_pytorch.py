"""PyTorch zip checkpoints: exact values for every dtype and layout torch.save writes, and refusals.

torch is used here only to WRITE checkpoints; the reader never imports it. Hostile
inputs are built by hand (pickles with ``__reduce__``, zips with crafted records)
and every refusal is pinned by a stable part of its message.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import pickle
import struct
import subprocess
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forebear.errors import (
    CorruptCheckpointError,
    ForebearError,
    InputNotFoundError,
    LimitExceededError,
    UnsafeCheckpointError,
    UnsupportedFormatError,
)
from forebear.formats.pytorch import PyTorchReader, open_pytorch_folder
from forebear.sources.local import LocalDirectory, LocalFile
from recording import RecordingSource

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------- helpers


def save(tmp_path: Path, obj: object, name: str = "model.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def open_file(path: Path, **limits: int) -> PyTorchReader:
    return PyTorchReader(LocalFile(path), **limits)


def expected(tensor: Any) -> np.ndarray:
    """What the reader must return: the tensor's values, BF16/FP8 widened exactly to float32."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        tensor = tensor.float()
    return tensor.contiguous().numpy()


def assert_reads_exactly(reader: PyTorchReader, state: dict[str, Any]) -> None:
    assert sorted(reader.tensors()) == sorted(state)
    for name, tensor in state.items():
        got = reader.read(name)
        want = expected(tensor)
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape == reader.tensors()[name].shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def rewrite(
    src: Path,
    dst: Path,
    *,
    replace: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
    compress: tuple[str, ...] = (),
) -> Path:
    """Copy a zip entry by entry; ``replace``/``drop``/``compress`` name entries past the prefix."""
    replace = replace or {}
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            prefix, _, rest = info.filename.partition("/")
            if rest in drop:
                continue
            data = replace.get(rest, old.read(info))
            method = zipfile.ZIP_DEFLATED if rest in compress else zipfile.ZIP_STORED
            new.writestr(f"{prefix}/{rest}", data, compress_type=method)
    return dst


def hand_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip from (name, method, payload as stored, declared size, crc) records, nothing checked."""
    body, central = bytearray(), bytearray()
    for name, method, payload, size, crc in entries:
        offset, raw_name = len(body), name.encode()
        body += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(payload), size,
            len(raw_name), 0,
        )  # fmt: skip
        body += raw_name + payload
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(payload), size,
            len(raw_name), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += raw_name
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0
    )
    return bytes(body + central + end)


def stored(name: str, payload: bytes) -> tuple[str, int, bytes, int, int]:
    return (name, zipfile.ZIP_STORED, payload, len(payload), zlib.crc32(payload))


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 16 MiB), built in a blink.

    After a full flush deflate forgets its history, so every 16 MiB block of zeros
    compresses to the same bytes and the stream can be repeated instead of recomputed.
    """
    block_size = 1 << 24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(block_size)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size // block_size) + compressor.flush()


class Storage:
    """One storage record in a hand-made data.pkl."""

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class Tensor:
    """Pickles as torch.save pickles a float32 tensor: a ``_rebuild_tensor_v2`` call."""

    def __init__(
        self, storage: Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ):
        self.args = (storage, offset, size, stride)

    def __reduce__(self) -> tuple[object, ...]:
        rebuild = torch._utils._rebuild_tensor_v2
        return (rebuild, (*self.args, False, collections.OrderedDict()))


class StoragePickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def hand_pickle(obj: object, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    StoragePickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


class Evil:
    """A pickle payload that calls ``func(*args)`` when unpickled by an unrestricted loader."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, ...]:
        return (self.func, self.args)


@pytest.fixture
def base_checkpoint(tmp_path: Path) -> Path:
    """A real torch.save file with two storages, to graft hand-made records into."""
    return save(tmp_path, {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(4)}, "base.pt")


# ---------------------------------------------------------------- exact values


def test_every_dtype_reads_exactly(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    floats = torch.randn(3, 5, generator=gen)
    state = {
        "f32": floats,
        "f16": floats.half(),
        "bf16": floats.bfloat16(),
        "f64": floats.double(),
        "i64": torch.arange(-6, 6).reshape(3, 4),
        "i32": torch.arange(-6, 6, dtype=torch.int32),
        "i16": torch.arange(-6, 6, dtype=torch.int16),
        "i8": torch.arange(-6, 6, dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "f8_e4m3": (floats * 50).to(torch.float8_e4m3fn),
        "f8_e5m2": (floats * 1000).to(torch.float8_e5m2),
    }
    with open_file(save(tmp_path, state)) as reader:
        assert reader.format == "pytorch"
        assert_reads_exactly(reader, state)
        dtypes = {name: info.dtype for name, info in reader.tensors().items()}
    assert dtypes == {
        "f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64", "i64": "I64", "i32": "I32",
        "i16": "I16", "i8": "I8", "u8": "U8", "bool": "BOOL", "f8_e4m3": "F8_E4M3",
        "f8_e5m2": "F8_E5M2",
    }  # fmt: skip


def test_ranks_and_empty_tensors(tmp_path: Path) -> None:
    state = {
        "scalar": torch.tensor(2.5),
        "vector": torch.arange(7.0),
        "matrix": torch.arange(15.0).reshape(3, 5),  # hidden != intermediate
        "square": torch.arange(16.0).reshape(4, 4),
        "cube": torch.arange(24.0).reshape(2, 3, 4),
        "empty": torch.zeros(0, 4),
    }
    with open_file(save(tmp_path, state)) as reader:
        assert_reads_exactly(reader, state)
        assert reader.tensors()["scalar"].shape == ()
        assert reader.tensors()["empty"].nbytes == 0


def test_views_offsets_transposes_and_tied_storage(tmp_path: Path) -> None:
    big = torch.arange(60.0).reshape(6, 10)
    state = {
        "big": big,
        "rows": big[2:5],  # storage_offset, contiguous
        "transposed": big.t(),  # non-contiguous, shares big's storage
        "columns": big[:, 3:7],  # offset and a row stride wider than the row
        "tied": big,  # the same tensor twice: tied weights
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 4),  # stride 0
    }
    with open_file(save(tmp_path, state)) as reader:
        assert_reads_exactly(reader, state)
        infos = reader.tensors()
        assert infos["tied"].spans == infos["big"].spans
        assert infos["rows"].spans[0].offset == infos["big"].spans[0].offset + 2 * 10 * 4
        assert infos["rows"].spans[0].length == 3 * 10 * 4
        np.testing.assert_array_equal(reader.read_rows("transposed", 1, 4), big.t()[1:4].numpy())
        np.testing.assert_array_equal(reader.read_rows("columns", 2, 5), big[2:5, 3:7].numpy())


def test_a_slice_saved_alone_keeps_its_offset(tmp_path: Path) -> None:
    # torch.save writes the whole storage; the view's offset must be honoured.
    parent = torch.arange(40.0).reshape(8, 5)
    state = {"tail": parent[5:], "middle_column": parent[:, 2]}
    with open_file(save(tmp_path, state)) as reader:
        assert_reads_exactly(reader, state)


def test_module_state_dict_and_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    state = dict(model.state_dict())  # an OrderedDict with _metadata, pickled with BUILD
    with open_file(save(tmp_path, model.state_dict())) as reader:
        assert_reads_exactly(reader, state)
    params = {
        "weight": torch.nn.Parameter(torch.randn(4, 3)),
        "scale": torch.nn.Parameter(torch.ones(3)),
    }
    with open_file(save(tmp_path, params, "params.pt")) as reader:
        assert_reads_exactly(reader, params)


def test_nested_dicts_are_flattened_with_dots(tmp_path: Path) -> None:
    a, b = torch.arange(6.0).reshape(2, 3), torch.ones(2, dtype=torch.int64)
    checkpoint = {"state_dict": {"a": a, "sub": {"b": b}}, "epoch": 3, "name": "run-1"}
    with open_file(save(tmp_path, checkpoint)) as reader:
        assert_reads_exactly(reader, {"state_dict.a": a, "state_dict.sub.b": b})
        assert reader.metadata["epoch"] == 3
        assert reader.metadata["name"] == "run-1"
        assert reader.metadata["pytorch.archive"] == "model"


def test_a_flat_state_dict_is_not_flattened(tmp_path: Path) -> None:
    w = torch.ones(2, 2)
    with open_file(save(tmp_path, {"w": w, "extra": {"x": torch.zeros(3)}, "step": 7})) as reader:
        assert list(reader.tensors()) == ["w"]
        assert reader.metadata["step"] == 7


def test_read_rows_touches_only_those_rows(tmp_path: Path) -> None:
    weight = torch.arange(70.0).reshape(7, 10)
    data = save(tmp_path, {"weight": weight}).read_bytes()
    source = RecordingSource(data)
    with PyTorchReader(source) as reader:
        span = reader.tensors()["weight"].spans[0]
        source.reads.clear()
        rows = reader.read_rows("weight", 2, 5)
        assert source.reads == [(span.offset + 2 * 40, 3 * 40)]
        np.testing.assert_array_equal(rows, weight[2:5].numpy())
        source.reads.clear()
        assert reader.read_rows("weight", 3, 3).shape == (0, 10)
    assert source.closed


def test_deflated_data_pkl_is_read(tmp_path: Path, base_checkpoint: Path) -> None:
    path = rewrite(base_checkpoint, tmp_path / "deflated.pt", compress=("data.pkl",))
    with open_file(path) as reader:
        np.testing.assert_array_equal(
            reader.read("w"), np.arange(12.0, dtype=np.float32).reshape(3, 4)
        )


def test_legacy_format_is_refused_with_a_conversion_hint(tmp_path: Path) -> None:
    path = tmp_path / "legacy.bin"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsupportedFormatError, match=r"legacy \(pre-1\.6\) PyTorch pickle format"):
        open_file(path)
    with pytest.raises(UnsupportedFormatError, match=r"safetensors\.torch\.save_file"):
        open_file(path)


# ---------------------------------------------------------------- folders


def test_folder_with_index_single_file_and_sharding(tmp_path: Path) -> None:
    first, second = torch.arange(6.0).reshape(2, 3), torch.arange(4, dtype=torch.int32)
    torch.save({"layer.0.weight": first}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"layer.1.weight": second}, tmp_path / "pytorch_model-00002-of-00002.bin")
    index = {
        "weight_map": {
            "layer.0.weight": "pytorch_model-00001-of-00002.bin",
            "layer.1.weight": "pytorch_model-00002-of-00002.bin",
        }
    }
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with closing(open_pytorch_folder(LocalDirectory(tmp_path))) as reader:
        assert reader.format == "pytorch"
        np.testing.assert_array_equal(reader.read("layer.0.weight"), first.numpy())
        np.testing.assert_array_equal(reader.read_rows("layer.1.weight", 1, 3), second[1:3].numpy())


def test_folder_single_files(tmp_path: Path) -> None:
    only = tmp_path / "only"
    only.mkdir()
    torch.save({"w": torch.ones(3)}, only / "weights.pth")
    torch.save({"not": "weights"}, only / "training_args.bin")
    with closing(open_pytorch_folder(LocalDirectory(only))) as reader:
        assert list(reader.tensors()) == ["w"]
    torch.save({"v": torch.ones(2)}, only / "pytorch_model.bin")
    with closing(open_pytorch_folder(LocalDirectory(only))) as reader:
        assert list(reader.tensors()) == ["v"]


def test_folder_without_one_weights_file(tmp_path: Path) -> None:
    with pytest.raises(
        InputNotFoundError, match=r"not one \*\.bin/\*\.pt/\*\.pth file \(found none\)"
    ):
        open_pytorch_folder(LocalDirectory(tmp_path))
    torch.save({"a": torch.ones(1)}, tmp_path / "a.pt")
    torch.save({"b": torch.ones(1)}, tmp_path / "b.pt")
    with pytest.raises(InputNotFoundError, match=r"found a\.pt, b\.pt"):
        open_pytorch_folder(LocalDirectory(tmp_path))


# ---------------------------------------------------------------- hostile pickles


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_data_pkl_is_refused_and_never_runs(
    tmp_path: Path, base_checkpoint: Path, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": Evil(os.system, f"touch {marker}")}, protocol=protocol)
    path = rewrite(base_checkpoint, tmp_path / "evil.pt", replace={"data.pkl": payload})
    with pytest.raises(
        UnsafeCheckpointError, match=r"refuses to load global 'posix\.system'"
    ) as info:
        open_file(path)
    assert "the file may be malicious" in str(info.value)
    assert "safetensors" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda marker: Evil(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (lambda marker: Evil(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        (lambda marker: Evil(torch.load, str(marker)), "torch.serialization.load"),
        (lambda marker: Evil(getattr, Evil(__import__, "os"), "system"), "builtins.getattr"),
    ],
)
def test_dangerous_globals_are_refused(
    tmp_path: Path, base_checkpoint: Path, make: Callable[[Path], Evil], name: str
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": make(marker)}, protocol=2, fix_imports=False)
    path = rewrite(base_checkpoint, tmp_path / "evil.pt", replace={"data.pkl": payload})
    with pytest.raises(UnsafeCheckpointError, match=f"refuses to load global '{name}'"):
        open_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2])
def test_bare_malicious_pickle_is_refused_without_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(Evil(os.system, f"touch {marker}"), protocol=protocol))
    message = "legacy" if protocol >= 2 else "not a PyTorch zip checkpoint"
    with pytest.raises(UnsupportedFormatError, match=message):
        open_file(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x02\x82\x01.", "opcode that torch.save never writes"),  # EXT1: the copyreg registry
        (
            b"\x80\x05\x96" + struct.pack("<Q", 1 << 50) + b".",
            "opcode that torch.save never writes",
        ),
        (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 50) + b".", "not a valid pickle"),  # 1 PiB bytes
        (b"\x80\x02}q\x00.", None),  # an empty dict is fine
        (b"\x80\x02]q\x00.", "holds a list at the top level"),
        (b"\x80\x02X\x03\x00\x00\x00abcQ.", "persistent id that is not a storage record"),
    ],
)
def test_hostile_opcodes(
    tmp_path: Path, base_checkpoint: Path, payload: bytes, message: str | None
) -> None:
    path = rewrite(base_checkpoint, tmp_path / "odd.pt", replace={"data.pkl": payload})
    if message is None:
        with open_file(path) as reader:
            assert len(reader) == 0
        return
    with pytest.raises((CorruptCheckpointError, UnsupportedFormatError), match=message):
        open_file(path)


def test_build_on_a_tensor_is_refused(tmp_path: Path, base_checkpoint: Path) -> None:
    good = hand_pickle({"w": Tensor(Storage("0", 12), 0, (3, 4), (4, 1))})
    # Append BUILD of {"shape": "x"} onto the tensor: SETITEM/STOP follow, so splice before them.
    at = good.rindex(b"s.")  # SETITEM, STOP
    hostile = good[:at] + b"}X\x05\x00\x00\x00shapeX\x01\x00\x00\x00xsb" + good[at:]
    path = rewrite(base_checkpoint, tmp_path / "build.pt", replace={"data.pkl": hostile})
    with pytest.raises(
        CorruptCheckpointError, match="sets attributes on an object that takes none"
    ):
        open_file(path)


def test_tensor_count_is_capped(tmp_path: Path) -> None:
    base = torch.arange(50.0)
    views = {f"v{i}": base[i : i + 1] for i in range(30)}  # 30 tensors, one storage
    with pytest.raises(LimitExceededError, match="builds more than 20 tensors"):
        open_file(save(tmp_path, views), max_entries=20)


@pytest.mark.parametrize(
    ("leaf", "message"),
    [(torch.ones(1), "names more than 65536 tensors"), (1, "nested dicts hold more than 262144")],
)
def test_shared_nested_dicts_cannot_blow_up(tmp_path: Path, leaf: object, message: str) -> None:
    level: dict[str, Any] = {"w": leaf}
    for _ in range(30):
        level = {"a": level, "b": level}  # 2**30 paths through a tiny pickle
    with pytest.raises(LimitExceededError, match=message):
        open_file(save(tmp_path, {"root": level}))


def test_cyclic_dicts_are_refused(tmp_path: Path) -> None:
    cycle: dict[str, Any] = {}
    cycle["again"] = cycle
    with pytest.raises(LimitExceededError, match="deeper than 32 levels"):
        open_file(save(tmp_path, {"root": cycle}))


# ---------------------------------------------------------------- hostile or broken zips


def test_zip_bomb_is_refused_from_the_directory(tmp_path: Path) -> None:
    gigabyte = 1 << 30
    bomb = deflated_zeros(gigabyte)  # ~1 MB that inflates to 1 GB
    # The CRC is left at 0: the entry must be refused before anything is inflated.
    data = hand_zip(
        [
            stored("archive/data.pkl", pickle.dumps({}, protocol=2)),
            ("archive/extra", zipfile.ZIP_DEFLATED, bomb, gigabyte, 0),
        ]
    )
    path = tmp_path / "bomb.pt"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceededError, match=r"declares 1073741824 bytes .* a zip bomb"):
            open_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_highly_compressed_data_pkl_is_refused(tmp_path: Path) -> None:
    size = 1 << 25  # 32 MiB of zeros: under the pickle limit, but at ~1000:1
    path = tmp_path / "bomb.pt"
    path.write_bytes(
        hand_zip([("archive/data.pkl", zipfile.ZIP_DEFLATED, deflated_zeros(size), size, 0)])
    )
    with pytest.raises(LimitExceededError, match="a zip bomb"):
        open_file(path)


def test_limits_on_entries_and_pickle_size(base_checkpoint: Path) -> None:
    with pytest.raises(LimitExceededError, match=r"zip holds \d+ entries, over the limit of 3"):
        open_file(base_checkpoint, max_entries=3)
    with pytest.raises(LimitExceededError, match=r"over the 100-byte limit for data\.pkl"):
        open_file(base_checkpoint, max_pickle_bytes=100)


def test_oversized_central_directory_is_refused_before_parsing(tmp_path: Path) -> None:
    long_names = [stored(f"archive/{'x' * 2000}{i}", b"") for i in range(3)]
    path = tmp_path / "wide.pt"
    path.write_bytes(hand_zip([stored("archive/data.pkl", pickle.dumps({})), *long_names]))
    with pytest.raises(
        LimitExceededError, match=r"central directory is \d+ bytes, over the limit of 5120"
    ):
        open_file(path, max_entries=20)


@pytest.mark.parametrize("name", ["archive/../evil", "/archive/data/9", "archive/data/..\\x"])
def test_escaping_entry_names_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "names.pt"
    path.write_bytes(hand_zip([stored("archive/data.pkl", pickle.dumps({})), stored(name, b"x")]))
    with pytest.raises(CorruptCheckpointError, match="absolute or climbs out of the archive"):
        open_file(path)


def test_compressed_storage_is_refused(tmp_path: Path, base_checkpoint: Path) -> None:
    path = rewrite(base_checkpoint, tmp_path / "squashed.pt", compress=("data/0",))
    with pytest.raises(UnsupportedFormatError, match=r"tensor storage '.*/data/0' is compressed"):
        open_file(path)


def test_missing_records(tmp_path: Path, base_checkpoint: Path) -> None:
    no_pickle = rewrite(base_checkpoint, tmp_path / "a.pt", drop=("data.pkl",))
    with pytest.raises(CorruptCheckpointError, match=r"zip holds no <archive>/data\.pkl"):
        open_file(no_pickle)
    no_storage = rewrite(base_checkpoint, tmp_path / "b.pt", drop=("data/0",))
    with pytest.raises(CorruptCheckpointError, match=r"names storage '0' but the zip has no entry"):
        open_file(no_storage)


def test_tensor_beyond_its_storage(tmp_path: Path, base_checkpoint: Path) -> None:
    # Storage "0" holds 12 float32 values; a 4x4 view needs 16.
    hostile = hand_pickle({"w": Tensor(Storage("0", 12), 0, (4, 4), (4, 1))})
    path = rewrite(base_checkpoint, tmp_path / "long.pt", replace={"data.pkl": hostile})
    with pytest.raises(
        CorruptCheckpointError, match=r"tensor 'w' reaches byte 64 of storage '0', which holds 48"
    ):
        open_file(path)
    hostile = hand_pickle({"w": Tensor(Storage("0", 100), 0, (2, 2), (2, 1))})
    path = rewrite(base_checkpoint, tmp_path / "declared.pt", replace={"data.pkl": hostile})
    with pytest.raises(
        CorruptCheckpointError, match=r"storage '0' is declared as 400 bytes; its entry holds 48"
    ):
        open_file(path)


@pytest.mark.parametrize(
    ("size", "stride"),
    [((1 << 20, 1 << 20), (0, 0)), ((0, 1 << 61), (1, 1)), ((3, 1 << 40), (4, 0))],
)
def test_views_far_larger_than_their_bytes_are_refused(
    tmp_path: Path, base_checkpoint: Path, size: tuple[int, ...], stride: tuple[int, ...]
) -> None:
    hostile = hand_pickle({"w": Tensor(Storage("0", 12), 0, size, stride)})
    path = rewrite(base_checkpoint, tmp_path / "wide.pt", replace={"data.pkl": hostile})
    with pytest.raises(
        LimitExceededError, match=r"tensor 'w' is a \d+-byte view of \d+ stored bytes"
    ):
        open_file(path)


def test_encrypted_entries_are_refused(tmp_path: Path) -> None:
    data = bytearray(hand_zip([stored("archive/data.pkl", pickle.dumps({}))]))
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # the central record's flag bits: encrypted
    path = tmp_path / "locked.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedFormatError, match=r"zip entry 'archive/data\.pkl' is encrypted"):
        open_file(path)


def test_hand_pickled_views_match_torch(tmp_path: Path, base_checkpoint: Path) -> None:
    # The hand pickler must agree with torch on a valid view, or the refusals above prove nothing.
    good = hand_pickle({"w": Tensor(Storage("0", 12), 1, (2, 3), (1, 4))}, protocol=4)
    path = rewrite(base_checkpoint, tmp_path / "good.pt", replace={"data.pkl": good})
    with open_file(path) as reader:
        want = torch.arange(12.0).as_strided((2, 3), (1, 4), 1).numpy()
        np.testing.assert_array_equal(reader.read("w"), want)


def test_truncated_and_garbled_files(tmp_path: Path, base_checkpoint: Path) -> None:
    data = base_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="not a readable zip archive"):
        open_file(truncated)
    garbled = tmp_path / "garbled.pt"
    garbled.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(CorruptCheckpointError, match="not a readable zip archive"):
        open_file(garbled)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="file is empty"):
        open_file(empty)


def test_big_endian_checkpoints_are_refused(tmp_path: Path, base_checkpoint: Path) -> None:
    path = rewrite(base_checkpoint, tmp_path / "big.pt", replace={"byteorder": b"big"})
    with pytest.raises(UnsupportedFormatError, match="'big' byte order"):
        open_file(path)


@functools.cache
def _fuzz_base() -> bytes:
    buffer = io.BytesIO()
    big = torch.arange(12.0).reshape(3, 4)
    torch.save({"w": big, "t": big.t(), "b": torch.ones(3, dtype=torch.bfloat16)}, buffer)
    return buffer.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 1 << 16),
)
def test_damaged_bytes_raise_only_forebear_errors(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_fuzz_base())
    for position, value in edits:
        data[position % len(data)] = value
    if cut % 3 == 0:
        data = data[: cut % len(data)]
    try:
        with PyTorchReader(RecordingSource(bytes(data))) as reader:
            for name in reader.tensors():
                reader.read(name)
    except ForebearError:
        pass


def _with_pickle(checkpoint: bytes, payload: bytes) -> bytes:
    """The checkpoint with a new data.pkl (and CRC), so damage reaches the unpickler."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(checkpoint)) as old, zipfile.ZipFile(out, "w") as new:
        for info in old.infolist():
            data = payload if info.filename.endswith("/data.pkl") else old.read(info)
            new.writestr(info.filename, data)
    return out.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_data_pkl_raises_only_forebear_errors(data: st.DataObject) -> None:
    checkpoint = _fuzz_base()
    with zipfile.ZipFile(io.BytesIO(checkpoint)) as archive:
        original = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    payload = bytearray(original)
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 255))))
    for position, value in edits[:6]:
        payload[position] = value
    payload = payload[: data.draw(st.integers(1, len(payload)))]
    try:
        with PyTorchReader(RecordingSource(_with_pickle(checkpoint, bytes(payload)))) as reader:
            for name in reader.tensors():
                reader.read(name)
    except ForebearError:
        pass


def test_zip64_end_records_are_understood(tmp_path: Path, base_checkpoint: Path) -> None:
    from forebear.formats.pytorch import _directory_extent

    # torch.save writes zip64 end records; saturate the plain record so only zip64 tells the truth.
    data = bytearray(base_checkpoint.read_bytes())
    assert data[-22:-18] == b"PK\x05\x06" and b"PK\x06\x06" in data
    count, directory_bytes = struct.unpack_from("<HL", data, len(data) - 12)
    struct.pack_into("<HHLL", data, len(data) - 14, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    assert _directory_extent(RecordingSource(bytes(data))) == (count, directory_bytes)
    path = tmp_path / "zip64.pt"
    path.write_bytes(bytes(data))
    with open_file(path) as reader:
        np.testing.assert_array_equal(reader.read("b"), np.ones(4, dtype=np.float32))
    with pytest.raises(
        LimitExceededError, match=rf"zip holds {count} entries, over the limit of 3"
    ):
        open_file(path, max_entries=3)
