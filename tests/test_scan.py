"""``forebear scan``: the mini zoo's bases indexed, derived models attributed, cards checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from forebear.cli import main
from forebear.fingerprint import fingerprint, save_fingerprint
from forebear.index import Index, make_record
from forebear.model import open_model
from forebear.scan import scan
from forebear.zoo.build import ZooBuild

BASES = ("llama-a", "llama-b", "llama-c", "qwen2-a")
UNITS = 128  # every unit of the mini zoo's MLPs (see test_fingerprint)


@pytest.fixture(scope="module")
def index_path(mini: ZooBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "index.sqlite"
    with Index.open(path) as index:
        for name in BASES:
            index.add(make_record(str(mini.manifest.model_path(name)), units=UNITS))
    return path


@pytest.mark.parametrize("derived", ["llama-a-ft", "llama-a-ft-ft", "llama-a-lora", "llama-a-cpt"])
def test_a_derived_model_is_attributed_to_its_base(
    mini: ZooBuild, index_path: Path, derived: str
) -> None:
    with Index.open(index_path) as index:
        result = scan(mini.manifest.model_path(derived), index, units=UNITS)
    assert result.best is not None, result.to_json()
    assert result.best.record.ref == str(mini.manifest.model_path("llama-a"))
    assert result.matches[0].score == max(m.score for m in result.matches)  # retrieval agrees
    assert all(not m.decisive.derived for m in result.matches[1:])


def test_an_independent_model_has_no_indexed_relative(mini: ZooBuild, index_path: Path) -> None:
    with Index.open(index_path) as index:
        result = scan(mini.manifest.model_path("llama-a-distill"), index, units=UNITS)
    assert result.best is None and result.verdict == "no indexed relative"
    assert result.matches and all(m.decisive.verdict == "independent" for m in result.matches)


def _with_card(mini: ZooBuild, tmp_path: Path, name: str, card: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(mini.manifest.model_path(name), folder)
    (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def test_cards_claims_are_checked_against_the_weights(
    mini: ZooBuild, index_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claim = "# Ours\n\nThis model was trained from scratch on our data.\n"
    scratch = _with_card(mini, tmp_path, "llama-a-ft", claim)
    code = main(["scan", str(scratch), "--index", str(index_path), "--units", str(UNITS),
                 "-f", "json"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 5 and data["checks"][0]["status"] == "contradicted"
    assert "llama-a" in data["checks"][0]["evidence"]

    wrong_base = str(mini.manifest.model_path("llama-b"))
    declared = _with_card(mini, tmp_path / "b", "llama-a-ft",
                          f"---\nbase_model: {wrong_base}\n---\n# Fine-tune\n")  # fmt: skip
    with Index.open(index_path) as index:
        result = scan(declared, index, units=UNITS)
    statuses = {check.claim: check.status for check in result.checks}
    assert statuses[f"base model {wrong_base}"] == "contradicted"
    assert any(status == "undeclared" for status in statuses.values())

    truth = f"---\nbase_model: {mini.manifest.model_path('llama-a')}\n---\n"
    honest = _with_card(mini, tmp_path / "c", "llama-a-ft", truth)
    with Index.open(index_path) as index:
        result = scan(honest, index, units=UNITS)
    assert [check.status for check in result.checks] == ["consistent"]


def test_a_fingerprint_file_can_be_scanned(
    mini: ZooBuild, index_path: Path, tmp_path: Path
) -> None:
    with open_model(mini.manifest.model_path("llama-a-ft")) as model:
        path = save_fingerprint(fingerprint(model, units=UNITS), tmp_path / "ft.fbf")
    code = main(["scan", str(path), "--index", str(index_path)])
    assert code == 3


def test_a_missing_index_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["scan", str(tmp_path), "--index", str(tmp_path / "none.sqlite")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_merge_is_named_as_one(mini: ZooBuild, tmp_path: Path) -> None:
    from forebear.zoo.folders import load_folder, save_folder
    from forebear.zoo.transforms.merges import merge_linear

    (ft, config, tokenizer), (ft2, _, _) = (
        load_folder(mini.manifest.model_path(n)) for n in ("llama-a-ft", "llama-a-ft2")
    )
    made = merge_linear([ft, ft2], [config, config], weights=[0.7, 0.3])
    merged = save_folder(tmp_path / "merged", made.state, made.config, tokenizer)
    with Index.open(tmp_path / "index.sqlite") as index:
        for name in ("llama-a", "llama-a-ft", "llama-a-ft2", "llama-b"):
            index.add(make_record(str(mini.manifest.model_path(name)), units=UNITS))
        sketched = scan(merged, index, units=UNITS)
        weighed = scan(merged, index, units=UNITS, weights=True)
        plain = scan(mini.manifest.model_path("llama-a-ft-ft"), index, units=UNITS)
    parents = {str(mini.manifest.model_path(n)) for n in ("llama-a-ft", "llama-a-ft2")}
    for result in (sketched, weighed):
        assert result.merge is not None and set(result.merge.parents) == parents, result.verdict
        assert result.verdict.startswith("merge of")
        share = dict(zip(result.merge.parents, result.merge.weights, strict=True))
        assert share[str(mini.manifest.model_path("llama-a-ft"))] == pytest.approx(0.7, abs=0.1)
    assert weighed.merge is not None and weighed.merge.decomposition is not None
    assert weighed.merge.decomposition["verdict"] == "exact merge"
    assert plain.merge is None and not plain.verdict.startswith("merge")
