"""``forebear compare`` on the mini zoo: every robustness class, the p-value, hostile inputs.

The mini zoo's trained models give the training relations (fine-tune, continued
pre-training, LoRA, grandchild, siblings, distillation, independent bases on the
same and on other data); the zoo's transformations applied to its llama-a (no
retraining) give the rest: storage copies, permutations, rotation, width and
depth surgery, up-scaling, MoE upcycling, vocabulary changes, a relabelled
architecture. Derived means p < 1e-6 (``REPORTING_LOG10_P``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner

from forebear.cli import app
from forebear.compare import REPORTING_LOG10_P, Comparison, compare
from forebear.compare.pipeline import Settings
from forebear.zoo.build import ZooBuild
from forebear.zoo.folders import load_folder, save_folder
from forebear.zoo.profiles import load_transformations
from forebear.zoo.transforms.storage import STORAGE

State = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def zoo(mini: ZooBuild) -> Callable[[str], Path]:
    return mini.manifest.model_path


@pytest.fixture(scope="module")
def llama_a(zoo: Callable[[str], Path]) -> tuple[State, dict[str, Any], bytes]:
    return load_folder(zoo("llama-a"))


def _derived_folder(tmp: Path, name: str, derived: Any, tokenizer_json: bytes) -> Path:
    return save_folder(tmp / name, derived.state, derived.config,
                       derived.tokenizer_json or tokenizer_json)  # fmt: skip


def _transformed(
    tmp: Path, llama_a: tuple[State, dict[str, Any], bytes], how: str, **params: Any
) -> Path:
    state, config, tokenizer_json = llama_a
    function = load_transformations()[how]
    derived = function(
        {k: v.copy() for k, v in state.items()}, dict(config), np.random.default_rng(5), **params
    )
    return _derived_folder(tmp, how, derived, tokenizer_json)


def _derived(result: Comparison) -> bool:
    return result.log10_p < REPORTING_LOG10_P and result.derived


# ---------------------------------------------------------------- training relations


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ("llama-a", "llama-a-ft", "derived: light fine-tune"),
        ("llama-a", "llama-a-lora", "derived: light fine-tune"),
        ("llama-a", "llama-a-cpt", None),
        ("llama-a", "llama-a-ft-ft", "derived: light fine-tune"),  # grandchild
        ("llama-a-ft", "llama-a-ft2", "derived: light fine-tune"),  # siblings
    ],
)
def test_training_relations_are_derived(
    zoo: Callable[[str], Path], a: str, b: str, verdict: str | None
) -> None:
    result = compare(zoo(a), zoo(b))
    assert _derived(result), result.reasons
    assert result.verdict == (verdict or result.verdict)
    assert result.layer_map == (0, 1)
    assert result.ledger is not None and result.ledger.inherited_fraction > 0.95


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("llama-a", "llama-b"),  # same data, same tokenizer: the hard negative
        ("llama-a", "llama-c"),
        ("llama-a", "qwen2-a"),  # other family, other tokenizer
        ("llama-a-ft", "llama-b"),
    ],
)
def test_independent_bases_are_not_derived(zoo: Callable[[str], Path], a: str, b: str) -> None:
    result = compare(zoo(a), zoo(b))
    assert result.verdict == "independent", result.reasons
    assert result.log10_p > REPORTING_LOG10_P
    assert result.ledger is not None and result.ledger.inherited_fraction == 0.0


def test_the_modules_carrying_the_evidence_are_named(zoo: Callable[[str], Path]) -> None:
    derived = compare(zoo("llama-a"), zoo("llama-a-ft"))
    for module in ("mlp", "mlp (matched units)", "attention"):
        assert derived.modules[module]["b_layers_with_evidence"] == [0, 1], module
    assert all(c.log10_p_attention is not None and c.log10_p_attention < -6
               for c in derived.evidence)  # fmt: skip
    assert derived.modules["embeddings"]["kind"].startswith("alignment statistic")
    independent = compare(zoo("llama-a"), zoo("llama-b"))
    assert independent.modules["attention"]["b_layers_with_evidence"] == []
    assert independent.modules["attention"]["log10_p"] > -3
    fast = compare(zoo("llama-a"), zoo("llama-a-ft"), fast=True)
    assert fast.modules.keys() == {"embeddings", "mlp"}  # --fast: no attention read


def test_distillation_is_invisible_and_the_result_says_so(zoo: Callable[[str], Path]) -> None:
    result = compare(zoo("llama-a"), zoo("llama-a-distill"))
    assert not result.derived
    assert any("distillation" in line for line in result.cannot_see)


def test_a_model_compared_with_itself_is_identical(zoo: Callable[[str], Path]) -> None:
    result = compare(zoo("llama-a"), zoo("llama-a"))
    assert result.verdict == "identical"
    assert result.ledger is not None and result.ledger.changed == 0.0


# ---------------------------------------------------------------- storage copies


@pytest.mark.parametrize("writer", ["recast_fp16", "recast_bf16", "int8", "gguf_q8_0", "gguf_k"])
def test_storage_copies_are_repackaged_copies(
    writer: str, llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    state, config, tokenizer_json = llama_a
    params = {"group_size": 32} if writer == "int8" else {}
    written = STORAGE[writer](state, config, tokenizer_json, tmp_path / writer, **params)
    result = compare(zoo("llama-a"), written)
    assert result.verdict == "repackaged copy", result.reasons
    assert result.ledger is not None and 0 < (result.ledger.changed or 0) < 0.02


# ---------------------------------------------------------------- re-parameterisations


def test_permuted_units_heads_and_residual_are_found_by_the_matched_test(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    permuted = _transformed(tmp_path, llama_a, "permute_all", signs=True)
    result = compare(zoo("llama-a"), permuted)
    assert _derived(result), result.reasons
    same = [c.log10_p_same_position for c in result.evidence if c.a_layer == c.b_layer]
    assert all(p is not None and p > -2 for p in same)  # the exact test is blind to it
    assert result.tests["matched units, in half of the layers"] < -50
    assert any("permuted" in reason for reason in result.reasons)
    assert result.ledger is not None and result.ledger.changed is not None
    assert result.ledger.changed < 1e-4
    assert result.verdict == "repackaged copy"  # the same function, stored differently


def test_rotated_residual_with_folded_gains_is_derived(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    rotated = _transformed(tmp_path, llama_a, "rotate_residual")
    result = compare(zoo("llama-a"), rotated)
    assert _derived(result)
    assert result.residual["identity_like"] is False and result.residual["fit"] > 0.99
    assert any("rotated" in reason for reason in result.reasons)


# ---------------------------------------------------------------- shape surgery


def test_width_pruning_recovers_the_units_kept(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    pruned = _transformed(tmp_path, llama_a, "width_prune", keep=0.75)
    kept = json.loads((pruned / "config.json").read_text())["intermediate_size"]
    result = compare(zoo("llama-a"), pruned)
    assert result.verdict == "derived: structurally modified"
    assert any("MLP width" in reason for reason in result.reasons)
    state, config, _ = llama_a
    function = load_transformations()["width_prune"]
    truth = function(state, config, np.random.default_rng(5), keep=0.75).maps["mlp_units"]
    for cell in result.evidence:
        assert cell.units_from_a is not None and len(cell.units_from_a) == kept
        assert list(cell.units_from_a) == truth[cell.a_layer]


def test_depth_pruning_maps_layers_and_lists_the_dropped_one(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    pruned = _transformed(tmp_path, llama_a, "depth_prune", which="layers", layers=[0])
    result = compare(zoo("llama-a"), pruned)
    assert result.verdict == "derived: structurally modified"
    assert result.layer_map == (1,)
    assert result.ledger is not None and result.ledger.dropped_layers == (0,)


def test_depth_upscaling_maps_repeated_layers(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    grown = _transformed(tmp_path, llama_a, "depth_upscale", mode="layers", layers=[0, 1, 0, 1])
    result = compare(zoo("llama-a"), grown)
    assert result.verdict == "derived: structurally modified"
    assert result.layer_map == (0, 1, 0, 1)
    assert result.ledger is not None and result.ledger.repeated_layers == (0, 1)
    assert result.settings["units_all_pairs"] == 512  # the default limit: the bound is far
    # A tight bound on what the all-pairs pass holds shrinks B's samples, not the verdict:
    # 4 layers × 24 bytes × 64 wide per unit in 64 KiB → 10 units, raised to the floor of 16.
    tight = compare(zoo("llama-a"), grown, settings=Settings(pair_cache_bytes=64 << 10))
    assert tight.settings["units_all_pairs"] == 16
    assert tight.layer_map == (0, 1, 0, 1) and tight.verdict == result.verdict


def test_moe_upcycled_experts_match_the_dense_mlp(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    moe = _transformed(tmp_path, llama_a, "moe_upcycle", experts=4, noise=0.05)
    result = compare(zoo("llama-a"), moe)
    assert result.verdict == "derived: structurally modified"
    assert any("experts 0 → 4" in reason for reason in result.reasons)
    assert all(c.modules_b == 4 and c.modules_b_significant == 4 for c in result.evidence)


def test_vocabulary_extension_and_swap_align_by_token_string(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path,
    mini: ZooBuild,
) -> None:  # fmt: skip
    state, config, tokenizer_json = llama_a
    vocab = load_transformations()
    extended = vocab["vocab_extend"](
        state, config, np.random.default_rng(1), tokenizer_json=tokenizer_json, count=40,
        corpus=["a handful of brand new words: frobnicate quuxify zorblax"] * 50,
    )  # fmt: skip
    result = compare(zoo("llama-a"), _derived_folder(tmp_path, "ext", extended, tokenizer_json))
    assert _derived(result)
    added = extended.config["vocab_size"] - config["vocab_size"]
    assert added > 0 and result.ledger is not None and result.ledger.new_tokens == added
    other = load_folder(zoo("qwen2-a"))[2]  # the mini zoo's other tokenizer
    swapped = vocab["vocab_swap"](
        state, config, np.random.default_rng(2), tokenizer_json=tokenizer_json,
        new_tokenizer_json=other,
    )  # fmt: skip
    result = compare(zoo("llama-a"), _derived_folder(tmp_path, "swap", swapped, tokenizer_json))
    assert result.verdict == "derived: structurally modified"
    assert result.residual["shared_tokens"] < json.loads(other)["model"]["vocab"].__len__()


def test_same_weights_under_another_architecture_label_are_identical(
    llama_a: tuple[State, dict[str, Any], bytes], zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    state, config, tokenizer_json = llama_a
    relabelled = dict(config, model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    biased = dict(state)
    for layer in range(config["num_hidden_layers"]):
        for proj in ("q_proj", "k_proj", "v_proj"):
            rows = state[f"model.layers.{layer}.self_attn.{proj}.weight"].shape[0]
            biased[f"model.layers.{layer}.self_attn.{proj}.bias"] = np.zeros(rows, np.float32)
    folder = save_folder(tmp_path / "qwen2-labelled", biased, relabelled, tokenizer_json)
    result = compare(zoo("llama-a"), folder)
    assert result.families == ("llama", "qwen2")
    assert result.verdict == "identical"


# ---------------------------------------------------------------- fast mode


def test_fast_mode_reads_a_sample_and_agrees_on_plain_relations(
    zoo: Callable[[str], Path],
) -> None:
    full = compare(zoo("llama-a"), zoo("llama-a-ft"))
    fast = compare(zoo("llama-a"), zoo("llama-a-ft"), fast=True)
    assert fast.fast and fast.derived and fast.bytes_read < full.bytes_read
    assert set(fast.tests) == {"same-position, Fisher over layers",
                               "matched units, in half of the layers"}  # fmt: skip
    assert not compare(zoo("llama-a"), zoo("llama-b"), fast=True).derived


# ---------------------------------------------------------------- CLI and hostile inputs


def test_cli_json_and_exit_codes(zoo: Callable[[str], Path]) -> None:
    runner = CliRunner()
    derived = runner.invoke(app, ["compare", str(zoo("llama-a")), str(zoo("llama-a-ft")),
                                  "--format", "json", "--quiet"])  # fmt: skip
    assert derived.exit_code == 3, derived.output
    data = json.loads(derived.stdout)
    assert data["verdict"] == "derived: light fine-tune" and data["derived"] is True
    assert data["log10_p"] < -6 and 0 <= data["p_value"] < 1e-6
    assert {"layer_map", "ledger", "evidence", "null", "cannot_see"} <= set(data)
    independent = runner.invoke(app, ["compare", str(zoo("llama-a")), str(zoo("llama-b")), "-q"])
    assert independent.exit_code == 0 and "independent" in independent.stdout


def test_cli_errors_exit_1_with_one_line(tmp_path: Path, zoo: Callable[[str], Path]) -> None:
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    for target in (tmp_path / "missing", empty):
        result = CliRunner().invoke(app, ["compare", str(zoo("llama-a")), str(target), "-q"])
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("forebear: error:")


def test_other_families_are_compared_by_role(zoo: Callable[[str], Path], tmp_path: Path) -> None:
    from tests.factories import make_hf_model

    config, state = make_hf_model("gpt2")  # same width, no tokenizer: token ids can't align
    folder = save_folder(tmp_path / "gpt2", state, config, b"")
    (folder / "tokenizer.json").unlink()
    result = compare(zoo("llama-a"), folder)
    assert result.families == ("llama", "gpt2")
    assert result.verdict == "independent"
    assert result.residual["source"] == "identity (too few shared tokens)"


def test_unalignable_models_are_inconclusive_with_the_reason(
    zoo: Callable[[str], Path], tmp_path: Path
) -> None:
    from forebear.zoo.families import build_model, state_of, tiny_config

    config = tiny_config("llama", 100, {}, {"hidden_size": 48, "num_attention_heads": 4})
    state = state_of(build_model(config, seed=3))
    folder = save_folder(tmp_path / "narrow", state, config, b"")
    (folder / "tokenizer.json").unlink()
    result = compare(zoo("llama-a"), folder)
    assert result.verdict == "inconclusive"
    assert "shared tokens" in result.reasons[0]
