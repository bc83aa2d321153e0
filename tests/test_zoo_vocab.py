"""Vocabulary extension and swap: rows move by token string, old ids keep their rows."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from factories import load_derived, make_hf_model  # noqa: E402
from forebear.errors import TokenizerError  # noqa: E402
from forebear.zoo.transforms.base import REGISTRY, Derived  # noqa: E402
from forebear.zoo.transforms.vocab import vocab_extend, vocab_swap  # noqa: E402

torch.set_num_threads(1)

CORPUS_A = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine stitches",
    "the rain in spain stays mainly in the plain",
    "to be or not to be that is the question",
    "all that glitters is not gold",
    "the early bird catches the worm but the second mouse gets the cheese",
]
CORPUS_B = [
    "the lazy dog sleeps in the sun all day",
    "machine learning models learn from data",
    "the quick brown fox is quick",
    "provenance of models is a question of weights",
]
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


@functools.cache
def tokenizer_json(corpus: tuple[str, ...], size: int) -> bytes:
    """A byte-level BPE trained on ``corpus`` (alphabet: the bytes it uses), specials 0-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    return str(tokenizer.to_str()).encode("utf-8")


OLD = tokenizer_json(tuple(CORPUS_A), 128)  # as many tokens as the factory model has rows
NEW = tokenizer_json(tuple(CORPUS_B), 100)


def vocab(data: bytes) -> dict[str, int]:
    return dict(tokenizers.Tokenizer.from_str(data.decode()).get_vocab(with_added_tokens=True))


def llama(tied: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    config, state = make_hf_model("llama")
    if tied:
        del state[HEAD]
        config["tie_word_embeddings"] = True
    return config, state


def forward(model: Any, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.numpy()


def test_registered_and_tokenizers_as_built() -> None:
    assert {"vocab_extend", "vocab_swap"} <= REGISTRY.keys()
    assert len(vocab(OLD)) == 128 and len(vocab(NEW)) == 100
    assert tokenizer_json.__wrapped__(tuple(CORPUS_A), 128) == OLD  # training is deterministic


# --- swap --------------------------------------------------------------------------------------


def test_vocab_swap_carries_rows_by_token_string(tmp_path: Path) -> None:
    config, state = llama()
    before = {k: v.copy() for k, v in state.items()}
    derived = vocab_swap(
        state, config, np.random.default_rng(0), tokenizer_json=OLD, new_tokenizer_json=NEW
    )
    assert all(np.array_equal(state[k], before[k]) for k in before)
    assert derived.tokenizer_json == NEW and derived.config["vocab_size"] == 100
    old_ids, new_ids = vocab(OLD), vocab(NEW)
    expected = sorted([new_ids[t], old_ids[t]] for t in new_ids.keys() & old_ids.keys())
    assert derived.maps["pairs"] == expected
    assert any(n != o for n, o in expected)  # ids differ, rows follow the strings
    for name in (EMBED, HEAD):
        new, old = derived.state[name], state[name]
        assert new.shape == (100, config["hidden_size"])
        for n, o in expected:
            assert np.array_equal(new[n], old[o])
        fresh = sorted(set(range(100)) - {n for n, _ in expected})
        assert fresh and not any(np.array_equal(new[i], old[i]) for i in fresh[:5])
    assert derived.maps["token_ids"] == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    assert json.loads(json.dumps(derived.maps)) == derived.maps
    logits = forward(load_derived(derived, tmp_path), [1, 50, 99, 2])
    assert logits.shape == (1, 4, 100)


def test_vocab_swap_tied_head_and_seeded(tmp_path: Path) -> None:
    config, state = llama(tied=True)
    a = vocab_swap(
        state, config, np.random.default_rng(5), tokenizer_json=OLD, new_tokenizer_json=NEW
    )
    b = vocab_swap(
        state, config, np.random.default_rng(5), tokenizer_json=OLD, new_tokenizer_json=NEW
    )
    c = vocab_swap(
        state, config, np.random.default_rng(6), tokenizer_json=OLD, new_tokenizer_json=NEW
    )
    assert HEAD not in a.state and np.array_equal(a.state[EMBED], b.state[EMBED])
    assert not np.array_equal(a.state[EMBED], c.state[EMBED])
    model = load_derived(a, tmp_path)
    assert np.array_equal(model.lm_head.weight.detach().numpy(), a.state[EMBED])
    forward(model, [0, 99])


def test_vocab_swap_refuses_a_broken_tokenizer() -> None:
    config, state = llama()
    with pytest.raises(TokenizerError, match=r"new tokenizer\.json: not valid JSON"):
        vocab_swap(
            state, config, np.random.default_rng(0), tokenizer_json=OLD, new_tokenizer_json=b"{"
        )


# --- extend ------------------------------------------------------------------------------------


def test_vocab_extend_keeps_old_rows_and_ids(tmp_path: Path) -> None:
    config, state = llama()
    before = {k: v.copy() for k, v in state.items()}
    derived = vocab_extend(
        state,
        config,
        np.random.default_rng(0),
        tokenizer_json=OLD,
        tokens=["provenance", "Ġthe", "fox"],
    )
    assert all(np.array_equal(state[k], before[k]) for k in before)
    old_ids, new_ids = vocab(OLD), vocab(derived.tokenizer_json or b"")
    assert all(new_ids[t] == i for t, i in old_ids.items())
    # "Ġthe" is already a token of the byte-level BPE: only genuinely new tokens are added.
    assert derived.maps["new_ids"] == {"provenance": 128, "fox": 129}
    size = 130
    assert derived.config["vocab_size"] == size
    for name in (EMBED, HEAD):
        assert derived.state[name].shape == (size, config["hidden_size"])
        assert np.array_equal(derived.state[name][:128], state[name])
        mean = state[name].mean(axis=0)
        spread = float(state[name].std())
        assert np.abs(derived.state[name][128] - mean).max() < 6 * 0.1 * spread
    encoded = tokenizers.Tokenizer.from_str(derived.tokenizer_json.decode()).encode("provenance")
    assert encoded.ids == [128]
    assert forward(load_derived(derived, tmp_path), [1, 128, 2]).shape == (1, 3, size)


def test_vocab_extend_from_corpus_is_deterministic() -> None:
    config, state = llama(tied=True)
    corpus = CORPUS_B * 2 + ["weights weights models"]

    def run(seed: int) -> Derived:
        return vocab_extend(
            state, config, np.random.default_rng(seed), tokenizer_json=OLD, corpus=corpus, count=3
        )

    a, b = run(1), run(1)
    # Counts: models 5, then of / quick / weights 4 each (alphabetical); "the" is one token.
    assert a.maps["new_ids"] == {"models": 128, "of": 129, "quick": 130}
    assert a.maps == b.maps and a.tokenizer_json == b.tokenizer_json
    assert np.array_equal(a.state[EMBED], b.state[EMBED]) and HEAD not in a.state
    assert not np.array_equal(a.state[EMBED], run(2).state[EMBED])


def test_vocab_extend_refusals() -> None:
    config, state = llama()
    with pytest.raises(ValueError, match="no new tokens: every chosen token is already"):
        vocab_extend(state, config, np.random.default_rng(0), tokenizer_json=OLD, tokens=["<s>"])
    with pytest.raises(TokenizerError, match="the tokenizers library cannot load it"):
        vocab_extend(state, config, np.random.default_rng(0), tokenizer_json=b"\xff", tokens=["x"])
