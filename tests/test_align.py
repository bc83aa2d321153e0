"""Alignment pieces: the residual map, layer maps, shared-direction stripping, row-set reads."""

from __future__ import annotations

import numpy as np
import pytest
from tests.factories import FAMILIES, make_hf_model

from forebear.align import align_layers, align_residual, strip_shared
from forebear.architectures import Role, resolve
from forebear.formats.memory import MemoryReader


def _resolved(family: str, state: dict[str, np.ndarray], config: dict[str, object]):  # type: ignore[no-untyped-def]
    return resolve(MemoryReader(state), config)


def test_residual_map_recovers_a_planted_rotation() -> None:
    config, state = make_hf_model("llama")
    rng = np.random.default_rng(0)
    hidden = state["model.embed_tokens.weight"].shape[1]
    rotation, _ = np.linalg.qr(rng.normal(size=(hidden, hidden)))
    rotated = dict(state)
    rotated["model.embed_tokens.weight"] = (
        state["model.embed_tokens.weight"].astype(np.float64) @ rotation
    ).astype(np.float32)
    found = align_residual(_resolved("llama", state, config),
                           _resolved("llama", rotated, config), None, None)  # fmt: skip
    assert found is not None and found.source == "token ids (no vocabularies)"
    assert np.abs(found.rotation - rotation).max() < 1e-3
    assert found.fit > 0.999 and not found.identity_like
    same = align_residual(_resolved("llama", state, config),
                          _resolved("llama", state, config), None, None)  # fmt: skip
    assert same is not None and same.identity_like


def test_residual_map_needs_enough_shared_tokens() -> None:
    config, state = make_hf_model("llama")
    narrow = dict(state)
    narrow["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][:10]
    small = dict(config, vocab_size=10)
    assert align_residual(_resolved("llama", state, config),
                          _resolved("llama", narrow, small), None, None) is None  # fmt: skip


def test_layer_map_allows_gaps_repeats_and_going_back() -> None:
    evidence = np.full((5, 4), 1.0)
    for b_layer, a_layer in ((0, 0), (1, 1), (2, 1), (3, 0)):  # b layer 4 is new
        evidence[b_layer, a_layer] = 50.0
    found = align_layers(evidence, threshold=10.0)
    assert found.sources == (0, 1, 1, 0, None)
    assert found.repeated == (0, 1) and found.dropped == (2, 3) and not found.monotone
    assert align_layers(np.full((2, 3), np.nan), 10.0).sources == (None, None)


def test_strip_shared_removes_the_leading_directions() -> None:
    rng = np.random.default_rng(4)
    shared = rng.normal(size=(3, 32))
    rows = rng.normal(size=(200, 3)) @ shared * 10 + rng.normal(size=(200, 32))
    stripped = strip_shared(rows, k=3)
    assert np.abs(stripped.mean(axis=0)).max() < 1e-4  # float32
    _, _, right = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)
    assert np.abs(stripped @ right[:3].T).max() < 1e-3
    kept = strip_shared(rows, k=3, keep=np.array([5, 7]), fit_rows=64)
    assert kept.shape == (2, 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_row_sets_read_exactly_what_whole_reads_hold(family: str) -> None:
    config, state = make_hf_model(family)
    resolved = resolve(MemoryReader(state), config)
    rng = np.random.default_rng(5)
    checked = 0
    for entry in resolved.entries:
        role, layer, expert = entry.key
        if len(role.value.axes) != 2:
            continue
        whole = resolved.read(role, layer, expert)
        rows = rng.choice(whole.shape[0], size=min(5, whole.shape[0]), replace=False)
        rows = np.concatenate([rows, rows[:1]])  # repeats and any order
        np.testing.assert_array_equal(resolved.read_row_set(role, layer, expert, rows=rows),
                                      whole[rows])  # fmt: skip
        assert resolved.shape(role, layer, expert) == whole.shape
        empty = resolved.read_row_set(role, layer, expert, rows=np.array([], dtype=np.int64))
        assert empty.shape == (0, whole.shape[1]) and empty.dtype == whole.dtype
        checked += 1
    assert checked > 0
    if resolved.has(Role.ATTN_NORM, 0):
        np.testing.assert_allclose(
            resolved.norm_scale(Role.ATTN_NORM, 0),
            resolved.read(Role.ATTN_NORM, 0) + resolved.definition.norm_scale_offset,
        )
