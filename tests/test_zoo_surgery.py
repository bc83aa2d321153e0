"""Shape-changing transformations: the result loads in transformers, and the maps are exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from factories import build_torch_model, load_derived, make_hf_model  # noqa: E402
from forebear.architectures import Role, resolve  # noqa: E402
from forebear.errors import ArchitectureError, UnsupportedFormatError  # noqa: E402
from forebear.formats.memory import MemoryReader  # noqa: E402
from forebear.zoo.transforms.base import REGISTRY, Derived  # noqa: E402
from forebear.zoo.transforms.surgery import (  # noqa: E402
    depth_prune,
    depth_upscale,
    moe_upcycle,
    width_prune,
)

torch.set_num_threads(1)
TOKENS = [[1, 5, 9, 33, 70, 4, 101, 2]]


def source(family: str, square: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """config.json and state dict of the factory model, as ``save_pretrained`` writes them."""
    return make_hf_model(family, square=square)


def logits(model: Any) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.numpy()


def read(state: dict[str, np.ndarray], config: dict[str, Any], role: str, layer: int | None):
    return resolve(MemoryReader(state), config).read(Role.from_name(role), layer)


def snapshot(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in state.items()}


def unchanged(state: dict[str, np.ndarray], before: dict[str, np.ndarray]) -> bool:
    return state.keys() == before.keys() and all(np.array_equal(state[k], before[k]) for k in state)


def test_all_registered() -> None:
    for name in ("width_prune", "depth_prune", "depth_upscale", "moe_upcycle"):
        assert name in REGISTRY


# --- width -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "square"), [("llama", False), ("qwen2", True)])
def test_width_prune_keeps_selected_units_and_heads(
    family: str, square: bool, tmp_path: Path
) -> None:
    config, state = source(family, square)
    before = snapshot(state)
    derived = width_prune(state, config, np.random.default_rng(0), keep=0.5, heads_keep=0.5)
    assert unchanged(state, before)
    new = derived.config
    assert new["intermediate_size"] == config["intermediate_size"] // 2
    assert (new["num_attention_heads"], new["num_key_value_heads"]) == (2, 1)
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert new["head_dim"] == head_dim
    for layer in range(config["num_hidden_layers"]):
        units = derived.maps["mlp_units"][layer]
        assert len(units) == new["intermediate_size"] and units == sorted(units)
        for role, axis in (("mlp.gate", 0), ("mlp.up", 0), ("mlp.down", 1)):
            old = read(state, config, role, layer)
            assert np.array_equal(
                read(derived.state, new, role, layer), np.take(old, units, axis=axis)
            )
        heads, kv = derived.maps["heads"][layer], derived.maps["kv_heads"][layer]
        rows = np.concatenate([np.arange(h * head_dim, (h + 1) * head_dim) for h in heads])
        kv_rows = np.concatenate([np.arange(g * head_dim, (g + 1) * head_dim) for g in kv])
        checks = [("attn.q", rows, 0), ("attn.o", rows, 1), ("attn.k", kv_rows, 0)]
        checks.append(("attn.v", kv_rows, 0))
        if family == "qwen2":  # biases follow the pruned heads
            checks += [("attn.q_bias", rows, 0), ("attn.k_bias", kv_rows, 0)]
            checks.append(("attn.v_bias", kv_rows, 0))
        for role, index, axis in checks:
            old = read(state, config, role, layer)
            assert np.array_equal(
                read(derived.state, new, role, layer), np.take(old, index, axis=axis)
            )
    out = logits(load_derived(derived, tmp_path))
    assert out.shape == (1, len(TOKENS[0]), config["vocab_size"])
    json.dumps(derived.maps)


def test_width_prune_magnitude_keeps_the_largest_units() -> None:
    config, state = source("llama")
    derived = width_prune(state, config, np.random.default_rng(0), keep=0.25)
    down, up = read(state, config, "mlp.down", 0), read(state, config, "mlp.up", 0)
    score = np.linalg.norm(down.astype(np.float64), axis=0) * np.linalg.norm(
        up.astype(np.float64), axis=1
    )
    kept = derived.maps["mlp_units"][0]
    dropped = np.setdiff1d(np.arange(len(score)), kept)
    assert score[kept].min() >= score[dropped].max()
    assert "heads" not in derived.maps


def test_width_prune_random_is_seeded() -> None:
    config, state = source("llama")
    a = width_prune(state, config, np.random.default_rng(7), keep=0.5, selection="random")
    b = width_prune(state, config, np.random.default_rng(7), keep=0.5, selection="random")
    c = width_prune(state, config, np.random.default_rng(8), keep=0.5, selection="random")
    assert a.maps == b.maps and a.maps != c.maps
    assert unchanged(a.state, b.state)


def test_width_prune_refuses_fused_heads_and_bad_params() -> None:
    config, state = source("gpt_neox")
    with pytest.raises(UnsupportedFormatError, match="cannot cut a fused or stacked tensor"):
        width_prune(state, config, np.random.default_rng(0), heads_keep=0.5)
    with pytest.raises(ValueError, match="keep must be a fraction in"):
        width_prune(state, config, np.random.default_rng(0), keep=1.5)
    with pytest.raises(ValueError, match="selection must be 'magnitude' or 'random'"):
        width_prune(state, config, np.random.default_rng(0), selection="largest")


def test_width_prune_gpt_neox_mlp(tmp_path: Path) -> None:
    config, state = source("gpt_neox")
    derived = width_prune(state, config, np.random.default_rng(0), keep=0.5)
    units = derived.maps["mlp_units"][1]
    old = read(state, config, "mlp.up_bias", 1)
    assert np.array_equal(read(derived.state, derived.config, "mlp.up_bias", 1), old[units])
    load_derived(derived, tmp_path)


# --- depth -------------------------------------------------------------------------------------


def layer_tensors_equal(derived: Derived, state, config, sources: list[int]) -> None:
    old, new = (
        resolve(MemoryReader(state), config),
        resolve(MemoryReader(derived.state), derived.config),
    )
    assert new.coverage.complete and new.dims.layers == len(sources)
    for entry in new.entries:
        if entry.layer is None:
            assert np.array_equal(new.read(entry.role), old.read(entry.role))
            continue
        expected = old.read(entry.role, sources[entry.layer], entry.expert)
        assert np.array_equal(new.read(entry.role, entry.layer, entry.expert), expected)


@pytest.mark.parametrize(
    ("family", "params", "sources"),
    [
        ("llama", {"which": "last", "count": 1}, [0]),
        ("qwen2", {"which": "layers", "layers": [0]}, [1]),
        ("gpt_neox", {"which": "every_other"}, [0]),
    ],
)
def test_depth_prune(family: str, params: dict[str, Any], sources: list[int], tmp_path: Path):
    config, state = source(family)
    before = snapshot(state)
    derived = depth_prune(state, config, None, **params)
    assert unchanged(state, before)
    assert derived.maps == {"layers": sources}
    assert derived.config["num_hidden_layers"] == len(sources)
    layer_tensors_equal(derived, state, config, sources)
    assert logits(load_derived(derived, tmp_path)).shape == (
        1,
        len(TOKENS[0]),
        config["vocab_size"],
    )


@pytest.mark.parametrize(
    ("family", "params", "sources"),
    [
        ("llama", {"mode": "solar", "k": 1}, [0, 1]),
        ("qwen2", {"mode": "repeat", "block": (0, 2)}, [0, 1, 0, 1]),
        ("gpt_neox", {"mode": "layers", "layers": [0, 0, 1, 1, 1]}, [0, 0, 1, 1, 1]),
    ],
)
def test_depth_upscale(family: str, params: dict[str, Any], sources: list[int], tmp_path: Path):
    config, state = source(family)
    before = snapshot(state)
    derived = depth_upscale(state, config, None, **params)
    assert unchanged(state, before)
    assert derived.maps == {"layers": sources}
    layer_tensors_equal(derived, state, config, sources)
    if "layer_types" in config:  # qwen2: transformers checks one entry per layer
        assert derived.config["layer_types"] == [config["layer_types"][i] for i in sources]
    # Duplicated layers are copies, not views of one array.
    arrays = [id(a) for a in derived.state.values()] + [id(a) for a in state.values()]
    assert len(set(arrays)) == len(arrays)
    model = load_derived(derived, tmp_path)
    assert model.config.num_hidden_layers == len(sources)
    logits(model)


def test_depth_solar_on_four_layers_duplicates_the_middle() -> None:
    config, state = source("llama")
    deep = depth_upscale(state, config, None, mode="layers", layers=[0, 1, 1, 0])
    solar = depth_upscale(deep.state, deep.config, None, mode="solar", k=1)
    assert solar.maps["layers"] == [0, 1, 2, 1, 2, 3]


def test_depth_refuses_bad_layers() -> None:
    config, state = source("llama")
    with pytest.raises(ValueError, match=r"layer sources must be a non-empty list in range\(2\)"):
        depth_upscale(state, config, None, mode="layers", layers=[0, 5])
    with pytest.raises(ValueError, match="layer sources must be a non-empty list"):
        depth_prune(state, config, None, which="last", count=2)
    with pytest.raises(ValueError, match=r"layers to drop must lie in range\(2\)"):
        depth_prune(state, config, None, which="layers", layers=[3])
    with pytest.raises(ValueError, match="k must be in"):
        depth_upscale(state, config, None, mode="solar", k=2)


# --- MoE upcycling -----------------------------------------------------------------------------


@pytest.mark.parametrize("square", [False, True])
def test_moe_upcycle_preserves_function(square: bool, tmp_path: Path) -> None:
    config, state = source("llama", square)
    before = snapshot(state)
    derived = moe_upcycle(state, config, np.random.default_rng(3), experts=4, top_k=2)
    assert unchanged(state, before)
    assert derived.function_preserving
    assert derived.config["model_type"] == "mixtral"
    assert derived.config["num_local_experts"] == 4
    assert derived.config["num_experts_per_tok"] == 2
    name = "model.layers.1.block_sparse_moe.experts.3.w2.weight"
    assert np.array_equal(derived.state[name], state["model.layers.1.mlp.down_proj.weight"])
    moe = resolve(MemoryReader(derived.state), derived.config)
    assert moe.family == "mixtral" and moe.coverage.complete
    pairs = [("mlp.gate", "moe.expert.gate"), ("mlp.up", "moe.expert.up")]
    pairs.append(("mlp.down", "moe.expert.down"))
    for layer in range(config["num_hidden_layers"]):
        for dense, expert_role in pairs:
            for expert in range(4):
                got = moe.read(Role.from_name(expert_role), layer, expert)
                assert np.array_equal(got, read(state, config, dense, layer))
    dense = logits(build_torch_model("llama", square=square))
    upcycled = logits(load_derived(derived, tmp_path))
    np.testing.assert_allclose(upcycled, dense, rtol=1e-4, atol=1e-5)


def test_moe_upcycle_noise_is_seeded_and_breaks_symmetry(tmp_path: Path) -> None:
    config, state = source("llama")
    a = moe_upcycle(state, config, np.random.default_rng(1), noise=0.01)
    b = moe_upcycle(state, config, np.random.default_rng(1), noise=0.01)
    assert unchanged(a.state, b.state) and not a.function_preserving
    w = "model.layers.0.block_sparse_moe.experts.{}.w1.weight"
    assert not np.array_equal(a.state[w.format(0)], a.state[w.format(1)])
    assert np.allclose(
        a.state[w.format(0)], state["model.layers.0.mlp.gate_proj.weight"], atol=0.01
    )
    router = a.state["model.layers.0.block_sparse_moe.gate.weight"]
    assert router.shape == (4, config["hidden_size"])
    load_derived(a, tmp_path)


def test_moe_upcycle_refuses_what_mixtral_cannot_hold() -> None:
    config, state = source("qwen2")
    with pytest.raises(
        ArchitectureError, match=r"mixtral has no tensor for attn\.[qkv]_bias; cannot upcycle"
    ):
        moe_upcycle(state, config, np.random.default_rng(0))
    config, state = source("mixtral")
    with pytest.raises(UnsupportedFormatError, match="already has experts"):
        moe_upcycle(state, config, np.random.default_rng(0))
    with pytest.raises(ValueError, match="top_k must be in"):
        moe_upcycle(state, config, np.random.default_rng(0), experts=2, top_k=3)
