"""Tokenizer vocabularies: token strings by id, normalised so two tokenizers align by string.

Owns the public vocabulary API: reading a model's vocabulary (BERT ``vocab.txt``, SentencePiece
``.model``, GPT-2 ``vocab.json`` + ``merges.txt``, GGUF ``tokenizer.ggml.*`` metadata, and
``tokenizer.json`` through ``tokenizer_json``), choosing the file in a model folder, and
``shared_tokens``. It defines the one normalised form that makes vocabularies of different
tokenizer families comparable (the record, normalisers and builder live in the private
``_vocabulary_base``). It does not tokenise text and does not align embeddings (``align/``
does, from ``shared_tokens``).

The normalised form of a token is one of:

* ``bytes`` — the token's **surface text** as UTF-8 (or raw bytes for tokens that are only
  part of a UTF-8 sequence), with a word-initial marker written as a leading space ``b" "``:
  byte-level BPE characters map back through GPT-2's ``bytes_to_unicode`` table (``Ġ`` → space,
  ``Ċ`` → newline); SentencePiece ``▁`` becomes a space and a byte-fallback piece ``<0x0A>``
  becomes the byte ``0x0A``; a WordPiece continuation ``##ing`` becomes ``ing`` and a
  word-initial piece ``the`` becomes `` the`` (BERT words are separated by spaces). So GPT-2's
  ``Ġthe``, Llama's ``▁the`` and BERT's ``the`` all normalise to ``b" the"``.
* ``str`` — a **special token** (control, unknown, unused, or an added token flagged special),
  kept as its literal text (``"<s>"``, ``"[CLS]"``). Being ``str``, it can never equal a text
  token, while ``<s>`` of one model still aligns with ``<s>`` of another. WordPiece tokens
  written ``[...]`` are special by BERT's convention (the one llama.cpp's converter also uses).
* ``""`` — a **gap**: an id no token uses. Gaps, and tokens with empty surface text, never align.

Several ids may share a normalised form (a byte-fallback piece and the one-character piece
for the same byte); ``id_of`` then prefers the non-byte token, then the lowest id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forebear.architectures._vocabulary_base import (
    _NORMAL,
    _USER_DEFINED,
    MAX_VOCABULARY_SIZE,
    Form,
    Normaliser,
    Vocabulary,
    _Builder,
    _fail,
    _from_byte_level,
    _from_sentencepiece,
    _phantom_space,
    _utf8,
    _wordpiece,
)
from forebear.architectures.sentencepiece_model import parse_sentencepiece_model
from forebear.architectures.tokenizer_json import (
    _add_dict_vocab,
    _parse_json,
    vocabulary_from_tokenizer_json,
)
from forebear.errors import LimitExceededError, TokenizerError
from forebear.sources.base import Location

__all__ = [
    "MAX_TOKENIZER_BYTES",
    "MAX_VOCABULARY_SIZE",
    "Form",
    "Vocabulary",
    "load_vocabulary",
    "shared_tokens",
    "vocabulary_from_gguf",
    "vocabulary_from_sentencepiece_model",
    "vocabulary_from_tokenizer_json",
    "vocabulary_from_vocab_json",
    "vocabulary_from_vocab_txt",
]

MAX_TOKENIZER_BYTES = 256 * 1024 * 1024
_SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def shared_tokens(a: Vocabulary, b: Vocabulary) -> list[tuple[int, int]]:
    """Pairs ``(id in a, id in b)`` with equal normalised forms, one per form, by a's id."""
    other = b._index
    return sorted((ident, other[form]) for form, ident in a._index.items() if form in other)


# ---------------------------------------------------------------- other files


def vocabulary_from_vocab_txt(data: bytes, source: str) -> Vocabulary:
    """Read a BERT ``vocab.txt``: one WordPiece token per line, the id is the line number."""
    text = _decode(data, source)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    builder = _Builder(source)
    normalise = _wordpiece("##")
    for ident, raw in enumerate(lines):
        if raw:
            builder.add(ident, raw, normalise(raw))
    return builder.build("wordpiece")


def vocabulary_from_vocab_json(data: bytes, source: str) -> Vocabulary:
    """Read a GPT-2 style ``vocab.json`` (token → id) of a byte-level BPE."""
    builder = _Builder(source)
    _add_dict_vocab(builder, _parse_json(data, source), _from_byte_level, fallback=False)
    return builder.build("byte_bpe")


def vocabulary_from_sentencepiece_model(data: bytes, source: str) -> Vocabulary:
    """Read a SentencePiece ``.model`` protobuf; the kind is ``sentencepiece_<model type>``."""
    model = parse_sentencepiece_model(data, source)
    builder = _Builder(source)
    for ident, piece in enumerate(model.pieces):
        builder.add_piece(ident, piece.text, piece.kind, _from_sentencepiece)
    return builder.build(f"sentencepiece_{model.model_type}")


_GGUF_SCHEMES: dict[str, Normaliser] = {
    "gpt2": _from_byte_level,
    "llama": _from_sentencepiece,
    "t5": _from_sentencepiece,
    "bert": _phantom_space,
}


def vocabulary_from_gguf(metadata: Mapping[str, Any], source: str) -> Vocabulary | None:
    """Read ``tokenizer.ggml.*`` metadata; None when the GGUF file carries no vocabulary."""
    model = metadata.get("tokenizer.ggml.model")
    tokens = _as_list(metadata.get("tokenizer.ggml.tokens"))
    if model in (None, "none", "no_vocab") or tokens is None:
        return None
    if model not in _GGUF_SCHEMES:
        raise TokenizerError(
            f"GGUF tokenizer model {model!r} is not supported",
            path=source,
            hint="compare without vocabulary alignment",
        )
    types = _as_list(metadata.get("tokenizer.ggml.token_type"))
    if types is None:
        types = [_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise _fail(f"{len(tokens)} tokens but {len(types)} token types", source)
    builder = _Builder(source)
    scheme = _GGUF_SCHEMES[model]
    # User-defined (added) tokens hold literal text: no byte-level characters, no "##"/"[...]".
    literal: Normaliser = _utf8 if model == "gpt2" else _from_sentencepiece
    for ident, (raw, kind) in enumerate(zip(tokens, types, strict=True)):
        text = _token_text(raw, ident, source)
        builder.add_piece(ident, text, kind, literal if kind == _USER_DEFINED else scheme)
    return builder.build(f"gguf-{model}")


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value) if isinstance(value, list | tuple) else None


def _token_text(raw: Any, ident: int, source: str) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "surrogateescape")  # as forebear's GGUF reader does
    if not isinstance(raw, str):
        raise _fail(f"token {ident} is {type(raw).__name__}, expected a string", source)
    return raw


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _fail(f"not valid UTF-8 at byte {error.start}", source) from None


# ---------------------------------------------------------------- model folders


def load_vocabulary(location: Location, *, limit: int = MAX_TOKENIZER_BYTES) -> Vocabulary | None:
    """The vocabulary of a model folder, or None when it holds no tokenizer file.

    Preference: ``tokenizer.json``, ``vocab.txt``, a SentencePiece ``.model``, then
    ``vocab.json`` with ``merges.txt``. Files over ``limit`` bytes raise ``TokenizerError``.
    """
    if location.exists("tokenizer.json"):
        return vocabulary_from_tokenizer_json(*_read(location, "tokenizer.json", limit))
    if location.exists("vocab.txt"):
        return vocabulary_from_vocab_txt(*_read(location, "vocab.txt", limit))
    for name in _SENTENCEPIECE_FILES:
        if location.exists(name):
            return vocabulary_from_sentencepiece_model(*_read(location, name, limit))
    if location.exists("vocab.json") and location.exists("merges.txt"):
        return vocabulary_from_vocab_json(*_read(location, "vocab.json", limit))
    return None


def _read(location: Location, relpath: str, limit: int) -> tuple[bytes, str]:
    source = f"{location.name.rstrip('/')}/{relpath}"
    try:
        return location.read_bytes(relpath, limit), source
    except LimitExceededError:
        raise TokenizerError(
            f"over the {limit}-byte limit for a tokenizer file",
            path=source,
            hint="the file is not what its name says; remove it or compare without vocabulary",
        ) from None
