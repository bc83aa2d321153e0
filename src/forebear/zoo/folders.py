"""Zoo models on disk: Hugging Face model folders written byte for byte reproducibly.

A folder holds ``config.json`` (sorted keys), ``model.safetensors`` (written by
``safetensors.numpy``, which orders tensors deterministically) and
``tokenizer.json``, which is what ``transformers`` and forebear both open.
Folders are written to a temporary sibling and renamed into place, so an
interrupted build never leaves a half-written model where a finished one is
expected. This module owns the folder layout; it neither trains nor reads
tensors by role.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from forebear.errors import CorruptCheckpointError, InputNotFoundError
from forebear.zoo.transforms.base import State

__all__ = [
    "CONFIG",
    "TOKENIZER",
    "WEIGHTS",
    "config_bytes",
    "load_folder",
    "save_folder",
    "weights_bytes",
]

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
_HINT = "rebuild the zoo with `forebear zoo build`"


def config_bytes(config: Mapping[str, Any]) -> bytes:
    return (json.dumps(dict(config), indent=2, sort_keys=True) + "\n").encode("utf-8")


def weights_bytes(state: State) -> bytes:
    from safetensors.numpy import save

    contiguous = {name: np.ascontiguousarray(array) for name, array in state.items()}
    data: bytes = save(contiguous, metadata={"format": "pt"})
    return data


def save_folder(
    path: Path,
    state: State,
    config: Mapping[str, Any],
    tokenizer_json: bytes,
    extra: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a model folder at ``path`` (replacing one that is there); ``extra`` adds files."""
    files = {
        CONFIG: config_bytes(config),
        WEIGHTS: weights_bytes(state),
        TOKENIZER: tokenizer_json,
        **(extra or {}),
    }
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)
    return path


def load_folder(path: Path) -> tuple[State, dict[str, Any], bytes]:
    """(state, config, tokenizer.json bytes) of a folder ``save_folder`` wrote."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    for name in (CONFIG, WEIGHTS, TOKENIZER):
        if not (path / name).is_file():
            raise InputNotFoundError(f"zoo model folder has no {name}", path=path, hint=_HINT)
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        state = load((path / WEIGHTS).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as error:
        raise CorruptCheckpointError(
            f"zoo model folder is unreadable ({error})", path=path, hint=_HINT
        ) from None
    if not isinstance(config, dict):
        raise CorruptCheckpointError("config.json is not an object", path=path, hint=_HINT)
    return state, config, (path / TOKENIZER).read_bytes()
