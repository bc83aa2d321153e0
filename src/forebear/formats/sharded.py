"""Checkpoints split across files: one reader over several, and the index files that name them.

Both ``model.safetensors.index.json`` and ``pytorch_model.bin.index.json`` map
tensor names to shard files under ``weight_map``. The index is checked against
the shards: a tensor the index names but no shard holds is an error, and so is
one tensor held by two shards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from forebear.errors import CorruptCheckpointError
from forebear.formats.base import Array, BaseReader, CheckpointReader, TensorInfo
from forebear.sources.base import ByteSource, Location

__all__ = ["MAX_INDEX_BYTES", "CompositeReader", "open_indexed", "read_weight_map"]

MAX_INDEX_BYTES = 64 * 1024 * 1024


class CompositeReader(BaseReader):
    """Several readers seen as one; every tensor name must be unique across them."""

    def __init__(
        self,
        name: str,
        format: str,
        parts: Sequence[CheckpointReader],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._name = name
        self._format = format
        self._parts = list(parts)
        self._metadata = dict(metadata or {})
        self._owner: dict[str, CheckpointReader] = {}
        tensors: dict[str, TensorInfo] = {}
        for part in self._parts:
            for key, info in part.tensors().items():
                if key in tensors:
                    self.close()
                    raise CorruptCheckpointError(
                        f"tensor {key!r} appears in two shards "
                        f"({self._owner[key].name}, {part.name})",
                        path=name,
                        hint="the shards belong to different checkpoints; download them again",
                    )
                tensors[key] = info
                self._owner[key] = part
        self._tensors = tensors

    @property
    def parts(self) -> list[CheckpointReader]:
        return list(self._parts)

    def read(self, name: str) -> Array:
        self.info(name)
        return self._owner[name].read(name)

    def read_rows(self, name: str, start: int, stop: int) -> Array:
        self.info(name)
        return self._owner[name].read_rows(name, start, stop)

    def prefetch_rows(self, name: str, runs: Sequence[tuple[int, int]]) -> None:
        """Pass the hint to the shard holding ``name`` (ignored when it takes none)."""
        self.info(name)
        hint = getattr(self._owner[name], "prefetch_rows", None)
        if hint is not None:
            hint(name, runs)

    def close(self) -> None:
        for part in self._parts:
            part.close()


def read_weight_map(location: Location, index_relpath: str) -> dict[str, str]:
    """Parse an index file's ``weight_map`` (tensor name → shard file name)."""
    where = f"{location.name}/{index_relpath}"
    raw = location.read_bytes(index_relpath, MAX_INDEX_BYTES)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptCheckpointError(
            f"index is not valid UTF-8 JSON ({error})",
            path=where,
            hint="download the index file again",
        ) from None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CorruptCheckpointError(
            "index has no weight_map of tensor name → file name",
            path=where,
            hint="download the index file again",
        )
    return dict(weight_map)


def open_indexed(
    location: Location,
    index_relpath: str,
    format: str,
    open_shard: Callable[[ByteSource], CheckpointReader],
) -> CompositeReader:
    """Open every shard an index names and check the index against their contents."""
    weight_map = read_weight_map(location, index_relpath)
    where = f"{location.name}/{index_relpath}"
    shards: list[CheckpointReader] = []
    try:
        for relpath in sorted(set(weight_map.values())):
            shards.append(open_shard(location.open(relpath)))
        reader = CompositeReader(where, format, shards)
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    missing = sorted(set(weight_map) - set(reader.tensors()))
    if missing:
        reader.close()
        raise CorruptCheckpointError(
            f"{len(missing)} tensor(s) named by the index are in no shard, e.g. {missing[0]!r}",
            path=where,
            hint="a shard is incomplete or from another checkpoint; download it again",
        )
    return reader
