"""Vocabulary changes: extend a tokenizer with new tokens, or swap it for another one.

Owns two registered transformations that change the token axis of a model: the
token embedding, an untied output head and its bias (found by role, cut along
their declared ``vocab`` axis), and the tokenizer itself (``tokenizer.json``
bytes in and out). Rows of tokens that survive keep their values exactly; rows
of new tokens start at the mean of the existing rows plus seeded noise, as
``resize_token_embeddings`` users commonly do. ``vocab_swap`` carries rows over
by token string through forebear's normalised vocabularies (``shared_tokens``).
It does not tokenise corpora for training (the zoo builder does).
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from forebear.architectures import Axis, ResolvedModel, Role
from forebear.architectures.vocabulary import shared_tokens, vocabulary_from_tokenizer_json
from forebear.errors import TokenizerError, UnsupportedFormatError
from forebear.formats.base import Array
from forebear.zoo.transforms.base import Derived, State, copy_state, register
from forebear.zoo.transforms.reparam import resolve_state
from forebear.zoo.transforms.surgery import set_config_dim

__all__ = ["resize_vocabulary", "vocab_extend", "vocab_swap"]

_VOCAB_ROLES = (Role.EMBED_TOKENS, Role.LM_HEAD, Role.LM_HEAD_BIAS)
# Config ids that name tokens; they must follow the tokens to the new tokenizer.
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rebuild(
    array: Array,
    axis: int,
    size: int,
    carry: Sequence[tuple[int, int]],
    rng: np.random.Generator,
    noise: float,
) -> Array:
    """``size`` rows along ``axis``: row ``new`` = old row ``old`` for each carried pair,
    every other row the mean of the old rows plus Gaussian noise of ``noise`` × their std."""
    old = np.moveaxis(array, axis, 0).astype(np.float64)
    mean, spread = old.mean(axis=0), float(old.std())
    fresh = mean + rng.normal(0.0, noise * spread, (size, *old.shape[1:]))
    out = fresh.astype(array.dtype)
    if carry:
        new_ids, old_ids = (np.asarray(ids) for ids in zip(*carry, strict=True))
        out[new_ids] = np.moveaxis(array, axis, 0)[old_ids]
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def resize_vocabulary(
    state: State,
    config: Mapping[str, Any],
    size: int,
    carry: Sequence[tuple[int, int]],
    rng: np.random.Generator,
    noise: float,
) -> tuple[State, dict[str, Any]]:
    """New embedding / head rows (``carry`` = (new id, old id) pairs kept exactly) and config.

    A tied head follows the embedding, so only the embedding is rebuilt.
    """
    resolved = resolve_state(state, config)
    out = copy_state(state)
    for entry in resolved.entries:
        if entry.role not in _VOCAB_ROLES:
            continue
        if entry.cut is not None or entry.expert_index is not None or entry.transposed:
            raise UnsupportedFormatError(
                f"{entry.tensor}: a fused or transposed {entry.role.role_name} cannot be resized",
                hint="save the model with a plain token embedding first",
            )
        axis = entry.role.axes.index(Axis.VOCAB)
        out[entry.tensor] = _rebuild(state[entry.tensor], axis, size, carry, rng, noise)
    new_config = copy.deepcopy(dict(config))
    set_config_dim(new_config, resolved.definition, "vocab", size)
    return out, new_config


def _rows(resolved: ResolvedModel) -> int:
    embedding = resolved.entry(Role.EMBED_TOKENS)
    shape = resolved.reader.tensors()[embedding.tensor].shape
    return int(shape[Role.EMBED_TOKENS.axes.index(Axis.VOCAB)])


def _tokenizer(data: bytes, source: str) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as error:  # tokenizers raises a bare Exception; bad UTF-8 a ValueError
        raise TokenizerError(
            f"the tokenizers library cannot load it ({type(error).__name__})",
            path=source,
            hint="pass the bytes of a tokenizer.json that transformers can load",
        ) from None


def _frequent_words(tokenizer: Any, corpus: Iterable[str], count: int) -> list[str]:
    """The ``count`` most frequent words of ``corpus`` that the tokenizer splits into pieces."""
    counts = Counter(word for text in corpus for word in text.split())
    split = [w for w in counts if len(tokenizer.encode(w, add_special_tokens=False).ids) > 1]
    return sorted(split, key=lambda w: (-counts[w], w))[:count]


@register("vocab_extend")
def vocab_extend(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator,
    *,
    tokenizer_json: bytes,
    tokens: Sequence[str] = (),
    corpus: Sequence[str] = (),
    count: int = 0,
    noise: float = 0.1,
) -> Derived:
    """Add tokens to the tokenizer and rows for them; every old id and row stays as it was.

    The new tokens are ``tokens``, or else the ``count`` most frequent words of
    ``corpus`` that the tokenizer splits (ties broken alphabetically), added as
    ``tokenizers`` added tokens. ``maps["new_ids"]`` maps each new token to its id.
    """
    tokenizer = _tokenizer(tokenizer_json, "tokenizer.json")
    chosen = list(tokens) if tokens else _frequent_words(tokenizer, corpus, count)
    fresh = [t for t in dict.fromkeys(chosen) if tokenizer.token_to_id(t) is None]
    if not fresh:
        raise ValueError("no new tokens: every chosen token is already in the vocabulary")
    tokenizer.add_tokens(fresh)
    new_ids = {token: int(tokenizer.token_to_id(token)) for token in fresh}
    rows = _rows(resolve_state(state, config))
    size = max(rows, tokenizer.get_vocab_size(with_added_tokens=True))
    # Rows past the old tokenizer (padding) held no token; new tokens may land there.
    carry = [(i, i) for i in range(rows) if i not in set(new_ids.values())]
    new_state, new_config = resize_vocabulary(state, config, size, carry, rng, noise)
    return Derived(
        state=new_state,
        config=new_config,
        transformation="vocab_extend",
        params={"tokens": fresh, "noise": noise, "tokenizer_sha256": _digest(tokenizer_json)},
        maps={"new_ids": new_ids},
        tokenizer_json=tokenizer.to_str().encode("utf-8"),
    )


def _remap_token_ids(config: dict[str, Any], old_to_new: Mapping[int, int]) -> dict[str, Any]:
    moved: dict[str, Any] = {}
    for key in _TOKEN_ID_KEYS:
        old = config.get(key)
        if isinstance(old, int) and not isinstance(old, bool):
            config[key] = moved[key] = old_to_new.get(old)
    return moved


@register("vocab_swap")
def vocab_swap(
    state: State,
    config: dict[str, Any],
    rng: np.random.Generator,
    *,
    tokenizer_json: bytes,
    new_tokenizer_json: bytes,
    noise: float = 0.1,
) -> Derived:
    """Replace the tokenizer by ``new_tokenizer_json``; rows move by token string.

    A new token whose normalised string the old tokenizer also has gets that
    token's rows exactly; the others start at the mean plus noise.
    ``maps["pairs"]`` lists ``[new_id, old_id]``; config token ids follow their tokens
    (``None`` when the new tokenizer lacks the token).
    """
    old = vocabulary_from_tokenizer_json(tokenizer_json, "tokenizer.json")
    new = vocabulary_from_tokenizer_json(new_tokenizer_json, "new tokenizer.json")
    rows = _rows(resolve_state(state, config))
    pairs = [(n, o) for n, o in shared_tokens(new, old) if o < rows]
    size = max(new.size, 1)
    new_state, new_config = resize_vocabulary(state, config, size, pairs, rng, noise)
    special = _remap_token_ids(new_config, {o: n for n, o in pairs})
    return Derived(
        state=new_state,
        config=new_config,
        transformation="vocab_swap",
        params={
            "noise": noise,
            "tokenizer_sha256": _digest(tokenizer_json),
            "new_tokenizer_sha256": _digest(new_tokenizer_json),
        },
        maps={"pairs": [[n, o] for n, o in pairs], "token_ids": special},
        tokenizer_json=new_tokenizer_json,
    )
