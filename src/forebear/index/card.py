"""What a model card claims about a model's origin: declared bases, licence, "from scratch".

A Hugging Face model card is ``README.md``: YAML front matter between ``---``
lines, then Markdown. forebear records what the card *claims* beside what the
weights show, so a scan can point out a model whose card says "trained from
scratch" while its weights match another model (or a declared base it does
not match). Claims are never evidence of derivation either way.

Rules, kept simple so a reader can predict them:

- ``base_model`` (a string or a list of strings) and ``license`` come from the
  front matter, read with ``yaml.safe_load`` only (no Python objects);
- the text claims **from scratch** when a sentence contains one of
  ``FROM_SCRATCH_PHRASES`` (case-insensitive, whitespace folded) that does not
  directly follow "not", "never" or "n't" (optionally with "be"/"been"), and
  the front matter declares no base model; the sentence is kept as evidence.

Hostile cards: at most ``MAX_CARD_BYTES`` are read; anything not of the
expected type is ignored rather than trusted. This module reads no weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; safe_load only

from forebear.errors import ForebearError
from forebear.sources.base import Location

__all__ = [
    "FROM_SCRATCH_PHRASES",
    "MAX_CARD_BYTES",
    "CardClaims",
    "parse_card",
    "read_card",
]

MAX_CARD_BYTES = 1 << 20
MAX_FIELD_CHARS = 400  # a base model id or licence longer than this is not one
MAX_EVIDENCE_CHARS = 300
FROM_SCRATCH_PHRASES = (
    "trained from scratch",
    "pretrained from scratch",
    "pre-trained from scratch",
    "trained it from scratch",
    "built from scratch",
    "not based on any",
    "not derived from any",
    "not a fine-tune",
    "not a finetune",
)
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MARKDOWN_BLOCK = re.compile(r"\s*(?:#|>|\||[-*+]\s|\d+[.)]\s|```)")
# "was not trained from scratch" claims the opposite; the phrase must not follow a negation.
_NEGATED = re.compile(r"(?:\bnot|\bnever|n't)(?: been| be)? $")


@dataclass(frozen=True)
class CardClaims:
    """What a model card says; ``evidence`` is the sentence behind ``from_scratch``."""

    base_models: tuple[str, ...] = ()
    license: str | None = None
    from_scratch: bool = False
    evidence: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "base_models": list(self.base_models),
            "license": self.license,
            "from_scratch": self.from_scratch,
            "evidence": self.evidence,
        }


def parse_card(text: str) -> CardClaims:
    """The claims in a model card's text (front matter and body); never raises on content."""
    text = text[:MAX_CARD_BYTES]
    match = _FRONT_MATTER.match(text)
    meta = _front_matter(match.group(1)) if match else {}
    body = text[match.end() :] if match else text
    bases = _strings(meta.get("base_model"))
    licence = _strings(meta.get("license"))
    evidence = None if bases else _scratch_sentence(body)
    return CardClaims(
        base_models=bases,
        license=licence[0] if licence else None,
        from_scratch=evidence is not None,
        evidence=evidence,
    )


def read_card(location: Location) -> CardClaims | None:
    """The claims of ``README.md`` in a model's folder; None when there is no card."""
    try:
        if not location.exists("README.md"):
            return None
        handle = location.open("README.md")
    except ForebearError:
        return None  # a card is optional: an unreadable one is no claim
    try:
        head = handle.read(0, min(handle.size, MAX_CARD_BYTES))
    finally:
        handle.close()
    return parse_card(head.decode("utf-8", errors="replace"))


def _front_matter(raw: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _strings(value: object) -> tuple[str, ...]:
    """A string or a list of strings, stripped; anything else (or too long) is dropped."""
    items = value if isinstance(value, list) else [value]
    kept = (item.strip() for item in items[:64] if isinstance(item, str))
    return tuple(item for item in kept if item and len(item) <= MAX_FIELD_CHARS)


def _scratch_sentence(body: str) -> str | None:
    for block in _blocks(body):
        lowered = block.lower()
        for phrase in FROM_SCRATCH_PHRASES:
            for found in re.finditer(re.escape(phrase), lowered):
                if not _NEGATED.search(lowered, max(0, found.start() - 24), found.start()):
                    return _sentence_around(block, found.start(), len(phrase))
    return None


def _blocks(body: str) -> Iterator[str]:
    """Paragraphs with whitespace folded; a heading, list item or table row is its own block,
    so a sentence never runs into the heading above it."""
    lines: list[str] = []
    for line in body.splitlines():
        if line.strip() and not _MARKDOWN_BLOCK.match(line):
            lines.append(line)
            continue
        if lines:
            yield " ".join(" ".join(lines).split())
            lines = []
        if line.strip():
            yield " ".join(line.split())
    if lines:
        yield " ".join(" ".join(lines).split())


def _sentence_around(text: str, at: int, length: int) -> str:
    starts = [m.end() for m in _SENTENCE_END.finditer(text, 0, at)]
    start = starts[-1] if starts else 0
    end_match = _SENTENCE_END.search(text, at + length)
    end = end_match.start() if end_match else len(text)
    sentence = text[start:end].strip()
    if len(sentence) <= MAX_EVIDENCE_CHARS:
        return sentence
    # Keep the phrase itself inside the excerpt.
    left = max(start, at - MAX_EVIDENCE_CHARS // 2)
    return "…" + text[left : left + MAX_EVIDENCE_CHARS].strip() + "…"
