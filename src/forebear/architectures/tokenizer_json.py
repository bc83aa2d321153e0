"""Hugging Face ``tokenizer.json`` parsing into a ``Vocabulary``.

Owns reading the ``model`` (BPE, WordPiece, Unigram, WordLevel), choosing its normaliser from
the model type and the normalizer / pre-tokenizer / decoder components, and applying
``added_tokens``. Also owns the strict JSON parse (repeated keys refused) and the token → id
object reader that ``vocabulary`` reuses for GPT-2 ``vocab.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from forebear.architectures._vocabulary_base import (
    _SPACE_MARK,
    Normaliser,
    Vocabulary,
    _Builder,
    _byte_of,
    _fail,
    _from_byte_level,
    _from_sentencepiece,
    _literal,
    _utf8,
    _wordpiece,
)
from forebear.errors import TokenizerError

__all__ = ["vocabulary_from_tokenizer_json"]


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
