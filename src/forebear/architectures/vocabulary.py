"""Tokenizer vocabularies: token strings by id, normalised so two tokenizers align by string.

Owns reading a model's vocabulary (``tokenizer.json``, BERT ``vocab.txt``, SentencePiece
``.model``, GPT-2 ``vocab.json`` + ``merges.txt``, GGUF ``tokenizer.ggml.*`` metadata) and the
one normalised form that makes vocabularies of different tokenizer families comparable. It
does not tokenise text and does not align embeddings (``align/`` does, from ``shared_tokens``).

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

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from forebear.architectures.sentencepiece_model import parse_sentencepiece_model
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

Form = bytes | str
"""A normalised token: surface bytes, a special token's literal ``str``, or ``""`` for a gap."""

MAX_TOKENIZER_BYTES = 256 * 1024 * 1024
# Real vocabularies stay below ~1M ids; ids are also refused when gaps outnumber tokens.
MAX_VOCABULARY_SIZE = 1 << 24

_SPACE_MARK = "\u2581"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_HINT = "re-download the tokenizer files, or compare without vocabulary alignment"
_SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")

# Token types shared by SentencePiece's proto and GGUF (gguf.TokenType).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

Normaliser = Callable[[str], Form]


@dataclass(frozen=True)
class Vocabulary:
    """A tokenizer's tokens by id, with one normalised form per id (see the module docstring)."""

    kind: str
    source: str
    tokens: tuple[str, ...]
    normalized: tuple[Form, ...]
    special: frozenset[int]
    gaps: frozenset[int]
    byte_tokens: frozenset[int]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def id_of(self, form: Form) -> int | None:
        """The id whose normalised form is ``form``, or None; gaps and ``b""`` are never found."""
        return self._index.get(form)

    @cached_property
    def _index(self) -> dict[Form, int]:
        index: dict[Form, int] = {}
        for ident, form in enumerate(self.normalized):
            if not form:
                continue
            held = index.get(form)
            if held is None or (held in self.byte_tokens and ident not in self.byte_tokens):
                index[form] = ident
        return index


def shared_tokens(a: Vocabulary, b: Vocabulary) -> list[tuple[int, int]]:
    """Pairs ``(id in a, id in b)`` with equal normalised forms, one per form, by a's id."""
    other = b._index
    return sorted((ident, other[form]) for form, ident in a._index.items() if form in other)


# ---------------------------------------------------------------- normalisation


@lru_cache(maxsize=1)
def _byte_level_table() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode``, inverted: printable bytes are themselves, the rest 256+n."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(byte): byte for byte in printable}
    shifted = sorted(set(range(256)) - set(printable))
    table.update({chr(256 + n): byte for n, byte in enumerate(shifted)})
    return table


def _utf8(text: str) -> bytes:
    # The GGUF reader keeps stray token bytes as surrogate escapes: give those bytes back. JSON
    # may carry other lone surrogates; keep such a token distinct rather than fail the vocabulary.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


@lru_cache(maxsize=1)
def _byte_level_translation() -> dict[int, str]:
    """The table as ``str.translate`` input; other Latin-1 characters force the slow path."""
    translation = {ord(char): chr(byte) for char, byte in _byte_level_table().items()}
    translation.update({code: "\U0010ffff" for code in range(256) if code not in translation})
    return translation


def _from_byte_level(token: str) -> bytes:
    try:  # fast path: every character is one of the 256 byte characters
        return token.translate(_byte_level_translation()).encode("latin-1")
    except UnicodeEncodeError:
        pass
    table = _byte_level_table()
    out = bytearray()
    for char in token:
        byte = table.get(char)
        out += _utf8(char) if byte is None else bytes((byte,))
    return bytes(out)


def _from_sentencepiece(token: str) -> bytes:
    return _utf8(token.replace(_SPACE_MARK, " "))


def _bracketed(token: str) -> bool:
    return len(token) >= 3 and token.startswith("[") and token.endswith("]")


def _wordpiece(prefix: str) -> Normaliser:
    def normalise(token: str) -> Form:
        if _bracketed(token):
            return token
        if prefix and token.startswith(prefix):
            return _utf8(token[len(prefix) :])
        return b" " + _utf8(token)

    return normalise


def _phantom_space(token: str) -> Form:
    """llama.cpp's GGUF form of WordPiece: ``▁`` marks a word start, ``[...]`` stays literal."""
    return token if _bracketed(token) else _from_sentencepiece(token)


def _literal(suffix: str) -> Normaliser:
    def normalise(token: str) -> Form:
        if suffix and token.endswith(suffix) and len(token) > len(suffix):
            return _utf8(token[: -len(suffix)]) + b" "
        return _utf8(token)

    return normalise


def _byte_of(token: str) -> bytes | None:
    match = _BYTE_PIECE.fullmatch(token)
    return None if match is None else bytes((int(match.group(1), 16),))


# ---------------------------------------------------------------- assembly


def _fail(message: str, source: str) -> TokenizerError:
    return TokenizerError(message, path=source, hint=_HINT)


class _Builder:
    """Collects ``id → (raw, form)`` and checks ids before anything is sized from them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.entries: dict[int, tuple[str, Form]] = {}
        self.byte_tokens: set[int] = set()

    def add(self, ident: object, raw: str, form: Form, *, replace: bool = False) -> None:
        if isinstance(ident, bool) or not isinstance(ident, int) or ident < 0:
            raise _fail(
                f"token {raw!r} has id {ident!r}, expected a non-negative integer", self.source
            )
        if ident >= MAX_VOCABULARY_SIZE:
            raise _fail(
                f"token {raw!r} has id {ident}, over the limit of {MAX_VOCABULARY_SIZE}",
                self.source,
            )
        held = self.entries.get(ident)
        if held is not None and not replace:
            raise _fail(f"id {ident} is given to both {held[0]!r} and {raw!r}", self.source)
        self.entries[ident] = (raw, form)
        self.byte_tokens.discard(ident)

    def add_piece(self, ident: int, raw: str, kind: int, normalise: Normaliser) -> None:
        """Add a SentencePiece / GGUF piece by its token type (NORMAL, CONTROL, BYTE, …)."""
        if kind == _BYTE:
            byte = _byte_of(raw)
            if byte is None:
                raise _fail(
                    f"token {ident} has type BYTE but its text {raw!r} is not <0xXX>", self.source
                )
            self.add(ident, raw, byte)
            self.byte_tokens.add(ident)
        elif kind in (_UNKNOWN, _CONTROL, _UNUSED):
            self.add(ident, raw, raw)
        elif kind in (_NORMAL, _USER_DEFINED):
            self.add(ident, raw, normalise(raw))
        else:
            raise _fail(f"token {ident} has type {kind!r}, which is not a token type", self.source)

    def build(self, kind: str) -> Vocabulary:
        if not self.entries:
            raise _fail("the tokenizer holds no tokens", self.source)
        size = max(self.entries) + 1
        if size - len(self.entries) > max(len(self.entries), 4096):
            raise _fail(
                f"ids run to {size - 1} but only {len(self.entries)} tokens are defined",
                self.source,
            )
        empty: tuple[str, Form] = ("", "")
        rows = [self.entries.get(ident, empty) for ident in range(size)]
        return Vocabulary(
            kind=kind,
            source=self.source,
            tokens=tuple(raw for raw, _ in rows),
            normalized=tuple(form for _, form in rows),
            special=frozenset(
                i for i, (_, form) in enumerate(rows) if isinstance(form, str) and form
            ),
            gaps=frozenset(i for i in range(size) if i not in self.entries),
            byte_tokens=frozenset(self.byte_tokens),
        )


# ---------------------------------------------------------------- tokenizer.json


def vocabulary_from_tokenizer_json(data: bytes, source: str) -> Vocabulary:
    """Read a Hugging Face ``tokenizer.json`` (BPE, WordPiece, Unigram or WordLevel model)."""
    document = _parse_json(data, source)
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        raise _fail("tokenizer.json has no 'model' object", source)
    model: dict[str, Any] = document["model"]
    model_type = model.get("type", _infer_model_type(model))
    builder = _Builder(source)
    components = _component_types(document)
    normalise: Normaliser
    if model_type == "Unigram":
        kind, normalise = "unigram", _from_sentencepiece
        _add_unigram(builder, model.get("vocab"), bool(model.get("byte_fallback")))
    elif model_type in ("BPE", "WordPiece", "WordLevel"):
        kind, normalise = _dict_model_scheme(model_type, model, components, source)
        fallback = model_type == "BPE" and bool(model.get("byte_fallback"))
        _add_dict_vocab(builder, model.get("vocab"), normalise, fallback)
    else:
        raise TokenizerError(
            f"tokenizer model type {model_type!r} is not supported",
            path=source,
            hint="compare without vocabulary alignment",
        )
    _add_added_tokens(builder, document.get("added_tokens"), normalise)
    return builder.build(kind)


def _parse_json(data: bytes, source: str) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise _fail("a JSON object repeats a key", source)
        return result

    try:
        return json.loads(data, object_pairs_hook=unique)
    except TokenizerError:
        raise
    except (ValueError, RecursionError) as error:
        raise _fail(f"not valid JSON ({type(error).__name__})", source) from None


def _infer_model_type(model: Mapping[str, Any]) -> str:
    # tokenizer.json files written before the "type" tag carry only the model's own keys.
    if isinstance(model.get("vocab"), list):
        return "Unigram"
    if "merges" in model:
        return "BPE"
    return "WordPiece" if "continuing_subword_prefix" in model else "WordLevel"


def _component_types(document: Mapping[str, Any]) -> set[str]:
    """Type tags of the normalizer, pre-tokenizer and decoder, looking inside Sequences."""
    found: set[str] = set()
    stack: list[tuple[Any, int]] = [
        (document.get(key), 0) for key in ("normalizer", "pre_tokenizer", "decoder")
    ]
    while stack:
        node, depth = stack.pop()
        if depth > 8:
            continue
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                found.add(node["type"])
            if node.get("type") == "Replace" and _SPACE_MARK in json.dumps(
                node, ensure_ascii=False
            ):
                found.add("Replace▁")
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return found


def _dict_model_scheme(
    model_type: str, model: Mapping[str, Any], components: set[str], source: str
) -> tuple[str, Normaliser]:
    if model_type == "WordPiece":
        prefix = model.get("continuing_subword_prefix", "##")
        if not isinstance(prefix, str):
            raise _fail("continuing_subword_prefix is not a string", source)
        return "wordpiece", _wordpiece(prefix)
    if model_type == "BPE" and "ByteLevel" in components:
        return "byte_bpe", _from_byte_level
    sentencepiece_marks = {"Metaspace", "Replace▁", "ByteFallback"}
    if model_type == "BPE" and (model.get("byte_fallback") or components & sentencepiece_marks):
        return "sentencepiece_bpe", _from_sentencepiece
    suffix = model.get("end_of_word_suffix") or ""
    if not isinstance(suffix, str):
        raise _fail("end_of_word_suffix is not a string", source)
    return model_type.lower(), _literal(suffix)


def _add_dict_vocab(builder: _Builder, vocab: Any, normalise: Normaliser, fallback: bool) -> None:
    if not isinstance(vocab, dict):
        raise _fail("the vocabulary is not an object of token → id", builder.source)
    for raw, ident in vocab.items():
        byte = _byte_of(raw) if fallback else None
        builder.add(ident, raw, normalise(raw) if byte is None else byte)
        if byte is not None:
            builder.byte_tokens.add(ident)


def _add_unigram(builder: _Builder, vocab: Any, fallback: bool) -> None:
    if not isinstance(vocab, list):
        raise _fail("model.vocab of a Unigram model is not a list", builder.source)
    for ident, entry in enumerate(vocab):
        valid = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
        if not valid or isinstance(entry[1], bool) or not isinstance(entry[1], int | float):
            raise _fail(f"Unigram entry {ident} is not [piece, score]", builder.source)
        raw: str = entry[0]
        byte = _byte_of(raw) if fallback else None
        builder.add(ident, raw, _from_sentencepiece(raw) if byte is None else byte)
        if byte is not None:
            builder.byte_tokens.add(ident)


def _add_added_tokens(builder: _Builder, added: Any, normalise: Normaliser) -> None:
    if added is None:
        return
    if not isinstance(added, list):
        raise _fail("added_tokens is not a list", builder.source)
    seen: set[int] = set()
    for entry in added:
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise _fail("an added token has no string 'content'", builder.source)
        raw, ident = entry["content"], entry.get("id")
        if isinstance(ident, bool) or not isinstance(ident, int):
            builder.add(ident, raw, raw)  # refuses the id with the standard message
            continue
        if ident in seen:
            raise _fail(f"added tokens repeat id {ident}", builder.source)
        seen.add(ident)
        held = builder.entries.get(ident)
        if entry.get("special") is True or not raw:
            builder.add(ident, raw, raw, replace=True)
        elif held is None or held[0] != raw:
            # Added tokens match raw text, so only SentencePiece's ▁ needs undoing.
            text = _from_sentencepiece(raw) if normalise is _from_sentencepiece else _utf8(raw)
            builder.add(ident, raw, text, replace=True)


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
