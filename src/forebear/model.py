"""A model as forebear sees it: its weights, its config, its vocabulary, its roles.

``open_model`` accepts a model folder (config.json + weights + tokenizer files)
or one weights file (a config.json beside a safetensors or PyTorch file is
used; a GGUF file carries its own metadata). Everything past the headers is
read lazily. This module owns putting the pieces together; it parses no
format itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from forebear.errors import ArchitectureError, CorruptCheckpointError, InputNotFoundError
from forebear.formats import open_checkpoint, open_weights, sniff_format
from forebear.formats.base import CheckpointReader
from forebear.sources.local import LocalDirectory, LocalFile

if TYPE_CHECKING:
    from forebear.architectures.resolve import ResolvedModel
    from forebear.architectures.vocabulary import Vocabulary

__all__ = ["MAX_CONFIG_BYTES", "Model", "open_model"]

MAX_CONFIG_BYTES = 16 * 1024 * 1024


class Model:
    """An opened model. Close it (or use ``with``) to release its files."""

    def __init__(
        self,
        name: str,
        reader: CheckpointReader,
        config: Mapping[str, Any] | None,
        location: LocalDirectory | None,
        weight_files: list[Path],
    ) -> None:
        self.name = name
        self.reader = reader
        self.config = config
        self.location = location
        self.weight_files = weight_files

    @cached_property
    def resolved(self) -> ResolvedModel:
        """Tensors named by role; raises ``ArchitectureError`` when no definition fits."""
        from forebear.architectures.resolve import resolve

        try:
            return resolve(self.reader, self.config)
        except ArchitectureError as error:
            if error.path is not None:
                raise
            raise type(error)(error.message, path=self.name, hint=error.hint) from None

    @cached_property
    def vocabulary(self) -> Vocabulary | None:
        """The tokenizer's vocabulary, from tokenizer files or GGUF metadata; None if absent."""
        from forebear.architectures.vocabulary import load_vocabulary, vocabulary_from_gguf

        if self.reader.format == "gguf" and "tokenizer.ggml.tokens" in self.reader.metadata:
            return vocabulary_from_gguf(self.reader.metadata, self.reader.name)
        if self.location is not None:
            return load_vocabulary(self.location)
        return None

    @property
    def bytes_on_disk(self) -> int:
        return sum(path.stat().st_size for path in self.weight_files)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_config(location: LocalDirectory) -> dict[str, Any] | None:
    if not location.exists("config.json"):
        return None
    return _read_json_object(location, "config.json")


def _read_json_object(location: LocalDirectory, relpath: str) -> dict[str, Any]:
    raw = location.read_bytes(relpath, MAX_CONFIG_BYTES)
    where = f"{location.name}/{relpath}"
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CorruptCheckpointError(
            f"is not valid UTF-8 JSON ({error})".replace("\n", " "),
            path=where,
            hint=f"fix or remove {relpath}",
        ) from None
    if not isinstance(config, dict):
        raise CorruptCheckpointError(
            "is not a JSON object", path=where, hint=f"fix or remove {relpath}"
        )
    return config


def _quantization_config(
    location: LocalDirectory, config: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``quantization_config`` from config.json, else AutoGPTQ/AutoAWQ's own config file."""
    if config and isinstance(config.get("quantization_config"), Mapping):
        return dict(config["quantization_config"])
    for relpath in ("quantize_config.json", "quant_config.json"):
        if location.exists(relpath):
            return _read_json_object(location, relpath)
    return None


def _weight_paths(reader: CheckpointReader, fallback: Path) -> list[Path]:
    files = {span.file for info in reader.tensors().values() for span in info.spans}
    paths = [Path(f) for f in sorted(files) if Path(f).is_file()]
    return paths or [fallback]


def open_model(path: str | os.PathLike[str]) -> Model:
    """Open a model folder or a single weights file."""
    target = Path(path)
    if target.is_dir():
        location = LocalDirectory(target)
        config = _read_config(location)
        quantization = _quantization_config(location, config)
        reader = open_weights(location, quantization_config=quantization)
        return Model(str(target), reader, config, location, _weight_paths(reader, target))
    if target.is_file():
        location = LocalDirectory(target.parent)
        source = LocalFile(target)
        try:
            # A GGUF file carries its own metadata; a config.json beside it may be another's.
            gguf = sniff_format(source) == "gguf"
            config = None if gguf else _read_config(location)
            quantization = None if gguf else _quantization_config(location, config)
        except BaseException:
            source.close()
            raise
        reader = open_checkpoint(source, quantization_config=quantization)
        return Model(str(target), reader, config, location, [target])
    raise InputNotFoundError(
        "no such file or folder",
        path=target,
        hint="give a model folder (config.json + weights) or a weights file",
    )
