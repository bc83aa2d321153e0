"""The shared core of tokenizer vocabularies: the ``Vocabulary`` record, the normalisers and
the id-checking builder.

Owns the normalised token form (described in ``forebear.architectures.vocabulary``, the public
module), the per-family normalisers that produce it (byte-level BPE, SentencePiece, WordPiece,
literal) and ``_Builder``, which every file parser uses to collect tokens by id and validate
those ids before anything is sized from them. Private to the package: callers import from
``vocabulary``; the names here are shared only by ``vocabulary`` and ``tokenizer_json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

from forebear.errors import TokenizerError

Form = bytes | str
"""A normalised token: surface bytes, a special token's literal ``str``, or ``""`` for a gap."""

# Real vocabularies stay below ~1M ids; ids are also refused when gaps outnumber tokens.
MAX_VOCABULARY_SIZE = 1 << 24

_SPACE_MARK = "\u2581"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_HINT = "re-download the tokenizer files, or compare without vocabulary alignment"

# Token types shared by SentencePiece's proto and GGUF (gguf.TokenType).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

Normaliser = Callable[[str], Form]


@dataclass(frozen=True)
class Vocabulary:
    """A tokenizer's tokens by id, one normalised form per id (see ``vocabulary``'s docstring)."""

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
