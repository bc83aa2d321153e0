"""``compare`` with fingerprints on either side: the weights' verdict, without the weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from forebear.cli import main
from forebear.compare import compare
from forebear.fingerprint import fingerprint, save_fingerprint
from forebear.model import open_model
from forebear.zoo.build import ZooBuild

DIMS, UNITS = 16, 128


@pytest.fixture(scope="module")
def sketched(mini: ZooBuild, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    folder = tmp_path_factory.mktemp("sketches")

    def made(name: str) -> Path:
        target = folder / f"{name}.fbf"
        if not target.exists():
            with open_model(mini.manifest.model_path(name)) as model:
                save_fingerprint(fingerprint(model, dims=DIMS, units=UNITS), target)
        return target

    return made


@pytest.mark.parametrize(
    ("a", "b"),
    [("llama-a", "llama-a-ft"), ("llama-a", "llama-a-ft-ft"), ("llama-a", "llama-a-lora"),
     ("llama-a", "llama-a"), ("llama-a", "llama-b"), ("llama-a", "qwen2-a"),
     ("llama-a-ft", "llama-a-ft2")],
)  # fmt: skip
def test_fingerprints_give_the_weights_verdict(
    mini: ZooBuild, sketched: Callable[[str], Path], a: str, b: str
) -> None:
    weights = compare(mini.manifest.model_path(a), mini.manifest.model_path(b))
    sketches = compare(sketched(a), sketched(b))
    assert sketches.verdict == weights.verdict, (sketches.reasons, weights.reasons)
    assert sketches.derived == (sketches.log10_p < -6)
    if sketches.derived and a != b:
        assert sketches.layer_map == weights.layer_map
        assert sketches.ledger is not None and sketches.ledger.changed is not None


def test_a_model_against_a_fingerprint_is_fingerprinted_alike(
    mini: ZooBuild, sketched: Callable[[str], Path]
) -> None:
    both = compare(sketched("llama-a"), sketched("llama-a-ft"))
    mixed = compare(sketched("llama-a"), mini.manifest.model_path("llama-a-ft"))
    assert mixed.verdict == both.verdict and mixed.log10_p == pytest.approx(both.log10_p)
    assert mixed.settings["fingerprints"] and mixed.b == str(mini.manifest.model_path("llama-a-ft"))


def test_the_cli_compares_fingerprints(
    sketched: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare", str(sketched("llama-a")), str(sketched("llama-a-ft")), "-f", "json",
                 "-q"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 3 and data["derived"] and data["residual"]["source"] == "fingerprints"
    code = main(["compare", str(sketched("llama-a")), str(sketched("llama-b")), "-q"])
    assert code == 0 and "from fingerprints" in capsys.readouterr().out
