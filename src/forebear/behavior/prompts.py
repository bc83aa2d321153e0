"""Probe prompts: short text prefixes, drawn reproducibly from a seed.

A probe prompt is a prefix cut at a random point of a text source (the model is asked
for the token that follows), or, for a share of them, a string of words drawn at random
from the source's vocabulary (text no model has seen in that order). Prompts are drawn
independently and identically, which the sequential tests of ``behavior.sequential``
rely on: any stretch of a probe set is a fresh random sample.

The default source is text the zoo's models were **not** trained on: the Python
standard-library files that fall in neither zoo corpus (``forebear.zoo.corpus`` fills
``corpus-a`` and ``corpus-b`` from the library up to a byte budget; the files past it
are held out). ``ProbeSet.sha256`` (of the prompts themselves) is recorded with every
result, so a reader can check which prompts were asked. This module owns drawing; it
queries nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forebear.errors import ForebearError

__all__ = ["HELD_OUT_BUDGET", "ProbeSet", "draw_probes", "held_out_text"]

HELD_OUT_BUDGET = 400_000  # bytes of held-out text to cut prompts from
_MIN_CHARS, _MAX_CHARS = 24, 96  # prefix lengths: a few lines of code at most
_MIN_WORDS, _MAX_WORDS = 4, 12


@dataclass(frozen=True)
class ProbeSet:
    """Prompts in the order they are asked, what they were cut from, and their hash."""

    prompts: tuple[str, ...]
    source: str  # what the text was, in words
    seed: int | None  # the seed they were drawn with (None: given, not drawn)
    random_fraction: float  # share of random-word prompts

    @property
    def sha256(self) -> str:
        payload = json.dumps(list(self.prompts), ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.prompts)

    def to_json(self) -> dict[str, object]:
        return {
            "count": len(self.prompts),
            "sha256": self.sha256,
            "source": self.source,
            "seed": self.seed,
            "random_fraction": self.random_fraction,
        }


def held_out_text(budget: int = HELD_OUT_BUDGET, root: Path | None = None) -> str:
    """Standard-library text in neither zoo corpus, in a fixed (hash) order."""
    from forebear.zoo.corpus import CORPORA, assemble_corpus, stdlib_root

    base = root if root is not None else stdlib_root()
    used = {path for name in CORPORA for path in assemble_corpus(name, root=base).files}
    found = [p.relative_to(base).as_posix() for p in base.rglob("*.py")]
    ordered = sorted(found, key=lambda rel: hashlib.sha256(rel.encode("utf-8")).hexdigest())
    parts: list[str] = []
    size = 0
    for relative in ordered:
        if relative in used or "site-packages" in relative.split("/") or size >= budget:
            continue
        try:
            text = (base / relative).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
    return "\n\n".join(parts)


def _prefix(text: str, rng: np.random.Generator) -> str:
    for _ in range(100):
        length = int(rng.integers(_MIN_CHARS, _MAX_CHARS + 1))
        end = int(rng.integers(length, len(text) + 1))
        prefix = text[end - length : end]
        if prefix.strip():
            return prefix
    raise ForebearError("the probe text is (almost) all whitespace", hint="give another text")


def _words(vocabulary: list[str], rng: np.random.Generator) -> str:
    count = int(rng.integers(_MIN_WORDS, _MAX_WORDS + 1))
    return " ".join(vocabulary[int(i)] for i in rng.integers(0, len(vocabulary), size=count))


def draw_probes(
    text: str,
    count: int,
    rng: np.random.Generator,
    *,
    source: str,
    seed: int | None = None,
    random_fraction: float = 0.1,
) -> ProbeSet:
    """``count`` prompts: prefixes of ``text`` ending at random points, and (a share
    ``random_fraction`` of them, chosen at random) strings of random words of ``text``."""
    if count < 1:
        raise ForebearError(f"a probe set needs at least one prompt (got {count})")
    if len(text) < 4 * _MAX_CHARS:
        raise ForebearError(
            f"the probe text is too short ({len(text)} characters)",
            hint=f"give at least {4 * _MAX_CHARS} characters of text",
        )
    vocabulary = sorted(set(text.split()))
    prompts = tuple(
        _words(vocabulary, rng) if rng.random() < random_fraction else _prefix(text, rng)
        for _ in range(count)
    )
    return ProbeSet(prompts, source, seed, random_fraction)
