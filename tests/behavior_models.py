"""Tiny untrained llama folders for the behaviour tier's tests (built in about a second).

``tiny_llama(folder, seed)`` writes a zoo-layout folder (config.json,
model.safetensors, tokenizer.json) holding a randomly initialised llama (hidden 64,
intermediate 128) over a byte-level BPE tokenizer trained on a few KB of this
repository's own source. The initialiser's spread is raised so next-token
distributions are peaked: greedy answers are then far from ties, and float noise
never flips them. Where a *trained* model matters, use the ``mini`` zoo fixture.
``probe_models(folder)`` lays out a parent, a copy of it and two independent controls,
for probes that must reach a verdict in a hundred prompts.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

TOKENIZER_VOCAB = 320
_TEXT = Path(__file__).resolve().parents[1] / "src" / "forebear" / "errors.py"


@functools.cache
def tokenizer_json() -> bytes:
    from forebear.zoo.tokenization import train_tokenizer

    return train_tokenizer(_TEXT.read_text(encoding="utf-8"), TOKENIZER_VOCAB)


def tiny_llama(folder: Path, seed: int = 0, *, init: float = 0.3) -> Path:
    """A random-init tiny llama at ``folder`` (weights drawn from ``seed``); returns it."""
    from forebear.zoo.families import build_model, state_of, tiny_config
    from forebear.zoo.folders import save_folder
    from forebear.zoo.tokenization import special_token_ids, vocab_size_of

    tokens = tokenizer_json()
    config = tiny_config(
        "llama",
        vocab_size_of(tokens),
        special_token_ids(tokens),
        {"initializer_range": init, "max_position_embeddings": 64},
    )
    return save_folder(folder, state_of(build_model(config, seed)), config, tokens)


def probe_models(folder: Path) -> dict[str, Path]:
    """``parent``, ``copy`` (the parent's files, copied: a suspect a probe must find derived
    from it) and independent ``control-a`` and ``control-b``, under ``folder``."""
    made = {name: tiny_llama(folder / name, seed) for name, seed in
            (("parent", 0), ("control-a", 1), ("control-b", 2))}  # fmt: skip
    made["copy"] = Path(shutil.copytree(made["parent"], folder / "copy"))
    return made
