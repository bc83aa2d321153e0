"""A model as forebear sees it: its weights, its config, its vocabulary, its roles.

``open_model`` accepts a model folder (config.json + weights + tokenizer files)
or one weights file (a config.json beside a safetensors or PyTorch file is
used; a GGUF file carries its own metadata), and, when no such local path
exists, a hub repository ``org/name[@revision]`` or an ``http(s)://`` URL of a
weights file or of a folder (ending in ``/``), read by byte ranges
(``forebear.sources.remote``). Everything past the headers is read lazily.
This module owns putting the pieces together; it parses no format itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any

from forebear.errors import ArchitectureError, CorruptCheckpointError, InputNotFoundError
from forebear.formats import open_checkpoint, open_weights, sniff_format
from forebear.formats.base import CheckpointReader
from forebear.sources.base import ByteSource, Location
from forebear.sources.local import LocalDirectory, LocalFile

if TYPE_CHECKING:
    from forebear.architectures.resolve import ResolvedModel
    from forebear.architectures.vocabulary import Vocabulary
    from forebear.sources.http import RetryPolicy, Traffic
    from forebear.sources.remote import RemoteLocation

__all__ = ["MAX_CONFIG_BYTES", "Model", "WeightFile", "open_model"]

MAX_CONFIG_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class WeightFile:
    """One file the weights are read from: its path inside the model's location, its size,
    and where it is (a local path or a URL, as shown to users)."""

    relpath: str
    size: int
    where: str

    @property
    def name(self) -> str:
        return PurePosixPath(self.relpath).name


class Model:
    """An opened model. Close it (or use ``with``) to release its files."""

    def __init__(
        self,
        name: str,
        reader: CheckpointReader,
        config: Mapping[str, Any] | None,
        location: Location | None,
        weight_files: list[WeightFile],
        revision: str | None = None,
    ) -> None:
        self.name = name
        self.reader = reader
        self.config = config
        self.location = location
        self.weight_files = weight_files
        self.revision = revision  # the commit a hub repository is read at; None when local

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
        """The weight files' total size (on the server, for a remote model)."""
        return sum(file.size for file in self.weight_files)

    def open_weight(self, file: WeightFile) -> ByteSource:
        """A fresh source over one of ``weight_files`` (the caller closes it)."""
        if self.location is None or isinstance(self.location, LocalDirectory):
            return LocalFile(file.where)
        return self.location.open(file.relpath)

    def traffic(self) -> Traffic | None:
        """What reading a remote model has cost so far; None for a local one."""
        counters = getattr(self.location, "traffic", None)
        return None if counters is None else counters()

    def close(self) -> None:
        self.reader.close()
        close = getattr(self.location, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_config(location: Location) -> dict[str, Any] | None:
    if not location.exists("config.json"):
        return None
    return _read_json_object(location, "config.json")


def _read_json_object(location: Location, relpath: str) -> dict[str, Any]:
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
    location: Location, config: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``quantization_config`` from config.json, else AutoGPTQ/AutoAWQ's own config file."""
    if config and isinstance(config.get("quantization_config"), Mapping):
        return dict(config["quantization_config"])
    for relpath in ("quantize_config.json", "quant_config.json"):
        if location.exists(relpath):
            return _read_json_object(location, relpath)
    return None


class _Recording:
    """A location that notes each file opened through it, to tell the weight files."""

    def __init__(self, location: Location) -> None:
        self.inner = location
        self.opened: dict[str, WeightFile] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    def exists(self, relpath: str) -> bool:
        return self.inner.exists(relpath)

    def list_files(self) -> list[str]:
        return self.inner.list_files()

    def open(self, relpath: str) -> ByteSource:
        source = self.inner.open(relpath)
        self.opened[source.name] = WeightFile(relpath, source.size, source.name)
        return source

    def read_bytes(self, relpath: str, limit: int) -> bytes:
        return self.inner.read_bytes(relpath, limit)


def _weight_files(reader: CheckpointReader, opened: Mapping[str, WeightFile]) -> list[WeightFile]:
    files = {span.file for info in reader.tensors().values() for span in info.spans}
    used = [opened[name] for name in sorted(files) if name in opened]
    return used or [opened[name] for name in sorted(opened)]


def _open_folder(name: str, location: Location, revision: str | None = None) -> Model:
    config = _read_config(location)
    quantization = _quantization_config(location, config)
    recording = _Recording(location)
    reader = open_weights(recording, quantization_config=quantization)
    return Model(name, reader, config, location, _weight_files(reader, recording.opened), revision)


def _open_file(
    name: str, location: Location, source: ByteSource, where: WeightFile, revision: str | None
) -> Model:
    try:
        # A GGUF file carries its own metadata; a config.json beside it may be another's.
        gguf = sniff_format(source) == "gguf"
        config = None if gguf else _read_config(location)
        quantization = None if gguf else _quantization_config(location, config)
    except BaseException:
        source.close()
        raise
    reader = open_checkpoint(source, quantization_config=quantization)
    return Model(name, reader, config, location, [where], revision)


def open_model(
    path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> Model:
    """Open a model folder or weights file; failing that, a hub repository or a URL.

    A local path always wins. A string that is not one is read as ``http(s)://…``
    (a weights file, or a folder when it ends in ``/``) or as ``org/name[@revision]``
    on the hub (``revision`` may be given here instead; ``endpoint`` defaults to
    ``HF_ENDPOINT``). ``token`` authenticates; ``cache_dir`` is the range cache
    (default ``forebear.paths.default_range_cache()``); ``retry`` bounds the retries.
    """
    target = Path(path)
    if target.is_dir():
        return _open_folder(str(target), LocalDirectory(target))
    if target.is_file():
        source = LocalFile(target)
        where = WeightFile(target.name, source.size, str(target))
        return _open_file(str(target), LocalDirectory(target.parent), source, where, None)
    if isinstance(path, str):
        remote = _open_remote(path, revision, token, endpoint, cache_dir, retry)
        if remote is not None:
            return remote
    raise InputNotFoundError(
        "no such file or folder",
        path=target,
        hint="give a model folder (config.json + weights), a weights file, "
        "a hub id org/name[@revision] or an https URL",
    )


def _open_remote(
    ref: str,
    revision: str | None,
    token: str | None,
    endpoint: str | None,
    cache_dir: str | os.PathLike[str] | None,
    retry: RetryPolicy | None,
) -> Model | None:
    """The model a hub id or URL names, or None when ``ref`` is neither."""
    from forebear.sources.hub import open_hub, parse_hub_ref
    from forebear.sources.remote import open_url

    if ref.startswith(("http://", "https://")):
        location, relpath = open_url(ref, token=token, cache_dir=cache_dir, retry=retry)
        if relpath is None:
            return _guarded(location, lambda: _open_folder(ref, location))
        named = relpath

        def single() -> Model:
            source = location.open(named)
            where = WeightFile(named, source.size, source.name)
            return _open_file(ref, location, source, where, None)

        return _guarded(location, single)
    parsed = parse_hub_ref(ref)
    if parsed is None:
        return None
    repo_id, given = parsed
    if given is not None and revision is not None and given != revision:
        raise InputNotFoundError(
            f"names revision {given!r} but revision={revision!r} was also given",
            path=ref,
            hint="give the revision once",
        )
    hub = open_hub(
        repo_id, given or revision, token=token, endpoint=endpoint, cache_dir=cache_dir, retry=retry
    )
    return _guarded(hub, lambda: _open_folder(hub.name, hub, hub.revision))


def _guarded(location: RemoteLocation, build: Callable[[], Model]) -> Model:
    """``build()``, closing ``location`` (its temporary ranges) when it fails."""
    try:
        return build()
    except BaseException:
        location.close()
        raise
