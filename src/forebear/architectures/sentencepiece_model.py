"""SentencePiece ``.model`` files, read with a minimal protobuf wire-format reader.

A ``.model`` file is a serialised ``sentencepiece.ModelProto``. Only what a vocabulary needs
is decoded: ``ModelProto.pieces`` (field 1, repeated ``SentencePiece {1: piece, 2: score,
3: type}``) and ``ModelProto.trainer_spec.model_type`` (field 2 → field 3). Every other field
is skipped by wire type, so newer files still parse. This module owns the byte-level decoding
and its bounds checks; turning pieces into normalised tokens belongs to ``vocabulary``.
The ``sentencepiece`` package is deliberately not used: it would be a native dependency for
a few dozen lines of parsing, and it aborts rather than raising on hostile files.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from forebear.errors import TokenizerError

__all__ = ["MODEL_TYPES", "Piece", "SentencePieceModel", "parse_sentencepiece_model"]

# TrainerSpec.ModelType; UNIGRAM is the proto2 default when the field is absent.
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_NORMAL = 1
_HINT = "the .model file is truncated or not a SentencePiece model; download it again"


@dataclass(frozen=True)
class Piece:
    """One ``SentencePiece`` entry; ``kind`` is the proto's ``Type`` enum (NORMAL = 1)."""

    text: str
    score: float
    kind: int


@dataclass(frozen=True)
class SentencePieceModel:
    """The pieces in id order and the trainer's model type name (``unigram``, ``bpe``, …)."""

    pieces: tuple[Piece, ...]
    model_type: str


def parse_sentencepiece_model(data: bytes, source: str) -> SentencePieceModel:
    """Decode ``data`` (a whole ``.model`` file); any malformed byte raises ``TokenizerError``."""
    view = memoryview(data)
    pieces: list[Piece] = []
    model_type = "unigram"
    for number, wire, value in _fields(view, source):
        if number == 1:
            pieces.append(_piece(_message(value, wire, source), len(pieces), source))
        elif number == 2:
            model_type = _model_type(_message(value, wire, source), source)
    if not pieces:
        raise TokenizerError("the SentencePiece model holds no pieces", path=source, hint=_HINT)
    return SentencePieceModel(pieces=tuple(pieces), model_type=model_type)


def _piece(view: memoryview, index: int, source: str) -> Piece:
    text: str | None = None
    score = 0.0
    kind = _NORMAL
    for number, wire, value in _fields(view, source):
        if number == 1:
            try:
                text = bytes(_message(value, wire, source)).decode("utf-8")
            except UnicodeDecodeError:
                raise TokenizerError(
                    f"piece {index} is not valid UTF-8", path=source, hint=_HINT
                ) from None
        elif number == 2 and wire == _FIXED32 and isinstance(value, memoryview):
            score = float(struct.unpack("<f", value)[0])
        elif number == 3 and wire == _VARINT and isinstance(value, int):
            kind = value
        elif number in (2, 3):
            raise TokenizerError(
                f"piece {index} field {number} has wire type {wire}", path=source, hint=_HINT
            )
    if not text:
        raise TokenizerError(f"piece {index} has no text", path=source, hint=_HINT)
    return Piece(text=text, score=score, kind=kind)


def _model_type(view: memoryview, source: str) -> str:
    found = 1
    for number, wire, value in _fields(view, source):
        if number == 3 and wire == _VARINT and isinstance(value, int):
            found = value
    return MODEL_TYPES.get(found, f"type-{found}")


def _message(value: int | memoryview, wire: int, source: str) -> memoryview:
    if wire != _LENGTH or not isinstance(value, memoryview):
        raise TokenizerError(
            f"expected a length-delimited field, found wire type {wire}", path=source, hint=_HINT
        )
    return value


def _fields(view: memoryview, source: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)``; values of wire type 1, 2, 5 are slices."""
    position = 0
    end = len(view)
    while position < end:
        key, position = _varint(view, position, source)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise TokenizerError(f"field number 0 at byte {position}", path=source, hint=_HINT)
        if wire == _VARINT:
            value, position = _varint(view, position, source)
            yield number, wire, value
            continue
        if wire == _LENGTH:
            length, position = _varint(view, position, source)
        elif wire in (_FIXED64, _FIXED32):
            length = 8 if wire == _FIXED64 else 4
        else:
            # Groups (3, 4) are deprecated and never written by SentencePiece; 6, 7 do not exist.
            raise TokenizerError(
                f"unsupported protobuf wire type {wire} at byte {position}", path=source, hint=_HINT
            )
        if position + length > end:
            raise TokenizerError(
                f"protobuf field runs past the end of the data at byte {position}",
                path=source,
                hint=_HINT,
            )
        yield number, wire, view[position : position + length]
        position += length


def _varint(view: memoryview, position: int, source: str) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if position >= len(view):
            raise TokenizerError(
                f"protobuf varint runs past the end of the data at byte {position}",
                path=source,
                hint=_HINT,
            )
        byte = view[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
    raise TokenizerError(
        f"protobuf varint longer than 10 bytes ending at byte {position}", path=source, hint=_HINT
    )
