"""Function-preserving re-parameterisations: outputs unchanged, weights moved, maps exact.

Every transformation is run on tiny random transformers models of several
families, the result is saved as an HF folder and loaded back by transformers,
and its logits are compared with the original module's.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from factories import build_torch_model, make_hf_model  # noqa: E402
from forebear.architectures import Role  # noqa: E402
from forebear.errors import ArchitectureError, UnsupportedFormatError  # noqa: E402
from forebear.zoo.transforms.base import REGISTRY, Derived  # noqa: E402
from forebear.zoo.transforms.reparam import (  # noqa: E402
    apply_head_permutation,
    apply_residual_permutation,
    apply_unit_permutation,
    invert_signed_permutation,
    permute_all,
    permute_heads,
    permute_mlp_units,
    permute_residual,
    resolve_state,
)
from forebear.zoo.transforms.rotation import (  # noqa: E402
    apply_rotation,
    fold_norm_gains,
    random_rotation,
    rotate_residual,
)

torch.set_num_threads(1)

# llama: GQA; qwen2: q/k/v biases; qwen3: per-head q/k norms; gemma: tied head and 1 + w
# norms; phi3: fused qkv and gate_up; mixtral: experts; olmo2: post-norms and full-width
# q/k norms; gpt_neox: LayerNorm, per-head interleaved fused qkv, parallel residual.
RMS_FAMILIES = ("llama", "qwen2", "qwen3", "gemma", "phi3", "mixtral")
PERMUTABLE = (*RMS_FAMILIES, "olmo2", "gpt_neox")
CASES = [(family, False) for family in PERMUTABLE] + [("llama", True), ("qwen2", True)]


def _signed_residual(state: Any, config: Any, rng: np.random.Generator) -> Derived:
    return permute_residual(state, config, rng, signs=True)


PERMUTATIONS = {
    "permute_mlp": permute_mlp_units,
    "permute_heads": permute_heads,
    "permute_residual": permute_residual,
    "permute_residual_signs": _signed_residual,
    "permute_all": permute_all,
}


def _model(family: str, square: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A tiny model whose norm gains and biases are random too (transformers initialises
    them to ones and zeros, which would let a wrong gain or bias map pass unseen)."""
    config, state = make_hf_model(family, square=square)
    rng = np.random.default_rng(99)
    for name, array in state.items():
        if array.ndim == 1:
            state[name] = (array + rng.normal(0.0, 0.3, array.shape)).astype(array.dtype)
    return config, state


def _logits(family: str, square: bool, state: Any, config: Any, tmp_path: Path) -> Any:
    """Logits of ``state`` saved as an HF folder and loaded the way a user would load it."""
    from safetensors.numpy import save_file

    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file(state, str(tmp_path / "model.safetensors"))
    cls = type(build_torch_model(family, square=square))
    model, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        return model.eval()(_ids(config)).logits


def _ids(config: Any) -> Any:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, config["vocab_size"], (2, 12), generator=generator)


def _assert_same_function(family: str, square: bool, derived: Derived, tmp_path: Path) -> None:
    config, state = _model(family, square=square)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = _logits(family, square, state, config, tmp_path / "a")
    after = _logits(family, square, derived.state, derived.config, tmp_path / "b")
    scale = float(before.abs().max())
    assert float((after - before).abs().max()) <= 1e-4 * scale


def _role(state: Any, config: Any, role: Role, layer: int | None = 0) -> Any:
    return resolve_state(state, config).read(role, layer).astype(np.float64)


def _cosine(a: Any, b: Any) -> float:
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _state_equal(a: Any, b: Any) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("family", "square"), CASES)
@pytest.mark.parametrize("name", list(PERMUTATIONS))
def test_permutations_preserve_the_function(
    family: str, square: bool, name: str, tmp_path: Path
) -> None:
    if name == "permute_residual_signs" and family == "gpt_neox":
        pytest.skip("LayerNorm: refused, see test_sign_flips_refused_under_layernorm")
    config, state = _model(family, square=square)
    config_before, state_before = copy.deepcopy(config), copy.deepcopy(state)
    derived = PERMUTATIONS[name](state, config, np.random.default_rng(7))
    assert derived.function_preserving
    assert _state_equal(state, state_before) and config == config_before  # inputs untouched
    json.dumps(derived.maps)
    _assert_same_function(family, square, derived, tmp_path)


@pytest.mark.parametrize(
    ("family", "square"), [*[(f, False) for f in RMS_FAMILIES], ("llama", True)]
)
def test_rotation_preserves_the_function(family: str, square: bool, tmp_path: Path) -> None:
    config, state = _model(family, square=square)
    config_before, state_before = copy.deepcopy(config), copy.deepcopy(state)
    derived = rotate_residual(state, config, np.random.default_rng(3))
    assert derived.transformation == "rotate_residual" and derived.function_preserving
    assert _state_equal(state, state_before) and config == config_before
    _assert_same_function(family, square, derived, tmp_path)
    # Every residual-touching matrix is scrambled, not merely rescaled.
    for role, layer in ((Role.EMBED_TOKENS, None), (Role.ATTN_Q, 0), (Role.ATTN_O, 1)):
        old, new = (
            _role(state, config, role, layer),
            _role(derived.state, derived.config, role, layer),
        )
        assert abs(np.corrcoef(old.reshape(-1), new.reshape(-1))[0, 1]) < 0.2


def test_rotation_unties_a_tied_head_and_records_it() -> None:
    config, state = _model("gemma")
    assert config["tie_word_embeddings"] and not resolve_state(state, config).has(Role.LM_HEAD)
    derived = rotate_residual(state, config, np.random.default_rng(0))
    assert derived.maps["untied_head"] is True
    assert derived.config["tie_word_embeddings"] is False
    assert resolve_state(derived.state, derived.config).has(Role.LM_HEAD)
    llama_config, llama_state = _model("llama")
    llama = rotate_residual(llama_state, llama_config, np.random.default_rng(0))
    assert llama.maps["untied_head"] is False


def test_rotation_map_inverts_to_the_folded_model() -> None:
    config, state = _model("qwen2")
    derived = rotate_residual(state, config, np.random.default_rng(5))
    rotation = np.asarray(derived.maps["rotation"])
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(len(rotation)), atol=1e-12)
    undone = apply_rotation(derived.state, derived.config, rotation.T)
    folded, folded_config, _ = fold_norm_gains(state, config)
    assert folded_config == derived.config
    for name, array in folded.items():
        np.testing.assert_allclose(undone[name], array, atol=1e-5, err_msg=name)
    # Folding leaves unit gains and moves them into the readers exactly once.
    gain = _role(state, config, Role.ATTN_NORM)
    assert np.all(_role(folded, folded_config, Role.ATTN_NORM) == 1)
    np.testing.assert_allclose(
        _role(folded, folded_config, Role.ATTN_K),
        _role(state, config, Role.ATTN_K) * gain[None, :],
        rtol=1e-6,
    )


def test_mlp_map_is_exact_and_inverts() -> None:
    config, state = _model("qwen2")
    derived = permute_mlp_units(state, config, np.random.default_rng(1))
    units = derived.maps["mlp_units"]
    assert [u["layer"] for u in units] == [0, 1] and {u["axis"] for u in units} == {"intermediate"}
    perm = units[0]["perm"]
    up, new_up = _role(state, config, Role.MLP_UP), _role(derived.state, config, Role.MLP_UP)
    assert np.array_equal(new_up, up[perm])
    assert np.array_equal(
        _role(derived.state, config, Role.MLP_DOWN), _role(state, config, Role.MLP_DOWN)[:, perm]
    )
    assert _cosine(up, new_up) < 0.5
    inverse = [{**u, "perm": np.argsort(u["perm"]).tolist()} for u in units]
    assert _state_equal(apply_unit_permutation(derived.state, config, inverse), state)


def test_head_map_keeps_groups_and_inverts() -> None:
    config, state = _model("qwen2")
    derived = permute_heads(state, config, np.random.default_rng(2))
    heads, kv = derived.maps["heads"], derived.maps["kv_heads"]
    group = config["num_attention_heads"] // config["num_key_value_heads"]
    for layer_heads, layer_kv in zip(heads, kv, strict=True):
        assert [h // group for h in layer_heads] == [k for k in layer_kv for _ in range(group)]
    moved = [layer for layer, h in enumerate(heads) if h != sorted(h)]
    assert moved, "seed 2 should move some head"
    layer = moved[0]
    q, new_q = (
        _role(state, config, Role.ATTN_Q, layer),
        _role(derived.state, config, Role.ATTN_Q, layer),
    )
    width = q.shape[0] // len(heads[layer])
    for new, old in enumerate(heads[layer]):
        assert np.array_equal(
            new_q[new * width : (new + 1) * width], q[old * width : (old + 1) * width]
        )
    bias = _role(derived.state, config, Role.ATTN_K_BIAS, layer).reshape(len(kv[layer]), -1)
    assert np.array_equal(
        bias, _role(state, config, Role.ATTN_K_BIAS, layer).reshape(len(kv[layer]), -1)[kv[layer]]
    )
    inverse_heads = [np.argsort(h).tolist() for h in heads]
    inverse_kv = [np.argsort(k).tolist() for k in kv]
    assert _state_equal(
        apply_head_permutation(derived.state, config, inverse_heads, inverse_kv), state
    )


def test_residual_map_with_signs_is_exact_and_inverts() -> None:
    config, state = _model("llama")
    derived = permute_residual(state, config, np.random.default_rng(4), signs=True)
    perm, signs = derived.maps["residual"], np.asarray(derived.maps["signs"])
    assert set(signs.tolist()) == {-1, 1} and derived.params == {"signs": True}
    embed = _role(state, config, Role.EMBED_TOKENS, None)
    assert np.array_equal(
        _role(derived.state, config, Role.EMBED_TOKENS, None), embed[:, perm] * signs
    )
    down = _role(state, config, Role.MLP_DOWN)
    assert np.array_equal(_role(derived.state, config, Role.MLP_DOWN), down[perm] * signs[:, None])
    norm = _role(state, config, Role.ATTN_NORM)
    assert np.array_equal(
        _role(derived.state, config, Role.ATTN_NORM), norm[perm]
    )  # gains only move
    assert _cosine(embed, _role(derived.state, config, Role.EMBED_TOKENS, None)) < 0.5
    inverse = invert_signed_permutation(perm, signs.tolist())
    assert _state_equal(apply_residual_permutation(derived.state, config, *inverse), state)


def test_permute_all_moves_everything_and_records_every_map() -> None:
    config, state = _model("llama")
    derived = permute_all(state, config, np.random.default_rng(6))
    assert {"mlp_units", "heads", "kv_heads", "residual", "signs"} <= derived.maps.keys()
    for role in (Role.MLP_UP, Role.ATTN_Q, Role.ATTN_O):
        assert _cosine(_role(state, config, role), _role(derived.state, config, role)) < 0.5


@pytest.mark.parametrize(
    "name", [*sorted(PERMUTATIONS.keys() - {"permute_residual_signs"}), "rotate_residual"]
)
def test_same_seed_same_result_other_seed_other_maps(name: str) -> None:
    config, state = _model("llama")
    function = REGISTRY[name]
    first, again = (function(state, config, np.random.default_rng(11)) for _ in range(2))
    other = function(state, config, np.random.default_rng(12))
    assert _state_equal(first.state, again.state) and first.maps == again.maps
    assert first.maps != other.maps


def test_registered_names() -> None:
    assert REGISTRY["permute_mlp"] is permute_mlp_units
    assert REGISTRY["permute_heads"] is permute_heads
    assert REGISTRY["permute_residual"] is permute_residual
    assert REGISTRY["permute_all"] is permute_all
    assert REGISTRY["rotate_residual"] is rotate_residual


def _rms(x: Any) -> Any:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True))


def _layer_norm(x: Any) -> Any:
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True))


def test_why_sign_flips_and_rotations_need_rmsnorm() -> None:
    """RMSNorm commutes with any orthogonal map (so with sign flips); LayerNorm does not."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 16))
    flip = np.where(rng.random(16) < 0.5, -1.0, 1.0)
    rotation = random_rotation(16, rng)
    np.testing.assert_allclose(_rms(x * flip), _rms(x) * flip, atol=1e-12)
    np.testing.assert_allclose(_rms(x @ rotation), _rms(x) @ rotation, atol=1e-12)
    assert not np.allclose(_layer_norm(x * flip), _layer_norm(x) * flip, atol=1e-3)
    assert not np.allclose(_layer_norm(x @ rotation), _layer_norm(x) @ rotation, atol=1e-3)
    perm = rng.permutation(16)
    np.testing.assert_allclose(_layer_norm(x[:, perm]), _layer_norm(x)[:, perm], atol=1e-12)


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2"])
def test_rotation_refused_under_layernorm(family: str) -> None:
    config, state = _model(family)
    message = (
        f"rotate_residual is not function-preserving for {family}: LayerNorm subtracts the "
        "mean, and a rotation of the residual stream does not commute with mean-centering"
    )
    with pytest.raises(UnsupportedFormatError, match=message):
        rotate_residual(state, config, np.random.default_rng(0))


def test_sign_flips_refused_under_layernorm() -> None:
    config, state = _model("gpt_neox")
    match = "sign flips of the residual stream are not function-preserving for gpt_neox"
    with pytest.raises(UnsupportedFormatError, match=match):
        permute_residual(state, config, np.random.default_rng(0), signs=True)


def test_rotation_refused_with_post_norms() -> None:
    config, state = _model("olmo2")
    match = "rotate_residual cannot preserve the function of olmo2: attn.post_norm touches"
    with pytest.raises(UnsupportedFormatError, match=match):
        rotate_residual(state, config, np.random.default_rng(0))


def test_latent_attention_heads_refused() -> None:
    config, state = _model("deepseek_v3")
    with pytest.raises(
        ArchitectureError, match=re.escape("permute_heads needs separate attn.q/k/v/o")
    ):
        permute_heads(state, config, np.random.default_rng(0))


def test_bad_maps_refused() -> None:
    config, state = _model("llama")
    n_layers = config["num_hidden_layers"]
    identity_kv = [[0, 1]] * n_layers
    across_groups = [[1, 2, 0, 3]] * n_layers  # query head 2 moved into group 0
    with pytest.raises(ValueError, match="moves a query head out of its key/value group"):
        apply_head_permutation(state, config, across_groups, identity_kv)
    with pytest.raises(ValueError, match="perm must be a permutation of range"):
        apply_residual_permutation(state, config, [0] * config["hidden_size"])
    with pytest.raises(ValueError, match="fold_norm_gains before rotating"):
        apply_rotation(state, config, np.eye(config["hidden_size"]))
    folded, folded_config, _ = fold_norm_gains(state, config)
    with pytest.raises(ValueError, match="must be an orthogonal"):
        apply_rotation(folded, folded_config, 2 * np.eye(config["hidden_size"]))
