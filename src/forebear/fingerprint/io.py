"""Fingerprint files: safetensors (no pickle, bounds-checked by forebear's own reader) with
the description as JSON under the ``forebear.fingerprint`` metadata key.

Tensors: ``embedding`` (tokens × dims, float16), and per layer ``layer.N.units``
(int64), ``layer.N.up`` and ``layer.N.gate`` (float16), and when the layer has a
content sample ``layer.N.content.units|gate|up|down``. The JSON holds the
schema name and version, the source, the files' identities, the structure,
the settings and the sketched tokens. A file of another schema or version,
or whose tensors disagree with its description, is refused with one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from forebear.errors import CorruptCheckpointError, ForebearError
from forebear.fingerprint.sketch import (
    FINGERPRINT_VERSION,
    READABLE_VERSIONS,
    ContentSketch,
    Fingerprint,
    LayerSketch,
)
from forebear.formats.safetensors import SafetensorsReader
from forebear.sources.base import ByteSource
from forebear.sources.local import LocalFile
from forebear.sources.memory import MemorySource

__all__ = [
    "fingerprint_from_bytes",
    "fingerprint_to_bytes",
    "is_fingerprint_file",
    "load_fingerprint",
    "save_fingerprint",
]

_KEY = "forebear.fingerprint"
_HINT = "make it again with `forebear fingerprint MODEL -o FILE`"


def fingerprint_to_bytes(found: Fingerprint) -> bytes:
    """The fingerprint file's bytes (what ``save_fingerprint`` writes, what an index stores)."""
    tensors: dict[str, np.ndarray] = {"embedding": np.ascontiguousarray(found.embedding)}
    for index, layer in enumerate(found.layers):
        if layer is None:
            continue
        tensors[f"layer.{index}.units"] = np.ascontiguousarray(layer.units, dtype=np.int64)
        tensors[f"layer.{index}.up"] = np.ascontiguousarray(layer.up)
        if layer.gate is not None:
            tensors[f"layer.{index}.gate"] = np.ascontiguousarray(layer.gate)
        content = layer.content
        if content is not None:
            pieces = {"units": content.units, "up": content.up, "down": content.down,
                      "gate": content.gate}  # fmt: skip
            for piece, value in pieces.items():
                if value is not None:
                    tensors[f"layer.{index}.content.{piece}"] = np.ascontiguousarray(value)
    description = {**found.meta, "tokens": list(found.tokens)}
    return bytes(save(tensors, metadata={_KEY: json.dumps(description)}))


def save_fingerprint(found: Fingerprint, path: str | os.PathLike[str]) -> Path:
    """Write atomically (a temporary file renamed over ``path``); returns the path."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_bytes(fingerprint_to_bytes(found))
    os.replace(temporary, target)
    return target


def _fail(path: Path | str, why: str) -> ForebearError:
    return CorruptCheckpointError(f"{path}: not a usable forebear fingerprint ({why})", hint=_HINT)


def is_fingerprint_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local file whose safetensors header carries a fingerprint's
    description (reads the header only; anything unreadable is simply not one)."""
    if not Path(path).is_file():
        return False
    handle = LocalFile(path)
    try:
        reader = SafetensorsReader(handle)
    except ForebearError:
        handle.close()
        return False
    with reader:
        return _KEY in reader.metadata


def load_fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """Read a fingerprint file, checking its schema, version and shapes."""
    return _load(LocalFile(path), Path(path))  # a missing file is reported as such


def fingerprint_from_bytes(data: bytes, name: str = "<fingerprint>") -> Fingerprint:
    """A fingerprint from the bytes ``fingerprint_to_bytes`` made (checked like a file)."""
    return _load(MemorySource(data, name), name)


def _load(handle: ByteSource, source: Path | str) -> Fingerprint:
    try:
        reader = SafetensorsReader(handle)
    except ForebearError as error:
        handle.close()
        raise _fail(source, error.message) from None
    try:
        raw = reader.metadata.get(_KEY)
        if not isinstance(raw, str):
            raise _fail(source, f"no {_KEY!r} description")
        try:
            meta: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            raise _fail(source, "its description is not JSON") from None
        if not isinstance(meta, dict) or meta.get("schema") != "forebear.fingerprint":
            raise _fail(source, "unknown schema")
        if meta.get("version") not in READABLE_VERSIONS:
            raise _fail(source, f"version {meta.get('version')!r}, this forebear reads "
                                f"versions 1 to {FINGERPRINT_VERSION}")  # fmt: skip
        return _assemble(source, reader, meta)
    finally:
        reader.close()


def _assemble(source: Path | str, reader: SafetensorsReader, meta: dict[str, Any]) -> Fingerprint:
    names = set(reader.tensors())
    tokens = meta.pop("tokens", None)
    structure = meta.get("structure")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise _fail(source, "no token list")
    if not isinstance(structure, dict) or not isinstance(structure.get("mlp_widths"), list):
        raise _fail(source, "no structure")
    if "embedding" not in names:
        raise _fail(source, "no embedding sketch")
    embedding = reader.read("embedding")
    dims = meta.get("settings", {}).get("dims")
    if embedding.ndim != 2 or embedding.shape != (len(tokens), dims):
        raise _fail(source, f"embedding sketch of shape {embedding.shape}, expected "
                            f"({len(tokens)}, {dims})")  # fmt: skip
    layers: list[LayerSketch | None] = []
    for index, width in enumerate(structure["mlp_widths"]):
        if f"layer.{index}.up" not in names:
            layers.append(None)
            continue
        units = reader.read(f"layer.{index}.units")
        up = reader.read(f"layer.{index}.up")
        gate = reader.read(f"layer.{index}.gate") if f"layer.{index}.gate" in names else None
        shapes_ok = (
            isinstance(width, int) and units.ndim == 1 and up.shape == (len(units), dims)
            and (gate is None or gate.shape == up.shape)
            and bool(np.all((units >= 0) & (units < width)))
        )  # fmt: skip
        if not shapes_ok:
            raise _fail(source, f"layer {index} does not match its description")
        content = _content(source, reader, names, index, int(width), dims)
        layers.append(LayerSketch(units.astype(np.int64), int(width), gate, up, content))
    return Fingerprint(meta, tuple(tokens), embedding, tuple(layers))


def _content(source: Path | str, reader: SafetensorsReader, names: set[str], index: int,
             width: int, dims: int) -> ContentSketch | None:  # fmt: skip
    prefix = f"layer.{index}.content."
    if prefix + "up" not in names:
        return None
    if prefix + "units" not in names or prefix + "down" not in names:
        raise _fail(source, f"layer {index}'s content sample is incomplete")
    units = reader.read(prefix + "units")
    up, down = reader.read(prefix + "up"), reader.read(prefix + "down")
    gate = reader.read(prefix + "gate") if prefix + "gate" in names else None
    expected = (len(units), dims)
    shapes_ok = (
        units.ndim == 1 and up.shape == expected and down.shape == expected
        and (gate is None or gate.shape == expected)
        and bool(np.all((units >= 0) & (units < width)))
    )  # fmt: skip
    if not shapes_ok:
        raise _fail(source, f"layer {index}'s content sample does not match its description")
    return ContentSketch(units.astype(np.int64), gate, up, down)
