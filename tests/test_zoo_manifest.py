"""The manifest: pairs labelled from the model tree, and validation of what is read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forebear.errors import CorruptCheckpointError
from forebear.zoo.manifest import Manifest, ModelEntry, derive_pairs, load_manifest


def tree() -> dict[str, ModelEntry]:
    def m(
        name: str, kind: str = "derived", parents: tuple[str, ...] = (), t: str | None = None
    ) -> ModelEntry:
        return ModelEntry(name, f"models/{name}", "llama", kind, parents, t)  # type: ignore[arg-type]

    return {
        "a": m("a", "base"),
        "b": m("b", "base"),
        "a-ft": m("a-ft", parents=("a",), t="light_finetune"),
        "a-ft-ft": m("a-ft-ft", parents=("a-ft",), t="light_finetune"),
        "a-prune": m("a-prune", parents=("a",), t="width_prune"),
        "merge": m("merge", parents=("a-ft", "a-prune"), t="merge_linear"),
        "student": m("student", "distilled", ("a",), "distillation"),
    }


def test_pairs_follow_the_tree() -> None:
    pairs = {(p.a, p.b): p for p in derive_pairs(tree())}
    assert len(pairs) == 7 * 6 // 2
    assert pairs[("a", "a-ft")].relation == "light_finetune"
    assert pairs[("a", "a-ft-ft")].relation == "ancestor"
    assert pairs[("a", "a-ft-ft")].path == ("a", "a-ft", "a-ft-ft")
    sibling = pairs[("a-ft", "a-prune")]
    assert (sibling.label, sibling.relation, sibling.path) == (
        "related",
        "sibling",
        ("a-ft", "a", "a-prune"),
    )
    assert pairs[("a-prune", "merge")].relation == "merge_linear"
    assert pairs[("a", "b")].label == "independent"
    assert pairs[("b", "merge")].label == "independent"
    assert pairs[("a", "student")].label == "behaviour_only"
    assert pairs[("a-ft", "student")].label == "behaviour_only"
    assert pairs[("b", "student")].label == "independent"


def test_round_trip_and_validation(tmp_path: Path) -> None:
    models = tree()
    Manifest("mini", models, derive_pairs(models), {"forebear": "0"}).write(
        tmp_path / "manifest.json"
    )
    loaded = load_manifest(tmp_path)
    assert loaded.models == models
    assert loaded.pairs == derive_pairs(models)
    assert loaded.model_path("a-ft") == tmp_path / "models/a-ft"
    assert loaded.bases() == ["a", "b"]


def test_a_pair_that_contradicts_the_tree_is_refused(tmp_path: Path) -> None:
    models = tree()
    Manifest("mini", models, derive_pairs(models)).write(tmp_path / "manifest.json")
    raw = json.loads((tmp_path / "manifest.json").read_text())
    related = next(p for p in raw["pairs"] if (p["a"], p["b"]) == ("a", "a-ft"))
    related["label"] = "independent"
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CorruptCheckpointError, match="contradicts the model tree"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["models"]["a-ft"].update(parents=["nope"]), "unknown parent 'nope'"),
        (lambda r: r["models"]["a"].update(parents=["b"]), "base model 'a' lists parents"),
        (lambda r: r["models"]["a-ft"].update(kind="clone"), "has kind 'clone'"),
        (lambda r: r["models"]["a-ft"].update(colour="red"), "unknown keys"),
        (lambda r: r.update(schema="other/1"), "is not a forebear.zoo.manifest/1 manifest"),
    ],
)
def test_malformed_manifests(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    models = tree()
    Manifest("mini", models, derive_pairs(models)).write(tmp_path / "manifest.json")
    raw = json.loads((tmp_path / "manifest.json").read_text())
    edit(raw)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CorruptCheckpointError, match=message):
        load_manifest(tmp_path)


def test_cycle_is_refused(tmp_path: Path) -> None:
    models = tree()
    Manifest("mini", models, ()).write(tmp_path / "manifest.json")
    raw = json.loads((tmp_path / "manifest.json").read_text())
    raw["models"]["a-ft"]["parents"] = ["a-ft-ft"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CorruptCheckpointError, match="is its own ancestor"):
        load_manifest(tmp_path)
