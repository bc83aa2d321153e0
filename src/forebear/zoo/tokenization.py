"""The zoo's two byte-level BPE tokenizers, trained with the ``tokenizers`` library.

``bpe-a`` is trained on ``corpus-a`` and ``bpe-b`` (a larger vocabulary) on
``corpus-b``: both start from the same 256 byte symbols and learn merges from
Python code, so their vocabularies overlap partly — what vocabulary-aware
comparisons and the vocabulary swap need. Three special tokens come first
(``<|pad|>`` = 0, ``<|bos|>`` = 1, ``<|eos|>`` = 2) so configs can name them.

A tokenizer is carried as the bytes of its ``tokenizer.json``: that is what a
model folder holds and what the transformations take. This module owns
training, encoding and caching both (tokenizers under ``cache/tokenizers``,
token streams under ``cache/tokens``); it knows nothing of models. (Named ``tokenization`` so
that it never shadows the ``tokenizers`` package.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from forebear.errors import TokenizerError
from forebear.zoo.corpus import Corpus

__all__ = [
    "HELD_OUT",
    "SPECIAL_TOKENS",
    "TOKENIZERS",
    "TokenizerSpec",
    "Tokens",
    "corpus_tokens",
    "encode",
    "load_tokenizer",
    "special_token_ids",
    "train_tokenizer",
    "vocab_size_of",
]

SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|eos|>")
HELD_OUT = 0.05  # the tail of every token stream, never trained on
Tokens = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    corpus: str
    vocab_size: int


TOKENIZERS: Mapping[str, TokenizerSpec] = {
    "bpe-a": TokenizerSpec("bpe-a", "corpus-a", 512),
    "bpe-b": TokenizerSpec("bpe-b", "corpus-b", 640),
}


def train_tokenizer(text: str, vocab_size: int) -> bytes:
    """A byte-level BPE tokenizer of ``vocab_size`` tokens trained on ``text``, as JSON bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # One text per line keeps the trainer's word counts independent of how it batches.
    tokenizer.train_from_iterator(text.splitlines(), trainer=trainer)
    data: str = tokenizer.to_str()
    return data.encode("utf-8")


def _load(tokenizer_json: bytes) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    except Exception as error:  # tokenizers raises a bare Exception on bad JSON
        raise TokenizerError(
            f"the tokenizers library cannot load it ({type(error).__name__})",
            path="tokenizer.json",
            hint="rebuild the zoo's tokenizers with `forebear zoo build`",
        ) from None


def encode(tokenizer_json: bytes, text: str) -> Tokens:
    """Token ids of ``text``, one long stream (lines joined, no special tokens)."""
    tokenizer = _load(tokenizer_json)
    lines = text.split("\n")
    # Encoding line by line (newline kept) is the same stream and lets tokenizers batch.
    pieces = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    ids = [
        token
        for item in tokenizer.encode_batch(pieces, add_special_tokens=False)
        for token in item.ids
    ]
    return np.asarray(ids, dtype=np.int64)


def vocab_size_of(tokenizer_json: bytes) -> int:
    size: int = _load(tokenizer_json).get_vocab_size(with_added_tokens=True)
    return size


def special_token_ids(tokenizer_json: bytes) -> dict[str, int | None]:
    """The config's ``pad/bos/eos_token_id`` for a zoo tokenizer."""
    tokenizer = _load(tokenizer_json)
    keys = ("pad_token_id", "bos_token_id", "eos_token_id")
    return {
        key: tokenizer.token_to_id(token) for key, token in zip(keys, SPECIAL_TOKENS, strict=True)
    }


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_tokenizer(name: str, corpus: Corpus, cache: Path) -> bytes:
    """The zoo tokenizer ``name`` trained on ``corpus`` (its spec's), trained once per cache."""
    spec = TOKENIZERS[name]
    if corpus.name != spec.corpus:
        raise ValueError(f"tokenizer {name} is trained on {spec.corpus}, not {corpus.name}")
    path = cache / "tokenizers" / f"{name}-{corpus.sha256[:16]}-{spec.vocab_size}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(train_tokenizer(corpus.text, spec.vocab_size))
    return path.read_bytes()


def corpus_tokens(corpus: Corpus, tokenizer_json: bytes, cache: Path) -> tuple[Tokens, Tokens]:
    """(training stream, held-out tail) of ``corpus`` under a tokenizer, cached as .npy."""
    path = cache / "tokens" / f"{corpus.sha256[:16]}-{_digest(tokenizer_json)[:16]}.npy"
    if path.is_file():
        stream: Tokens = np.load(path)
    else:
        stream = encode(tokenizer_json, corpus.text)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, stream)
    cut = int(stream.size * (1 - HELD_OUT))
    return stream[:cut], stream[cut:]
