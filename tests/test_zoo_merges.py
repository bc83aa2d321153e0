"""Merges (linear, SLERP, TIES): known answers on hand-made arrays; merged models still load."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from factories import make_hf_model
from forebear.errors import ArchitectureError
from forebear.zoo.transforms.base import REGISTRY
from forebear.zoo.transforms.merges import (
    merge_dare_ties,
    merge_linear,
    merge_slerp,
    merge_ties,
    slerp,
    ties,
)

torch.set_num_threads(1)

CONFIG: dict[str, Any] = {"model_type": "toy"}


def _state(**arrays: list[float]) -> dict[str, np.ndarray]:
    return {name: np.array(values, dtype=np.float32) for name, values in arrays.items()}


def test_merges_are_registered_under_their_manifest_names() -> None:
    assert REGISTRY["merge_linear"] is merge_linear
    assert REGISTRY["merge_slerp"] is merge_slerp
    assert REGISTRY["merge_ties"] is merge_ties
    assert REGISTRY["merge_dare_ties"] is merge_dare_ties


# ---------------------------------------------------------------- linear


def test_linear_of_two_is_the_midpoint_and_keeps_the_dtype() -> None:
    a, b = _state(w=[0.0, 2.0, -4.0]), _state(w=[2.0, 4.0, 4.0])
    derived = merge_linear([a, b], [CONFIG, CONFIG])
    np.testing.assert_array_equal(derived.state["w"], [1.0, 3.0, 0.0])
    assert derived.state["w"].dtype == np.float32
    assert derived.params == {"weights": [0.5, 0.5]}
    assert derived.maps == {"parents": [0, 1]}
    assert derived.transformation == "merge_linear"
    np.testing.assert_array_equal(a["w"], [0.0, 2.0, -4.0])  # inputs untouched


def test_linear_weights_are_applied() -> None:
    a, b = _state(w=[1.0, 0.0]), _state(w=[0.0, 1.0])
    derived = merge_linear([a, b], [CONFIG, CONFIG], weights=[0.25, 0.75])
    np.testing.assert_allclose(derived.state["w"], [0.25, 0.75])


def test_linear_weights_must_sum_to_one() -> None:
    a, b = _state(w=[1.0]), _state(w=[2.0])
    with pytest.raises(ValueError, match="merge weights must be finite and sum to 1"):
        merge_linear([a, b], [CONFIG, CONFIG], weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="3 weights for 2 models"):
        merge_linear([a, b], [CONFIG, CONFIG], weights=[0.2, 0.3, 0.5])


def test_models_of_different_architectures_are_refused() -> None:
    a = _state(w=[1.0, 2.0], b=[0.0])
    with pytest.raises(
        ArchitectureError, match="models to merge differ: b is missing from model 1"
    ):
        merge_linear([a, _state(w=[1.0, 2.0])], [CONFIG, CONFIG])
    with pytest.raises(ArchitectureError, match=r"w is \(3,\) in model 1 but \(2,\) in model 0"):
        merge_linear([a, _state(w=[1.0, 2.0, 3.0], b=[0.0])], [CONFIG, CONFIG])
    with pytest.raises(ArchitectureError, match="c is extra"):
        merge_slerp([a, {**a, "c": np.zeros(1, np.float32)}], [CONFIG, CONFIG])
    with pytest.raises(ValueError, match="at least 2 models"):
        merge_linear([a], [CONFIG])


# ---------------------------------------------------------------- SLERP


def test_slerp_endpoints_are_the_models() -> None:
    rng = np.random.default_rng(0)
    first, second = rng.standard_normal(10), rng.standard_normal(10)
    np.testing.assert_allclose(slerp(0.0, first, second), first, atol=1e-12)
    np.testing.assert_allclose(slerp(1.0, first, second), second, atol=1e-12)


def test_slerp_of_unit_vectors_stays_on_the_sphere() -> None:
    first, second = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.6, 0.8])
    for t in (0.25, 0.5, 0.9):
        assert np.linalg.norm(slerp(t, first, second)) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(slerp(0.5, first, second), (first + second) / np.sqrt(2))
    # A linear merge would shrink the norm to 1/√2 at the midpoint.
    assert np.linalg.norm((first + second) / 2) == pytest.approx(np.sqrt(0.5))


def test_slerp_of_nearly_colinear_tensors_is_linear() -> None:
    first = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(slerp(0.3, first, 2 * first), 0.7 * first + 0.6 * first)


def test_merge_slerp_is_per_tensor_and_takes_exactly_two_models() -> None:
    a = _state(u=[1.0, 0.0], v=[2.0, 0.0])
    b = _state(u=[0.0, 1.0], v=[4.0, 0.0])
    derived = merge_slerp([a, b], [CONFIG, CONFIG], t=0.5)
    np.testing.assert_allclose(derived.state["u"], [np.sqrt(0.5)] * 2, rtol=1e-6)
    np.testing.assert_allclose(derived.state["v"], [3.0, 0.0])  # colinear: lerp
    assert derived.params == {"t": 0.5}
    with pytest.raises(ValueError, match="SLERP merges exactly two models"):
        merge_slerp([a, b, a], [CONFIG] * 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        merge_slerp([a, b], [CONFIG] * 2, t=1.5)


# ---------------------------------------------------------------- TIES


def test_ties_trims_elects_the_sign_by_mass_and_averages_the_agreeing() -> None:
    first = np.array([3.0, -1.0, 0.5, 2.0])
    second = np.array([-1.0, -2.0, 0.4, -3.0])
    # Density 0.5 keeps two entries each: [3, 0, 0, 2] and [0, -2, 0, -3]. Entry 3: the
    # sum -1 elects minus, so the +2 is dropped; entry 2 was trimmed from both.
    np.testing.assert_array_equal(ties([first, second], 0.5), [3.0, -2.0, 0.0, -3.0])


def test_ties_disjoint_mean_divides_by_the_agreeing_models_only() -> None:
    deltas = [np.array([1.0, 0.0]), np.array([3.0, 0.0]), np.array([-1.0, 0.0])]
    np.testing.assert_array_equal(ties(deltas, 1.0), [2.0, 0.0])


def test_merge_ties_adds_the_scaled_merged_task_vector_to_the_base() -> None:
    base = _state(w=[1.0, 1.0, 1.0, 1.0])
    a = _state(w=[4.0, 0.0, 1.5, 3.0])
    b = _state(w=[0.0, -1.0, 1.4, -2.0])
    derived = merge_ties([a, b], [CONFIG, CONFIG], base=base, density=0.5, **{"lambda": 0.5})
    np.testing.assert_allclose(derived.state["w"], [2.5, 0.0, 1.0, -0.5])
    assert derived.params == {"density": 0.5, "lambda": 0.5}
    with pytest.raises(ValueError, match="pass the common base as base="):
        merge_ties([a, b], [CONFIG, CONFIG])
    with pytest.raises(ArchitectureError, match="missing from the base"):
        merge_ties([a, b], [CONFIG, CONFIG], base=_state(v=[0.0]))
    with pytest.raises(ValueError, match=r"density must lie in \(0, 1\]"):
        merge_ties([a, b], [CONFIG, CONFIG], base=base, density=0.0)


def test_dare_ties_elects_a_sign_and_divides_by_the_agreeing_weights() -> None:
    """Density 1 keeps every value, so only the vote and the normalisation act: weights 1
    and 3; per value the sign of 1·a + 3·b wins, the agreeing weighted values are summed and
    divided by their weights' sum (mergekit's dare_ties with normalize)."""
    base = _state(w=[0.0, 0.0, 0.0, 0.0])
    a = _state(w=[2.0, 2.0, -1.0, 0.0])
    b = _state(w=[4.0, -1.0, 1.0, 0.0])
    derived = merge_dare_ties([a, b], [CONFIG, CONFIG], base=base, density=1.0,
                              weights=[1.0, 3.0])  # fmt: skip
    # [both +: (2 + 12) / 4, vote 2 − 3 < 0: b alone, vote −1 + 3 > 0: b alone, none]
    np.testing.assert_allclose(derived.state["w"], [3.5, -1.0, 1.0, 0.0])
    halved = merge_dare_ties([a, b], [CONFIG, CONFIG], base=base, density=0.5,
                             weights=[1.0, 3.0], rng=np.random.default_rng(0))  # fmt: skip
    kept = set(np.round(halved.state["w"], 6).tolist())
    assert kept <= {7.0, 4.0, 8.0, -2.0, 2.0, 0.0}  # every value: a kept set's outcome
    with pytest.raises(ValueError, match="positive weights"):
        merge_dare_ties([a, b], [CONFIG, CONFIG], base=base, weights=[1.0, 0.0])


# ---------------------------------------------------------------- real models


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("merge_linear", {}),
        ("merge_slerp", {"t": 0.3}),
        ("merge_ties", {"density": 0.3}),
        ("merge_dare_ties", {"density": 0.3}),
    ],
)
def test_merged_llamas_load_into_transformers(name: str, params: dict[str, Any]) -> None:
    import transformers

    config, first = make_hf_model("llama", seed=1)
    _, second = make_hf_model("llama", seed=2)
    _, base = make_hf_model("llama", seed=3)
    derived = REGISTRY[name](
        [first, second], [config, config], base=base, rng=np.random.default_rng(0), **params
    )
    assert set(derived.state) == set(first)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig.from_dict(derived.config))
    tensors = {key: torch.from_numpy(value) for key, value in derived.state.items()}
    model.load_state_dict(tensors, strict=True)
    with torch.no_grad():
        logits = model(torch.tensor([[3, 5, 7, 11]])).logits
    assert torch.isfinite(logits).all()
    merged = derived.state["model.layers.0.mlp.up_proj.weight"]
    assert not np.allclose(merged, first["model.layers.0.mlp.up_proj.weight"])
    assert not np.allclose(merged, second["model.layers.0.mlp.up_proj.weight"])
