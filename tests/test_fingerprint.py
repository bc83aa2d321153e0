"""Fingerprints: built from the mini zoo, stored, reloaded, compared without the weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner

from forebear.cli import app
from forebear.errors import ForebearError
from forebear.fingerprint import (
    Fingerprint,
    compare_fingerprints,
    fingerprint,
    load_fingerprint,
    save_fingerprint,
)
from forebear.model import open_model
from forebear.zoo.build import ZooBuild
from forebear.zoo.folders import load_folder, save_folder
from forebear.zoo.profiles import load_transformations

DIMS = 16  # a quarter of the zoo's width: the sketch is a compression, not a copy
# Every unit of the mini zoo's two 128-wide MLPs: Chatterjee's bound needs about a hundred
# units per layer to pass 1e-6 over two layers (a 7B model has 32 layers of 64).
UNITS = 128


@pytest.fixture(scope="module")
def zoo(mini: ZooBuild) -> Callable[[str], Path]:
    return mini.manifest.model_path


def _fingerprint(path: Path, tmp: Path) -> Fingerprint:
    with open_model(path) as model:
        found = fingerprint(model, dims=DIMS, units=UNITS)
    return load_fingerprint(save_fingerprint(found, tmp / f"{path.name}.fbf"))


@pytest.mark.parametrize("b", ["llama-a-ft", "llama-a-lora", "llama-a-ft-ft", "llama-a-cpt"])
def test_derived_models_share_their_parents_fingerprint(
    zoo: Callable[[str], Path], tmp_path: Path, b: str
) -> None:
    evidence = compare_fingerprints(
        _fingerprint(zoo("llama-a"), tmp_path), _fingerprint(zoo(b), tmp_path)
    )
    assert evidence.log10_p < -6, evidence
    assert all(p is not None for p in evidence.layers)


@pytest.mark.parametrize(
    ("a", "b"),
    [("llama-a", "llama-b"), ("llama-a", "llama-c"), ("llama-a", "qwen2-a"),
     ("llama-a", "llama-a-distill")],
)  # fmt: skip
def test_independent_models_do_not(
    zoo: Callable[[str], Path], tmp_path: Path, a: str, b: str
) -> None:
    evidence = compare_fingerprints(_fingerprint(zoo(a), tmp_path), _fingerprint(zoo(b), tmp_path))
    assert evidence.log10_p > -2, evidence


def test_the_canonical_basis_survives_a_residual_rotation(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    state, config, tokenizer_json = load_folder(zoo("llama-a"))
    rotated = load_transformations()["rotate_residual"](
        {k: v.copy() for k, v in state.items()}, dict(config), np.random.default_rng(5)
    )
    folder = save_folder(tmp_path / "rotated", rotated.state, rotated.config, tokenizer_json)
    evidence = compare_fingerprints(
        _fingerprint(zoo("llama-a"), tmp_path), _fingerprint(folder, tmp_path)
    )
    assert evidence.log10_p < -6 and evidence.fit > 0.99


def _transformed(zoo: Callable[[str], Path], tmp: Path, how: str, **params: object) -> Path:
    state, config, tokenizer_json = load_folder(zoo("llama-a"))
    made = load_transformations()[how](
        {k: v.copy() for k, v in state.items()}, dict(config), np.random.default_rng(7), **params
    )
    return save_folder(tmp / how, made.state, made.config, tokenizer_json)


@pytest.mark.parametrize(
    ("how", "params"),
    [("permute_all", {"signs": True}), ("width_prune", {"keep": 0.75}),
     ("moe_upcycle", {"noise": 0.01})],
)  # fmt: skip
def test_content_samples_see_units_that_moved_or_went(
    zoo: Callable[[str], Path], tmp_path: Path, how: str, params: dict[str, object]
) -> None:
    """Positions miss a permuted or width-pruned copy; units chosen by content do not."""
    folder = _transformed(zoo, tmp_path, how, **params)
    a, b = _fingerprint(zoo("llama-a"), tmp_path), _fingerprint(folder, tmp_path)
    assert a.layers[0] is not None and a.layers[0].content is not None
    evidence = compare_fingerprints(a, b)
    assert evidence.matched and evidence.log10_p < -6, evidence
    if how != "moe_upcycle":  # an upcycled expert keeps its units' positions
        with open_model(folder) as model:
            blind = fingerprint(model, dims=DIMS, units=UNITS, content_units=0)
        assert compare_fingerprints(a, blind).log10_p > -2
    unrelated = compare_fingerprints(_fingerprint(zoo("llama-b"), tmp_path), b)
    assert unrelated.matched and unrelated.log10_p > -2, unrelated


def test_files_are_deterministic_and_round_trip(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    with open_model(zoo("llama-a")) as model:
        first = save_fingerprint(fingerprint(model, dims=DIMS), tmp_path / "one.fbf")
        second = save_fingerprint(fingerprint(model, dims=DIMS), tmp_path / "two.fbf")
        found = fingerprint(model, dims=DIMS)
    assert first.read_bytes() == second.read_bytes()
    loaded = load_fingerprint(first)
    assert loaded.tokens == found.tokens and loaded.meta == found.meta
    np.testing.assert_array_equal(loaded.embedding, found.embedding)
    for mine, theirs in zip(loaded.layers, found.layers, strict=True):
        assert mine is not None and theirs is not None
        np.testing.assert_array_equal(mine.up, theirs.up)
        np.testing.assert_array_equal(mine.units, theirs.units)
        assert mine.content is not None and theirs.content is not None
        for piece in ("units", "gate", "up", "down"):
            np.testing.assert_array_equal(getattr(mine.content, piece),
                                          getattr(theirs.content, piece))  # fmt: skip
    assert loaded.meta["structure"]["layers"] == 2 and loaded.meta["files"][0]["size"] > 0
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def _rewrite_description(
    path: Path, change: Callable[[dict[str, object]], None], name: str
) -> Path:
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    description = json.loads(header["__metadata__"]["forebear.fingerprint"])
    change(description)
    header["__metadata__"]["forebear.fingerprint"] = json.dumps(description)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    out = path.with_name(f"{name}.fbf")
    out.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length :])
    return out


def test_bad_fingerprint_files_get_one_clear_line(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    with open_model(zoo("llama-a")) as model:
        good = save_fingerprint(fingerprint(model, dims=DIMS), tmp_path / "good.fbf")
    cases = {
        "version 99, this forebear reads versions 1 to 2": _rewrite_description(
            good, lambda d: d.update(version=99), "version"
        ),
        "unknown schema": _rewrite_description(good, lambda d: d.update(schema="x"), "schema"),
        "no token list": _rewrite_description(good, lambda d: d.update(tokens="x"), "tokens"),
        "embedding sketch of shape": _rewrite_description(
            good, lambda d: d.update(tokens=["s:a"]), "shape"
        ),
    }
    truncated = tmp_path / "truncated.fbf"
    truncated.write_bytes(good.read_bytes()[:-100])
    cases["not a usable forebear fingerprint"] = truncated
    weights = next(zoo("llama-a").glob("*.safetensors"))
    cases["no 'forebear.fingerprint' description"] = weights
    for message, path in cases.items():
        with pytest.raises(ForebearError, match=message) as caught:
            load_fingerprint(path)
        assert "\n" not in str(caught.value) and "forebear fingerprint MODEL" in str(caught.value)
    older = _rewrite_description(good, lambda d: d.update(version=1), "older")
    assert load_fingerprint(older).meta["version"] == 1  # version 1 files still load


def test_cli_writes_a_fingerprint_and_reports_errors_in_one_line(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    out = tmp_path / "cli.fbf"
    result = CliRunner().invoke(
        app, ["fingerprint", str(zoo("llama-a")), "-o", str(out), "--dims", "8", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bytes"] == out.stat().st_size and data["dims"] == 8 and data["layers"] == 2
    assert data["content_units"] == 64  # a local model's default
    bare = CliRunner().invoke(app, ["fingerprint", str(zoo("llama-a")), "-o", str(out),
                                    "--content-units", "0", "-f", "json"])  # fmt: skip
    assert bare.exit_code == 0 and json.loads(bare.stdout)["content_units"] == 0
    assert all(s is not None and s.content is None for s in load_fingerprint(out).layers)
    assert 0 < data["bytes_read"] < sum(p.stat().st_size for p in zoo("llama-a").iterdir())
    missing = CliRunner().invoke(app, ["fingerprint", str(tmp_path / "nothing"), "-o", str(out)])
    assert missing.exit_code != 0
    assert "Traceback" not in missing.output


def test_the_bench_method_fingerprints_each_model_once(zoo: Callable[[str], Path]) -> None:
    from forebear.bench.methods import METHODS

    method = METHODS["forebear-fingerprint"]()
    first = method.compare(zoo("llama-a"), zoo("llama-a-ft"))
    again = method.compare(zoo("llama-a"), zoo("llama-b"))
    assert first.verdict == "derived" and first.bytes_read is not None and first.bytes_read > 0
    assert again.verdict == "independent"
    assert again.bytes_read is not None and 0 < again.bytes_read < first.bytes_read  # A cached
