"""Remote models: hub repositories and URLs read by ranges from a loopback hub server.

Every test talks to ``forebear.bench.hub_server`` on 127.0.0.1; conftest's
HF_HUB_OFFLINE=1 is lifted per test by patching huggingface_hub's constant (one
test keeps it on). Each test gets its own range cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from huggingface_hub import constants
from safetensors.numpy import save

from forebear.bench.hub_server import Fault, HubServer
from forebear.cli import main
from forebear.errors import CorruptCheckpointError, ForebearError, InputNotFoundError, RemoteError
from forebear.fingerprint import fingerprint
from forebear.model import Model, open_model
from forebear.sources.http import RetryPolicy
from forebear.sources.ranges import merge_ranges
from forebear.sources.remote import open_url

FAST = RetryPolicy(attempts=3, base_wait=0.01, max_wait=0.05, timeout=10)
TOKEN = "hf_test_token"
BIG = {"hidden": 256, "intermediate": 384, "layers": 2, "vocab": 4096}


def _big_llama(seed: int = 0) -> dict[str, bytes]:
    """A llama-shaped float16 checkpoint of about 6 MB (hidden ≠ intermediate), no tokenizer."""
    rng = np.random.default_rng(seed)
    hidden, inter, vocab = BIG["hidden"], BIG["intermediate"], BIG["vocab"]
    kv = hidden // 2  # 4 heads of 64, 2 of them for keys and values

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float16)

    state = {
        "model.embed_tokens.weight": matrix(vocab, hidden),
        "lm_head.weight": matrix(vocab, hidden),
        "model.norm.weight": np.ones(hidden, np.float16),
    }
    for i in range(BIG["layers"]):
        prefix = f"model.layers.{i}"
        shapes = {
            "self_attn.q_proj": (hidden, hidden),
            "self_attn.k_proj": (kv, hidden),
            "self_attn.v_proj": (kv, hidden),
            "self_attn.o_proj": (hidden, hidden),
            "mlp.gate_proj": (inter, hidden),
            "mlp.up_proj": (inter, hidden),
            "mlp.down_proj": (hidden, inter),
        }
        state |= {f"{prefix}.{name}.weight": matrix(*shape) for name, shape in shapes.items()}
        for norm in ("input_layernorm", "post_attention_layernorm"):
            state[f"{prefix}.{norm}.weight"] = (1 + rng.standard_normal(hidden) * 0.1).astype(
                np.float16
            )
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": BIG["layers"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
    }
    return {"config.json": json.dumps(config).encode(), "model.safetensors": save(state)}


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from forebear.demo import build_demo_models

    models = {path.name: path for path in build_demo_models(tmp_path_factory.mktemp("demo"))}
    big = tmp_path_factory.mktemp("big")
    for name, data in _big_llama().items():
        (big / name).write_bytes(data)
    return models | {"big": big}


@pytest.fixture(scope="module")
def server(local: dict[str, Path]) -> Iterator[HubServer]:
    repos = {
        "org/llama": _folder_files(local["llama-safetensors"]),
        "org/sharded": _folder_files(local["llama-sharded"]),
        "org/pytorch": _folder_files(local["llama-pytorch"]),
        "org/big": _folder_files(local["big"]),
        "org/private": _folder_files(local["llama-safetensors"]),
    }
    static = {f"files/llama/{k}": v for k, v in repos["org/llama"].items()}
    static["files/llama-Q8_0.gguf"] = local["llama-Q8_0.gguf"].read_bytes()
    with HubServer(repos, static=static, tokens={"org/private": TOKEN}) as hub:
        yield hub


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Online for this test, a fresh range cache, and no token but the ones tests give."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.setenv("FOREBEAR_RANGE_CACHE", str(tmp_path / "ranges"))
    return tmp_path / "ranges"


def _same_model(remote: Model, local: Model) -> None:
    assert remote.reader.format == local.reader.format
    assert remote.config == local.config
    assert set(remote.reader.tensors()) == set(local.reader.tensors())
    for name in local.reader.tensors():
        np.testing.assert_array_equal(remote.reader.read(name), local.reader.read(name))
    assert [(f.name, f.size) for f in remote.weight_files] == [
        (f.name, f.size) for f in local.weight_files
    ]
    mine, theirs = remote.vocabulary, local.vocabulary
    assert (mine is None) == (theirs is None)
    assert mine is None or theirs is None or mine.normalized == theirs.normalized


@pytest.mark.parametrize(
    ("ref", "folder"),
    [
        ("org/llama", "llama-safetensors"),
        ("org/llama@main", "llama-safetensors"),
        ("org/sharded", "llama-sharded"),
        ("org/pytorch", "llama-pytorch"),
        ("url:files/llama/", "llama-safetensors"),
        ("url:files/llama/model.safetensors", "llama-safetensors"),
        ("url:files/llama-Q8_0.gguf", "llama-Q8_0.gguf"),
    ],
)
def test_remote_models_read_the_same_tensors_as_local(
    server: HubServer, local: dict[str, Path], ref: str, folder: str
) -> None:
    given = server.url(ref[4:]) if ref.startswith("url:") else ref
    with open_model(given, endpoint=server.endpoint) as remote, open_model(local[folder]) as mine:
        _same_model(remote, mine)
        if not ref.startswith("url:"):
            assert remote.revision is not None and len(remote.revision) == 40
            assert remote.name == f"{ref.split('@')[0]}@{remote.revision[:12]}"
        traffic = remote.traffic()
        assert traffic is not None and traffic.requests > 0 and traffic.bytes_fetched > 0
        assert mine.traffic() is None and mine.revision is None


def test_a_commit_sha_pins_the_revision(server: HubServer) -> None:
    with open_model("org/llama", endpoint=server.endpoint) as latest:
        sha = latest.revision
    assert sha is not None
    with open_model(f"org/llama@{sha}", endpoint=server.endpoint) as pinned:
        assert pinned.revision == sha
    with open_model("org/llama", revision=sha, endpoint=server.endpoint) as pinned:
        assert pinned.revision == sha


def _fingerprint(model: Model, content: int | None = None) -> Any:
    return fingerprint(model, dims=16, units=16, content_units=content, basis_tokens=256,
                       sketch_tokens=64, source="x")  # fmt: skip


def test_a_remote_fingerprint_equals_the_local_one_and_fetches_a_fraction(
    server: HubServer, local: dict[str, Path], online: Path
) -> None:
    with open_model(local["big"]) as model:
        assert _fingerprint(model).meta["settings"]["content_units"] > 0  # local default
        expected = _fingerprint(model, content=0)  # the remote default: no content sample
    size = (local["big"] / "model.safetensors").stat().st_size
    server.reset_stats()
    with open_model("org/big", endpoint=server.endpoint) as model:
        found = _fingerprint(model)
        traffic = model.traffic()
    assert traffic is not None and traffic.bytes_cached == 0
    assert 0 < traffic.bytes_fetched < size / 5, (traffic, size)
    assert server.stats().bytes_served >= traffic.bytes_fetched  # and the listing's JSON
    np.testing.assert_array_equal(found.embedding, expected.embedding)
    assert found.tokens == expected.tokens
    for mine, theirs in zip(found.layers, expected.layers, strict=True):
        assert mine is not None and theirs is not None
        np.testing.assert_array_equal(mine.units, theirs.units)
        np.testing.assert_array_equal(mine.up, theirs.up)
        np.testing.assert_array_equal(mine.gate, theirs.gate)
    assert found.meta["revision"] == model.revision and expected.meta["revision"] is None
    assert {**found.meta, "revision": None} == expected.meta

    server.reset_stats()
    with open_model("org/big", endpoint=server.endpoint) as again:
        rerun = _fingerprint(again)
        cached = again.traffic()
    assert cached is not None and cached.bytes_fetched == 0
    assert cached.bytes_cached > 0
    assert server.stats().by_kind == {"api": 1}  # the listing; no byte of a file
    np.testing.assert_array_equal(rerun.embedding, expected.embedding)


def test_a_remote_content_sample_is_the_local_one(server: HubServer, local: dict[str, Path],
                                                  online: Path) -> None:  # fmt: skip
    with open_model(local["big"]) as model:
        expected = _fingerprint(model, content=8)
    with open_model("org/big", endpoint=server.endpoint) as model:
        found = _fingerprint(model, content=8)
    for mine, theirs in zip(found.layers, expected.layers, strict=True):
        assert mine is not None and theirs is not None
        assert mine.content is not None and theirs.content is not None
        for piece in ("units", "gate", "up", "down"):
            np.testing.assert_array_equal(getattr(mine.content, piece),
                                          getattr(theirs.content, piece))  # fmt: skip


def test_prefetch_merges_close_ranges_and_serves_reads_from_the_store(
    server: HubServer, local: dict[str, Path]
) -> None:
    raw = (local["llama-safetensors"] / "model.safetensors").read_bytes()
    location, relpath = open_url(server.url("files/llama/model.safetensors"), retry=FAST)
    assert relpath is not None
    source = location.open(relpath)
    base = 1 << 17  # past what the read-ahead of a first read would bring
    server.reset_stats()
    source.prefetch([(base, 100), (base + 1000, 100), (base + 3000, 50), (base + 200_000, 10)])
    assert server.stats().by_kind.get("range") == 2  # the first three merged, 4 KiB gap
    server.reset_stats()
    data = source.read(base + 1000, 100) + source.read(base + 200_000, 10)
    assert server.stats().requests == 0
    assert data == raw[base + 1000 : base + 1100] + raw[base + 200_000 : base + 200_010]
    location.close()


def test_merge_ranges_wastes_at_most_the_gap() -> None:
    assert merge_ranges([(10, 5), (0, 5), (20, 5), (100, 1), (5, 0)], gap=5) == [
        (0, 25),
        (100, 1),
    ]
    assert merge_ranges([(0, 10), (2, 3)], gap=0) == [(0, 10)]
    assert merge_ranges([(0, 10), (11, 1)], gap=0) == [(0, 10), (11, 1)]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=503, first=2),
        Fault("status", status=429, retry_after=0.01, first=2),
        Fault("drop", first=2),
        Fault("short", first=2),
        Fault("truncate", first=2),
        Fault("status", status=500, target="api", first=1),
        Fault("drop", probability=0.3),
    ],
    ids=["503", "429", "drop", "short", "truncate", "api-500", "drop-30%"],
)
def test_faults_are_retried_and_give_the_same_tensors(local: dict[str, Path], fault: Fault) -> None:
    files = _folder_files(local["llama-sharded"])
    with HubServer({"org/m": files}, faults=[fault], seed=3) as hub:
        retry = RetryPolicy(attempts=8, base_wait=0.01, max_wait=0.02)
        with open_model("org/m", endpoint=hub.endpoint, retry=retry) as remote:
            with open_model(local["llama-sharded"]) as mine:
                _same_model(remote, mine)
            traffic = remote.traffic()
        assert hub.stats().faults >= 1 and traffic is not None and traffic.retries >= 1


@pytest.mark.parametrize("kind", ["status", "drop", "short"])
def test_a_persistent_fault_is_one_error_line(local: dict[str, Path], kind: Any) -> None:
    files = _folder_files(local["llama-safetensors"])
    faults = [Fault(kind, probability=1.0)]
    with HubServer({"org/m": files}, faults=faults) as hub, pytest.raises(RemoteError) as caught:
        open_model("org/m", endpoint=hub.endpoint, retry=FAST)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("org/m@")
    assert "failed 3 times" in message and "try again later" in message


@pytest.mark.parametrize("where", ["hub", "url"])
def test_a_file_that_changes_on_the_server_is_refused(local: dict[str, Path], where: str) -> None:
    files = _big_llama(seed=0)
    changed = _big_llama(seed=1)["model.safetensors"]
    static = {"m/model.safetensors": files["model.safetensors"]}
    with HubServer({"org/m": files}, static=static) as hub:
        ref = "org/m" if where == "hub" else hub.url("m/model.safetensors")
        with open_model(ref, endpoint=hub.endpoint, retry=FAST) as model:
            if where == "hub":
                hub.replace("model.safetensors", changed, "org/m")
            else:
                hub.replace("m/model.safetensors", changed)
            with pytest.raises(RemoteError, match="the file changed on the server"):
                model.reader.read("lm_head.weight")


def test_auth_needs_the_right_token(server: HubServer, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RemoteError) as caught:
        open_model("org/private", endpoint=server.endpoint)
    message = str(caught.value)
    assert message.startswith("org/private: ") and "no token was sent" in message
    assert message.endswith("pass --token or set HF_TOKEN (a token with read access to it)")
    with pytest.raises(RemoteError, match="the token was refused"):
        open_model("org/private", endpoint=server.endpoint, token="hf_wrong")
    with open_model("org/private", endpoint=server.endpoint, token=TOKEN) as model:
        assert model.resolved.family == "llama"
        assert model.reader.read("lm_head.weight").shape == (300, 64)


def test_hf_token_and_the_cli_token_are_used(
    server: HubServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    assert main(["inspect", "org/private", "--token", TOKEN, "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "llama"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with open_model("org/private") as model:
        assert model.revision is not None


def test_missing_repo_revision_and_file_are_clear_errors(server: HubServer) -> None:
    with pytest.raises(InputNotFoundError, match=r"^org/nope: no such model repository on http"):
        open_model("org/nope", endpoint=server.endpoint)
    with pytest.raises(InputNotFoundError, match=r"^org/llama@v9: no revision 'v9' in this repo"):
        open_model("org/llama@v9", endpoint=server.endpoint)
    with pytest.raises(InputNotFoundError, match=r"is not on the server|missing"):
        open_model(server.url("files/llama/nothing.safetensors"), retry=FAST)
    with pytest.raises(InputNotFoundError, match="no such file or folder"):
        open_model("./not/a/model")


def test_a_shard_the_index_names_but_the_repo_lacks(local: dict[str, Path]) -> None:
    files = _folder_files(local["llama-sharded"])
    del files["model-00002-of-00002.safetensors"]
    with HubServer({"org/m": files}) as hub, pytest.raises(InputNotFoundError) as caught:
        open_model("org/m", endpoint=hub.endpoint)
    assert "model-00002-of-00002.safetensors is missing from org/m@" in str(caught.value)


def test_offline_mode_refuses_remote_refs_but_not_local_paths(
    server: HubServer, local: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for ref in ("org/llama", server.url("files/llama/")):
        with pytest.raises(RemoteError, match=r"offline mode is on \(HF_HUB_OFFLINE\)") as caught:
            open_model(ref, endpoint=server.endpoint)
        assert "unset HF_HUB_OFFLINE" in str(caught.value)
    with open_model(local["llama-safetensors"]) as model:
        assert model.resolved.family == "llama"


def test_a_corrupt_cache_block_is_fetched_again(server: HubServer, online: Path) -> None:
    with open_model("org/big", endpoint=server.endpoint) as model:
        first = model.reader.read("lm_head.weight")
    blocks = sorted(online.rglob("*.blk"), key=lambda p: p.stat().st_size)
    blocks[-1].write_bytes(blocks[-1].read_bytes()[:-1] + b"\x00")  # same size, one byte off
    with open_model("org/big", endpoint=server.endpoint) as model:
        again = model.reader.read("lm_head.weight")
        traffic = model.traffic()
    np.testing.assert_array_equal(first, again)
    assert traffic is not None and traffic.bytes_fetched > 0


def test_fp8_rows_prefetch_their_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.integers(0, 0x7E, size=(1024, 256), dtype=np.uint8)  # no NaN codes
    scales = rng.random((8, 2), dtype=np.float32)
    header = {
        "x.weight": {"dtype": "F8_E4M3", "shape": [1024, 256], "data_offsets": [0, weight.nbytes]},
        "x.weight_scale_inv": {
            "dtype": "F32",
            "shape": [8, 2],
            "data_offsets": [weight.nbytes, weight.nbytes + 64],
        },
    }
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    data = len(encoded).to_bytes(8, "little") + encoded + weight.tobytes() + scales.tobytes()
    (tmp_path / "fp8.safetensors").write_bytes(data)
    with HubServer(static={"fp8.safetensors": data}) as hub:
        with open_model(hub.url("fp8.safetensors"), retry=FAST) as model:
            reader: Any = model.reader
            hub.reset_stats()
            reader.prefetch_rows("x.weight", [(512, 520), (900, 910)])
            assert hub.stats().requests >= 1
            hub.reset_stats()
            rows = [reader.read_rows("x.weight", 512, 520), reader.read_rows("x.weight", 900, 910)]
            assert hub.stats().requests == 0  # weight rows and their scale rows were fetched
        with open_model(tmp_path / "fp8.safetensors") as mine:
            np.testing.assert_array_equal(rows[0], mine.reader.read_rows("x.weight", 512, 520))
            np.testing.assert_array_equal(rows[1], mine.reader.read_rows("x.weight", 900, 910))


def test_the_cli_reads_hub_ids_from_hf_endpoint(
    server: HubServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    assert main(["inspect", "org/llama", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["family"], data["vocabulary"]["size"]) == ("llama", 300)
    assert data["traffic"]["bytes_fetched"] > 0 and len(data["revision"]) == 40
    assert main(["inspect", "org/llama"]) == 0
    assert "fetched" in capsys.readouterr().out
    out = tmp_path / "big.fbf"
    argv = ["fingerprint", "org/big", "-o", str(out), "--dims", "8", "--units", "8", "-f", "json"]
    assert main(argv) == 0
    written = json.loads(capsys.readouterr().out)
    assert 0 < written["bytes_fetched"] < 6_000_000 and len(written["revision"]) == 40
    assert main(["inspect", "org/nope"]) == InputNotFoundError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such model repository" in err and "Traceback" not in err
    assert main(["inspect", "org/private"]) == RemoteError.exit_code
    assert "pass --token or set HF_TOKEN" in capsys.readouterr().err


def test_the_server_streams_virtual_files_by_range() -> None:
    class Huge:
        size = 700 * 1024**3

        def read(self, offset: int, length: int) -> bytes:
            assert length <= 8 * 1024 * 1024, "the server must stream in chunks"
            return bytes((offset + i) % 251 for i in range(length))

    with HubServer({"org/huge": {"model.safetensors": Huge()}}) as hub:
        location, relpath = open_url(hub.url("org/huge/resolve/main/model.safetensors"), retry=FAST)
        assert relpath is not None
        source = location.open(relpath)
        assert source.size == Huge.size
        offset = 600 * 1024**3 + 7
        assert source.read(offset, 1000) == Huge().read(offset, 1000)
        with pytest.raises(CorruptCheckpointError, match="outside the file"):
            source.read(Huge.size - 10, 20)
        location.close()


def test_listing_is_what_huggingface_hub_reads(server: HubServer) -> None:
    from huggingface_hub import HfApi

    files = {
        "README.md": b"---\nlicense: mit\nbase_model: org/llama\n---\n# card\n",
        "a.json": b"{}",
    }
    sha = server.add_repo("org/card", files, refs=("main", "v1"))
    info = HfApi(endpoint=server.endpoint).model_info(
        "org/card", revision="v1", files_metadata=True
    )
    assert info.sha == sha and info.card_data is not None
    assert info.card_data.to_dict() == {"license": "mit", "base_model": "org/llama"}
    assert {s.rfilename: s.size for s in info.siblings or ()} == {
        "README.md": len(files["README.md"]),
        "a.json": 2,
    }


def test_errors_name_the_file_and_raise_for_bad_refs(server: HubServer) -> None:
    with pytest.raises(ForebearError, match="names revision 'a' but revision='b'"):
        open_model("org/llama@a", revision="b", endpoint=server.endpoint)
