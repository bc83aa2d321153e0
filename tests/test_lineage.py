"""Lineage: merges decomposed into their parents, trees over the mini zoo, metadata priors."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner

from forebear.cli import app, main
from forebear.errors import ForebearError
from forebear.lineage import decompose
from forebear.lineage.graphml import to_graphml
from forebear.lineage.graphs import rooted, tree_path
from forebear.lineage.priors import Priors, load_priors
from forebear.lineage.tree import build_tree
from forebear.model import open_model
from forebear.zoo.build import ZooBuild
from forebear.zoo.folders import load_folder, save_folder
from forebear.zoo.transforms.merges import (
    merge_dare,
    merge_dare_ties,
    merge_linear,
    merge_slerp,
    merge_ties,
)


@pytest.fixture(scope="module")
def zoo(mini: ZooBuild) -> Callable[[str], Path]:
    return mini.manifest.model_path


@pytest.fixture(scope="module")
def merged(zoo: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Callable[[str], Path]:  # fmt: skip
    """Merges of llama-a-ft and llama-a-ft2 (base llama-a), made once, by name."""
    folder = tmp_path_factory.mktemp("merges")
    (ft, config, tokenizer), (ft2, _, _) = (
        load_folder(zoo("llama-a-ft")),
        load_folder(zoo("llama-a-ft2")),
    )
    base = load_folder(zoo("llama-a"))[0]
    made = {
        "linear": merge_linear([ft, ft2], [config, config], weights=[0.7, 0.3]),
        "slerp": merge_slerp([ft, ft2], [config, config], t=0.4),
        "ties": merge_ties([ft, ft2], [config, config], base=base, density=0.5),
        "dare": merge_dare(
            [ft, ft2],
            [config, config],
            base=base,
            density=0.3,
            weights=[0.6, 0.4],
            rng=np.random.default_rng(7),
        ),
        "dare_ties": merge_dare_ties(
            [ft, ft2],
            [config, config],
            base=base,
            density=0.3,
            weights=[1.0, 3.0],  # only their ratio matters: 0.25 / 0.75
            rng=np.random.default_rng(7),
        ),
    }
    rng = np.random.default_rng(3)
    changed = {k: v + 0.15 * np.abs(ft[k] - ft2[k]).mean() * rng.standard_normal(v.shape)
               if v.dtype.kind == "f" else v for k, v in made["linear"].state.items()}  # fmt: skip
    paths = {name: save_folder(folder / name, m.state, m.config, tokenizer)
             for name, m in made.items()}  # fmt: skip
    paths["changed"] = save_folder(folder / "changed", changed, config, tokenizer)
    return paths.__getitem__


def _decompose(paths: list[Path], base: Path | None = None) -> Any:
    models = [open_model(p) for p in paths]
    try:
        return decompose(models[0], models[1:], None if base is None else open_model(base))
    finally:
        for m in models:
            m.close()


@pytest.mark.parametrize(
    ("name", "method", "weights"),
    [("linear", "linear", (0.7, 0.3)), ("slerp", "slerp", (0.6, 0.4)),
     ("ties", "ties", (0.5, 0.5)), ("dare", "dare", (0.6, 0.4)),
     ("dare_ties", "dare_ties", (0.25, 0.75))],
)  # fmt: skip
def test_decompose_recovers_the_recipe(
    zoo: Callable[[str], Path], merged: Callable[[str], Path], name: str, method: str,
    weights: tuple[float, float],
) -> None:  # fmt: skip
    found = _decompose([merged(name), zoo("llama-a-ft"), zoo("llama-a-ft2")], zoo("llama-a"))
    assert found.verdict == "exact merge" and found.best is not None, found.fits
    assert found.best.method == method
    assert np.allclose(found.best.weights, weights, atol=0.03), found.best
    if method == "ties":
        assert found.best.params["density"] == pytest.approx(0.5, abs=0.03)
        assert found.best.params["lambda"] == pytest.approx(1.0, abs=0.03)
    if method in ("dare", "dare_ties"):
        assert found.best.params["density"] == pytest.approx(0.3, abs=0.03)
    config = found.mergekit()
    assert config is not None
    assert config["merge_method"] == {"dare": "dare_linear"}.get(method, method)


def test_a_merge_trained_further_is_told_from_an_exact_one(
    zoo: Callable[[str], Path], merged: Callable[[str], Path]
) -> None:
    found = _decompose([merged("changed"), zoo("llama-a-ft"), zoo("llama-a-ft2")])
    assert found.verdict == "merge, then changed", found.fits
    assert found.best is not None and found.best.residual > found.exact_threshold
    assert np.allclose(found.best.weights, (0.7, 0.3), atol=0.05)


def test_a_parent_is_not_a_merge_of_its_children(zoo: Callable[[str], Path]) -> None:
    found = _decompose([zoo("llama-a"), zoo("llama-a-ft"), zoo("llama-a-ft2")])
    assert found.verdict == "not a merge of these parents" and found.mergekit() is None


def test_nearly_identical_parents_are_flagged(
    zoo: Callable[[str], Path], merged: Callable[[str], Path], tmp_path: Path
) -> None:
    state, config, tokenizer = load_folder(zoo("llama-a-ft"))
    twin = {k: v * (1 + 1e-6) if v.dtype.kind == "f" else v for k, v in state.items()}
    folder = save_folder(tmp_path / "twin", twin, config, tokenizer)
    found = _decompose([merged("linear"), zoo("llama-a-ft"), folder])
    assert any("nearly identical" in w for w in found.warnings), found.warnings


def test_decompose_refuses_bad_requests_in_one_line(
    zoo: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ForebearError, match="at least two parents"):
        _decompose([zoo("llama-a"), zoo("llama-a-ft")])
    code = main(["decompose", str(zoo("llama-a")), str(zoo("llama-a-ft")), str(zoo("llama-a-ft"))])
    err = capsys.readouterr().err
    assert code == 1 and "named twice" in err and err.count("\n") == 1


def test_the_cli_decomposes_and_writes_a_mergekit_config(
    zoo: Callable[[str], Path], merged: Callable[[str], Path], tmp_path: Path
) -> None:
    config = tmp_path / "merge.yaml"
    args = ["decompose", str(merged("slerp")), str(zoo("llama-a-ft")), str(zoo("llama-a-ft2")),
            "--mergekit", str(config), "-f", "json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "exact merge" and data["best"]["method"] == "slerp"
    assert "merge_method: slerp" in config.read_text()
    text = CliRunner().invoke(app, ["decompose", str(zoo("llama-a")), str(zoo("llama-a-ft")),
                                    str(zoo("llama-a-ft2"))])  # fmt: skip
    assert text.exit_code == 4 and "not a merge of these parents" in text.output


def test_rooting_turns_log_odds_into_direction_probabilities() -> None:
    lone = rooted([("a", "b")], {("a", "b"): 2.0})
    assert lone[("a", "b")] == pytest.approx(1 / (1 + np.exp(-2.0)))
    # A chain a - b - c: b → c is decided; a - b, with no evidence, stays undecided (either
    # a or b may be the root), and weak evidence on it keeps its own sign.
    chain = rooted([("a", "b"), ("b", "c")], {("a", "b"): 0.0, ("b", "c"): 6.0})
    assert chain[("b", "c")] > 0.99 and chain[("a", "b")] == pytest.approx(0.5, abs=0.01)
    weak = rooted([("a", "b"), ("b", "c")], {("a", "b"): -1.0, ("b", "c"): 6.0})
    assert weak[("a", "b")] < 0.5
    star = rooted([("h", "x"), ("h", "y"), ("h", "z")], {("h", "x"): 3.0, ("h", "y"): 3.0,
                                                            ("h", "z"): -3.0})  # fmt: skip
    assert star[("h", "x")] > 0.9 and star[("h", "z")] < 0.1


def test_the_path_between_two_nodes_of_a_tree() -> None:
    edges = {frozenset(e) for e in [("a", "b"), ("b", "c"), ("b", "d"), ("d", "e")]}
    assert tree_path(edges, "c", "e") == ["c", "b", "d", "e"]
    assert tree_path(edges, "a", "a") == ["a"]


def test_priors_files_are_checked_and_cycles_ignored(tmp_path: Path) -> None:
    good = tmp_path / "priors.yaml"
    good.write_text("models:\n  a: {released: 2024-01-01}\n"
                    "  b: {released: 2024-02-01, base_model: a}\n"
                    "  c: {quantized: true}\n  d: {quantized: false}\n")  # fmt: skip
    priors = load_priors(good)
    assert priors.log_odds("a", "b") == pytest.approx(7.0) and priors.log_odds("b", "a") == -7.0
    assert priors.log_odds("d", "c") > 0 and priors.log_odds("a", "zzz") == 0.0
    cyclic = tmp_path / "cycle.json"
    cyclic.write_text(json.dumps({"models": {"a": {"base_model": "b"}, "b": {"base_model": "a"}}}))
    loaded = load_priors(cyclic)
    assert loaded.warnings and "cycle" in loaded.warnings[0] and loaded.log_odds("a", "b") == 0
    for text, message in (("[1, 2]", "no 'models'"), ("models: {a: {released: soon}}", "date"),
                          ("models: {a: 3}", "not a mapping"), ("{{{", "not valid")):  # fmt: skip
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ForebearError, match=message):
            load_priors(bad)


def test_the_tree_of_the_mini_zoo(zoo: Callable[[str], Path], merged: Callable[[str], Path],
                                  tmp_path: Path) -> None:  # fmt: skip
    copy = shutil.copytree(zoo("llama-a"), tmp_path / "llama-a-copy")
    names = ["llama-a", "llama-a-ft", "llama-a-ft2", "llama-a-ft-ft", "llama-b", "qwen2-a"]
    refs = [str(zoo(n)) for n in names] + [str(merged("linear")), str(copy)]
    found = build_tree(refs)
    ref = {n: str(zoo(n)) for n in names}
    family = next(f for f in found.families if ref["llama-a"] in f)
    assert (ref["llama-b"],) in found.families and (ref["qwen2-a"],) in found.families
    assert len(family) == 6
    # The identical twins are one node: either may carry the other as its copy.
    same = {str(copy): ref["llama-a"]}
    pairs = {frozenset(same.get(n, n) for n in (e.parent, e.child))
             for e in found.edges if e.relation not in ("merge", "identical")}  # fmt: skip
    truth = {(ref["llama-a"], ref["llama-a-ft"]), (ref["llama-a-ft"], ref["llama-a-ft-ft"]),
             (ref["llama-a"], ref["llama-a-ft2"])}  # fmt: skip
    assert pairs == {frozenset(t) for t in truth}
    for edge in found.edges:  # every direction the weights claim is right
        if edge.decided_by == "weights" and edge.relation not in ("merge", "identical"):
            assert (same.get(edge.parent, edge.parent), same.get(edge.child, edge.child)) in truth
    assert set(found.parents(str(merged("linear")))) == {ref["llama-a-ft"], ref["llama-a-ft2"]}
    twins = next(e for e in found.edges if {e.parent, e.child} == {ref["llama-a"], str(copy)})
    assert twins.relation == "identical" and twins.decided_by == "undetermined"
    assert all(e.parent in family and e.child in family for e in found.edges)
    with_priors = build_tree(
        [ref["llama-a"], str(copy)],
        priors=Priors.from_mapping(
            {"llama-a": {"released": "2024-01-01"}, "llama-a-copy": {"released": "2024-06-01"}}
        ),
    )
    edge = with_priors.edges[0]
    assert edge.decided_by == "priors" and edge.parent == ref["llama-a"]
    graph = ET.fromstring(to_graphml(found).split("\n", 1)[1])
    assert len(graph.findall(".//{*}edge")) == len(found.edges)


def test_frozen_tensors_and_coordinates_outrank_a_nearer_sibling(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    """A child trained further the way a sibling went is nearer the sibling than its parent;
    what places it is what it kept: its parent's frozen embeddings and norms, its
    coordinates. (Without those rules each assertion below fails: distance alone.)"""
    from forebear.zoo.transforms.reparam import permute_mlp_units

    base, config, tokenizer = load_folder(zoo("llama-a"))
    ft = load_folder(zoo("llama-a-ft"))[0]
    rng = np.random.default_rng(5)

    def near_ft(key: str) -> Any:  # further along ft's way, a little noise
        step = ft[key] - base[key]
        noise = rng.standard_normal(step.shape).astype(step.dtype)
        return ft[key] + 0.2 * step + 0.05 * np.abs(step).mean() * noise

    matrices = {k for k, v in base.items() if ".layers." in k and v.ndim == 2}
    frozen = {k: near_ft(k) if k in matrices else base[k] for k in base}  # embeddings kept
    thawed = {k: near_ft(k) if k in matrices else ft[k] for k in base}  # ft's embeddings
    retrained = {k: near_ft(k) for k in base}
    permuted = permute_mlp_units({k: near_ft(k) for k in base}, config, rng).state
    paths = {name: str(save_folder(tmp_path / name, state, config, tokenizer)) for name, state in
             [("frozen", frozen), ("thawed", thawed), ("retrained", retrained),
              ("permuted", permuted)]}  # fmt: skip
    a, a_ft = str(zoo("llama-a")), str(zoo("llama-a-ft"))

    def linked(refs: list[str]) -> set[frozenset[str]]:
        return {frozenset((e.parent, e.child)) for e in build_tree(refs).edges}

    assert frozenset((a, paths["frozen"])) in linked([a, a_ft, paths["frozen"]])
    thawed = linked([a, a_ft, paths["thawed"]])
    assert frozenset((a_ft, paths["thawed"])) in thawed
    assert frozenset((a, paths["thawed"])) not in thawed
    # The permuted model moved as far as the retrained one: without its coordinates, the
    # retrained model's nearest relative would be its permuted sibling.
    found = linked([a, paths["retrained"], paths["permuted"]])
    assert frozenset((a, paths["retrained"])) in found


def test_a_declared_base_picks_among_parents_the_weights_cannot_separate(
    zoo: Callable[[str], Path],
) -> None:
    """llama-a-cpt and llama-a-ft were both trained from llama-a on corpus-b: the heavy one
    lies farther along the light one's way, so the weights put it beside the fine-tune, with
    llama-a nearly as close (the same geometry as a chain a → ft → cpt; see the lineage
    bench). A declared base settles what the weights cannot; a claim they rule out (too far,
    or no relative at all) changes nothing."""
    names = ["llama-a", "llama-a-ft", "llama-a-cpt", "llama-a-ft2"]
    ref = {n: str(zoo(n)) for n in names}

    def by_pair(found: Any) -> dict[frozenset[str], Any]:
        return {frozenset((e.parent, e.child)): e for e in found.edges}

    plain = by_pair(build_tree(list(ref.values())))
    beside = plain[frozenset((ref["llama-a-ft"], ref["llama-a-cpt"]))]
    assert ref["llama-a"] in beside.alternatives and beside.attached_by == "weights"
    claims = Priors.from_mapping({
        "llama-a-cpt": {"base_model": ["llama-a"]},
        "llama-a-ft2": {"base_model": ["llama-a-cpt"]},  # the weights rule this out: too far
        "llama-a-ft": {"base_model": ["llama-b"]},  # not in the tree
    })  # fmt: skip
    found = build_tree(list(ref.values()), priors=claims)
    edges = by_pair(found)
    moved = edges[frozenset((ref["llama-a"], ref["llama-a-cpt"]))]
    assert moved.attached_by == "priors" and moved.parent == ref["llama-a"]
    assert ref["llama-a-ft"] in moved.alternatives
    assert any("declared base" in reason for reason in moved.reasons)
    assert frozenset((ref["llama-a-ft"], ref["llama-a-cpt"])) not in edges
    kept = {k: e for k, e in edges.items() if e is not moved}
    assert set(kept) == set(plain) - {frozenset((ref["llama-a-ft"], ref["llama-a-cpt"]))}
    assert all(e.attached_by == "weights" for e in kept.values())
    assert found.to_json()["edges"][0]["attached_by"] in ("weights", "priors")
    graph = to_graphml(found)
    assert "attached_by" in graph and ">priors<" in graph


def test_model_cards_declare_bases_for_the_tree(
    zoo: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cards``: each folder's README.md ``base_model`` (a hub id: its last component
    names the local folder) is a prior, read only when asked."""
    folders = {n: shutil.copytree(zoo(n), tmp_path / n) for n in ("llama-a", "llama-a-ft")}
    cpt = shutil.copytree(zoo("llama-a-cpt"), tmp_path / "llama-a-cpt")
    (cpt / "README.md").write_text("---\nbase_model: some-org/llama-a\n---\nContinued.\n")
    refs = [*map(str, folders.values()), str(cpt)]
    beside = frozenset((str(folders["llama-a-ft"]), str(cpt)))
    assert beside in {frozenset((e.parent, e.child)) for e in build_tree(refs).edges}
    found = build_tree(refs, cards=True)
    (edge,) = [e for e in found.edges if str(cpt) in (e.parent, e.child)]
    assert edge.parent == str(folders["llama-a"]) and edge.attached_by == "priors"
    assert main(["tree", *refs, "--cards", "-f", "json", "-q"]) == 0
    edges = json.loads(capsys.readouterr().out)["edges"]
    assert any(e["attached_by"] == "priors" and e["child"] == str(cpt) for e in edges)


def test_a_declared_merge_the_weights_do_not_rule_out(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    """A merge changed afterwards as much as its parents were fine-tuned reads "not a merge"
    (the weights cannot tell it from a model trained on both parents' data). Declared by its
    card, and lying between the two, it becomes their merge, labelled as the card's."""
    (ft, config, tokenizer), (ft2, _, _) = (
        load_folder(zoo("llama-a-ft")),
        load_folder(zoo("llama-a-ft2")),
    )
    rng = np.random.default_rng(11)
    merged = merge_linear([ft, ft2], [config, config], weights=[0.7, 0.3]).state

    def changed(key: str) -> Any:
        noise = rng.standard_normal(ft[key].shape)
        size = 0.4 * np.linalg.norm(ft[key] - ft2[key]) / max(np.linalg.norm(noise), 1e-30)
        return (merged[key] + size * noise).astype(ft[key].dtype)

    state = {k: changed(k) if v.dtype.kind == "f" else v for k, v in merged.items()}
    trained = str(save_folder(tmp_path / "merged-then-trained", state, config, tokenizer))
    ref = {n: str(zoo(n)) for n in ("llama-a", "llama-a-ft", "llama-a-ft2")}
    refs = [*ref.values(), trained]
    plain = build_tree(refs)
    assert not plain.merges and len(plain.parents(trained)) <= 1
    honest = Priors.from_mapping({"merged-then-trained": {
        "base_model": ["llama-a-ft", "llama-a-ft2"]}})  # fmt: skip
    found = build_tree(refs, priors=honest)
    assert set(found.parents(trained)) == {ref["llama-a-ft"], ref["llama-a-ft2"]}
    edges = [e for e in found.edges if e.child == trained]
    assert all(e.relation == "merge" and e.attached_by == e.decided_by == "priors"
               for e in edges)  # fmt: skip
    (record,) = found.merges
    assert record["declared"] and record["verdict"] == "not a merge of these parents"
    assert "declares" in edges[0].reasons[0]
    wrong = Priors.from_mapping({"merged-then-trained": {"base_model": ["llama-a", "llama-a-ft"]}})
    assert not build_tree(refs, priors=wrong).merges  # not between its declared bases


def test_a_tree_of_one_model_and_of_a_model_named_twice(zoo: Callable[[str], Path]) -> None:
    alone = build_tree([str(zoo("llama-a"))])
    assert alone.edges == () and alone.families == ((str(zoo("llama-a")),),)
    with pytest.raises(ForebearError, match="more than once"):
        build_tree([str(zoo("llama-a")), str(zoo("llama-a"))])
    result = CliRunner().invoke(app, ["tree", str(zoo("llama-a")), str(zoo("llama-a-ft")),
                                      "-f", "json", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (edge,) = json.loads(result.stdout)["edges"]
    assert {edge["parent"], edge["child"]} == {str(zoo("llama-a")), str(zoo("llama-a-ft"))}
    assert edge["relation"].startswith("derived") and 0.5 <= edge["p_weights"] <= 1.0


def test_a_tree_from_the_index_uses_fingerprints_and_cards(
    zoo: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from forebear.index import Index, make_record
    from forebear.lineage.tree import tree_from_index

    grandchild = shutil.copytree(zoo("llama-a-ft-ft"), tmp_path / "llama-a-ft-ft")
    (grandchild / "README.md").write_text(f"---\nbase_model: {zoo('llama-a-ft')}\n---\n")
    path = tmp_path / "index.sqlite"
    with Index.open(path) as index:
        for ref in (zoo("llama-a"), zoo("llama-a-ft"), grandchild, zoo("llama-b")):
            index.add(make_record(str(ref), units=128))
        found = tree_from_index(index)
    assert len(found.families) == 2 and (str(zoo("llama-b")),) in found.families
    pairs = {frozenset((e.parent, e.child)): e for e in found.edges}
    card = pairs[frozenset((str(zoo("llama-a-ft")), str(grandchild)))]
    assert card.decided_by == "priors" and card.parent == str(zoo("llama-a-ft"))
    assert frozenset((str(zoo("llama-a")), str(zoo("llama-a-ft")))) in pairs
    code = main(["tree", "--index", "--index-file", str(path), "-f", "json", "-q"])
    assert code == 0 and len(json.loads(capsys.readouterr().out)["edges"]) == 2
    code = main(["tree", "--index", str(zoo("llama-a")), "-q"])
    assert code == 1 and "not both" in capsys.readouterr().err
