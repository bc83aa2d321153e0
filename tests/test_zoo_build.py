"""The mini zoo, built once per session: folders, manifest, training sanity, cache, CLI.

These are checks of the zoo itself (that its ground truth is true), not of
forebear's method: derived models stay weight-correlated with their parent,
independent bases do not, the distilled student matches its teacher in
behaviour only, a merged LoRA is a low-rank delta. The build is shared between
pytest-xdist workers through one cache folder under a file lock, so the
training happens once per test run.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
filelock = pytest.importorskip("filelock")

from typer.testing import CliRunner  # noqa: E402

from forebear.architectures import Role  # noqa: E402
from forebear.cli.zoo import zoo_app  # noqa: E402
from forebear.errors import ForebearError  # noqa: E402
from forebear.model import open_model  # noqa: E402
from forebear.zoo.build import (  # noqa: E402
    RECORD,
    ZooBuild,
    run_build,
)
from forebear.zoo.corpus import load_corpus  # noqa: E402
from forebear.zoo.families import load_model  # noqa: E402
from forebear.zoo.folders import load_folder  # noqa: E402
from forebear.zoo.lora import adapted_tensors  # noqa: E402
from forebear.zoo.manifest import load_manifest  # noqa: E402
from forebear.zoo.profiles import ModelSpec, check_specs, profile_specs  # noqa: E402
from forebear.zoo.tokenization import corpus_tokens  # noqa: E402
from forebear.zoo.transforms.reparam import resolve_state  # noqa: E402

torch.set_num_threads(1)

MINI = profile_specs("mini")


def weights(build: ZooBuild, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    state, config, _ = load_folder(build.manifest.model_path(name))
    return state, config


def up_cosine(build: ZooBuild, a: str, b: str) -> float:
    """Cosine of the flattened mlp.up matrices of every layer, found by role."""

    def flat(name: str) -> np.ndarray:
        state, config = weights(build, name)
        resolved = resolve_state(state, config)
        return np.concatenate([resolved.read(Role.MLP_UP, i).ravel() for i in resolved.layers])

    x, y = flat(a), flat(b)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def record(build: ZooBuild, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((build.manifest.model_path(name) / RECORD).read_text())
    return data


def test_every_model_folder_opens_and_resolves_completely(mini: ZooBuild) -> None:
    assert set(mini.manifest.models) == {spec.name for spec in MINI}
    for name, entry in mini.manifest.models.items():
        with open_model(mini.manifest.model_path(name)) as model:
            coverage = model.resolved.coverage
            assert coverage.complete and not coverage.unknown, name
            assert model.resolved.family == entry.family
            assert model.vocabulary is not None
            assert model.vocabulary.size == model.config["vocab_size"]  # type: ignore[index]


def test_manifest_validates_and_records_the_truth(mini: ZooBuild) -> None:
    manifest = load_manifest(mini.manifest.root / "manifest.json")  # type: ignore[operator]
    assert manifest.to_json() == mini.manifest.to_json()
    pairs = {(p.a, p.b): p for p in manifest.pairs}
    assert pairs[("llama-a", "llama-b")].label == "independent"
    assert pairs[("llama-a", "qwen2-a")].label == "independent"
    assert pairs[("llama-a", "llama-a-distill")].label == "behaviour_only"
    assert pairs[("llama-a", "llama-a-lora")].relation == "lora_merge"
    assert pairs[("llama-a", "llama-a-ft-ft")].path == ("llama-a", "llama-a-ft", "llama-a-ft-ft")
    assert pairs[("llama-a-ft", "llama-a-ft2")].relation == "sibling"
    entry = manifest.models["llama-b"]
    assert (entry.seed, entry.data, entry.tokenizer) == (2, "corpus-a", "bpe-a")
    assert manifest.models["qwen2-a"].tokenizer == "bpe-b"
    assert manifest.models["llama-a-lora"].params["rank"] == 4
    created = manifest.created_with
    assert created["torch"] == torch.__version__ and created["forebear"]
    assert {"sha256:corpus-a", "sha256:corpus-b", "sha256:bpe-a", "sha256:bpe-b"} <= set(created)


def test_pretraining_genuinely_reduced_the_loss(mini: ZooBuild) -> None:
    for name in mini.manifest.bases():
        losses = record(mini, name)["losses"]
        assert losses[0] > 5.5 and losses[-1] < losses[0] - 1.5, (name, losses)


def test_derived_models_stay_correlated_and_independent_bases_do_not(mini: ZooBuild) -> None:
    assert abs(up_cosine(mini, "llama-a", "llama-b")) < 0.2  # same data, other seed
    assert abs(up_cosine(mini, "llama-a", "llama-c")) < 0.2
    for child in ("llama-a-ft", "llama-a-ft-ft", "llama-a-ft2", "llama-a-lora", "llama-a-cpt"):
        assert up_cosine(mini, "llama-a", child) > 0.5, child
    ft, parent = weights(mini, "llama-a-ft")[0], weights(mini, "llama-a")[0]
    assert any(not np.array_equal(ft[k], parent[k]) for k in parent)


def _next_tokens(build: ZooBuild, name: str, ids: Any) -> Any:
    state, config = weights(build, name)
    with torch.no_grad():
        return load_model(config, state)(input_ids=ids).logits.log_softmax(-1)


def test_distilled_student_matches_its_teacher_in_behaviour_only(
    mini: ZooBuild, zoo_cache: Path
) -> None:
    assert abs(up_cosine(mini, "llama-a", "llama-a-distill")) < 0.2
    tokenizer = load_folder(mini.manifest.model_path("llama-a"))[2]
    held_out = corpus_tokens(load_corpus("corpus-a", cache=zoo_cache), tokenizer, zoo_cache)[1]
    ids = torch.from_numpy(held_out[: 32 * 64].reshape(32, 64))
    teacher = _next_tokens(mini, "llama-a", ids)
    agreement, divergence = {}, {}
    for name in ("llama-a-distill", "llama-b"):
        other = _next_tokens(mini, name, ids)
        agreement[name] = (other.argmax(-1) == teacher.argmax(-1)).float().mean().item()
        divergence[name] = (teacher.exp() * (teacher - other)).sum(-1).mean().item()
    assert agreement["llama-a-distill"] > agreement["llama-b"] + 0.1, agreement
    assert divergence["llama-a-distill"] < 0.5 * divergence["llama-b"], divergence


def test_merged_lora_is_a_low_rank_delta(mini: ZooBuild) -> None:
    base, config = weights(mini, "llama-a")
    merged = weights(mini, "llama-a-lora")[0]
    adapted = adapted_tensors(base, config)
    assert adapted
    for name in adapted:
        rank = np.linalg.matrix_rank(merged[name].astype(np.float64) - base[name], tol=1e-5)
        assert 0 < rank <= 4, (name, rank)


def test_a_second_build_trains_nothing_and_writes_the_same_bytes(
    mini: ZooBuild, zoo_cache: Path, tmp_path: Path
) -> None:
    again = run_build(MINI, tmp_path, profile="mini", cache=zoo_cache)
    assert again.built == () and set(again.cached) == set(mini.manifest.models)
    assert again.manifest.pairs == mini.manifest.pairs
    for name in mini.manifest.models:
        for file in ("config.json", "model.safetensors", "tokenizer.json"):
            first = (mini.manifest.model_path(name) / file).read_bytes()
            assert (again.manifest.model_path(name) / file).read_bytes() == first, (name, file)


def test_a_changed_spec_rebuilds_only_what_descends_from_it(
    mini: ZooBuild, zoo_cache: Path, tmp_path: Path
) -> None:
    specs = [s for s in MINI if s.name in ("llama-a", "llama-b", "llama-a-ft", "llama-a-ft-ft")]
    changed = [dataclasses.replace(s, steps=7) if s.name == "llama-a-ft" else s for s in specs]
    result = run_build(changed, tmp_path, cache=zoo_cache)
    assert result.built == ("llama-a-ft", "llama-a-ft-ft")
    assert result.cached == ("llama-a", "llama-b")


def test_registered_transformations_are_applied_then_retrained(
    mini: ZooBuild, zoo_cache: Path, tmp_path: Path
) -> None:
    base = next(s for s in MINI if s.name == "llama-a")
    perm = ModelSpec(
        "llama-a-perm", "llama", "derived", ("llama-a",), "permute_all", seed=7,
        retrain_steps=4, lr=3e-4,
    )  # fmt: skip
    swap = ModelSpec(
        "llama-a-swap", "llama", "derived", ("llama-a",), "vocab_swap", seed=8,
        tokenizer="bpe-b",
    )  # fmt: skip
    tunes = [s for s in MINI if s.name in ("llama-a-ft", "llama-a-ft2")]
    ties = ModelSpec(
        "llama-a-ties", "llama", "derived", ("llama-a-ft", "llama-a-ft2"), "merge_ties", seed=9,
        params={"density": 0.5},
    )  # fmt: skip
    result = run_build([base, perm, swap, *tunes, ties], tmp_path, cache=zoo_cache)
    assert result.built == ("llama-a-perm", "llama-a-swap", "llama-a-ties")
    assert record(result, "llama-a-ties")["params"]["density"] == 0.5
    assert up_cosine(result, "llama-a-ft", "llama-a-ties") > 0.5
    perm_record = record(result, "llama-a-perm")
    assert perm_record["function_preserving"] is True and perm_record["maps"]
    assert perm_record["params"]["retrain_steps"] == 4 and len(perm_record["losses"]) == 4
    assert abs(up_cosine(result, "llama-a", "llama-a-perm")) < 0.2  # the permutation hid it
    with open_model(result.manifest.model_path("llama-a-swap")) as swapped:
        assert swapped.vocabulary is not None and swapped.vocabulary.size == 640
    pairs = {(p.a, p.b): p for p in result.manifest.pairs}
    assert pairs[("llama-a", "llama-a-swap")].relation == "vocab_swap"
    assert result.manifest.models["llama-a-swap"].tokenizer == "bpe-b"


def test_storage_copies_are_written_by_their_writers_and_cached(
    mini: ZooBuild, zoo_cache: Path, tmp_path: Path
) -> None:
    base = next(s for s in MINI if s.name == "llama-a")
    copies = [
        ModelSpec("llama-a-q6_k", "llama", "derived", ("llama-a",), "gguf_k"),
        ModelSpec("llama-a-int8", "llama", "derived", ("llama-a",), "int8",
                  params={"group_size": 32}),
    ]  # fmt: skip
    result = run_build([base, *copies], tmp_path, cache=zoo_cache)
    models = result.manifest.models
    assert models["llama-a-q6_k"].path == "models/llama-a-q6_k/model-Q6_K.gguf"
    assert models["llama-a-int8"].path == "models/llama-a-int8"
    assert models["llama-a-int8"].params == {"group_size": 32}
    original = weights(result, "llama-a")[0]
    for name in ("llama-a-q6_k", "llama-a-int8"):
        with open_model(result.manifest.model_path(name)) as copy:
            up = copy.resolved.read(Role.MLP_UP, 1)
            exact = resolve_state(original, weights(result, "llama-a")[1]).read(Role.MLP_UP, 1)
            assert up.shape == exact.shape and 0 < np.abs(up - exact).max() < 0.05
    pairs = {(p.a, p.b): p for p in result.manifest.pairs}
    assert pairs[("llama-a", "llama-a-q6_k")].relation == "gguf_k"
    assert pairs[("llama-a-q6_k", "llama-a-int8")].relation == "sibling"
    again = run_build([base, *copies], tmp_path / "again", cache=zoo_cache)
    assert again.built == () and set(again.cached) == {"llama-a", "llama-a-q6_k", "llama-a-int8"}


def _spec(name: str, **fields: Any) -> ModelSpec:
    defaults: dict[str, Any] = {"family": "llama", "kind": "derived", "parents": ("llama-a",)}
    return ModelSpec(name, **(defaults | fields))


BASE = next(s for s in MINI if s.name == "llama-a")


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [BASE, _spec("x", transformation="no_such")],
            "zoo model 'x': transformation 'no_such' is not registered",
        ),
        (
            [BASE, _spec("x", transformation="permute_all", params={"bogus": 1})],
            "zoo model 'x': params do not fit 'permute_all'",
        ),
        ([BASE, BASE], "zoo model 'llama-a': named twice"),
        (
            [BASE, _spec("x", transformation="gguf_k", retrain_steps=3)],
            "zoo model 'x': a storage copy has one parent and no retraining",
        ),
        (
            [BASE, _spec("x", transformation="int8", params={"bits": 4})],
            "zoo model 'x': params do not fit 'int8'",
        ),
        ([_spec("x", transformation="light_finetune")], "names unknown parent 'llama-a'"),
        ([BASE, _spec("x", transformation=None)], "needs parents and a transformation"),
        (
            [BASE, _spec("x", transformation="light_finetune", kind="distilled")],
            "kind 'distilled' goes with transformation 'distillation' only",
        ),
        ([dataclasses.replace(BASE, data=None)], "a base names a corpus and a tokenizer"),
        (
            [
                _spec("x", parents=("y",), transformation="light_finetune"),
                _spec("y", parents=("x",), transformation="light_finetune"),
            ],
            "zoo model 'x': is its own ancestor",
        ),
    ],
)
def test_bad_profiles_fail_before_any_training(specs: list[ModelSpec], message: str) -> None:
    with pytest.raises(ForebearError, match=message):
        check_specs(specs)


def test_full_profile_is_consistent_and_in_dependency_order() -> None:
    ordered = check_specs(profile_specs("full"))
    seen: set[str] = set()
    for spec in ordered:
        assert set(spec.parents) <= seen
        seen.add(spec.name)
    names = {spec.name for spec in ordered}
    assert {spec.name for spec in MINI} <= names
    families = Counter(spec.family for spec in ordered if spec.kind == "base")
    assert all(families[f] >= 2 for f in ("llama", "qwen2", "gpt_neox"))
    with pytest.raises(ForebearError, match="unknown zoo profile 'huge'"):
        profile_specs("huge")


def test_calibration_profile_holds_only_unseen_independent_bases() -> None:
    calibration = check_specs(profile_specs("calibration"))
    assert all(spec.kind == "base" and not spec.parents for spec in calibration)
    assert len({spec.seed for spec in calibration}) == len(calibration) == 18
    full_seeds = {spec.seed for spec in profile_specs("full") if spec.kind == "base"}
    assert not full_seeds & {spec.seed for spec in calibration}  # models no test was tuned on
    assert {spec.family for spec in calibration} == {"llama", "qwen2", "gpt_neox"}
    assert {spec.data for spec in calibration} == {"corpus-a", "corpus-b"}
    assert {spec.tokenizer for spec in calibration} == {"bpe-a", "bpe-b"}


def test_cli_builds_from_cache_and_summarises(
    mini: ZooBuild, zoo_cache: Path, tmp_path: Path
) -> None:
    args = ["build", "--profile", "mini", "--out", str(tmp_path), "--cache", str(zoo_cache)]
    result = CliRunner().invoke(zoo_app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["built"] == [] and len(summary["cached"]) == len(MINI)
    labels = Counter(pair.label for pair in mini.manifest.pairs)
    assert summary["pairs"] == dict(sorted(labels.items()))
    assert "llama-a: cached" in result.stderr
    text = CliRunner().invoke(zoo_app, [*args, "--quiet"])
    assert text.exit_code == 0 and "built 0, from cache 10" in text.stdout
    assert text.stderr == ""
