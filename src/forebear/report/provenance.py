"""The reproducibility block: versions, time, command line, settings and the inputs' hashes.

Local inputs are hashed (sha256, streamed) file by file; a folder's weights, configuration
and tokenizer files are hashed, other files ignored. A file over ``HASH_LIMIT`` is recorded by
size only, and the report says so: hashing a 1.3 TB checkpoint would cost more than the
comparison it documents (``sha256sum`` gives the rest). Hub ids keep the id and the revision
they name; URLs are recorded as given. This module reads files; it never prints.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from forebear import __version__
from forebear.report.model import FileHash, InputRecord, Reproducibility

__all__ = [
    "HASH_LIMIT",
    "Making",
    "command_line",
    "describe_input",
    "reproducibility",
    "versions",
]

HASH_LIMIT = 4 << 30  # bytes per file; larger files are recorded by size only
MAX_FILES = 64  # files hashed per folder, at most
_CHUNK = 1 << 20
# What a checkpoint folder's identity rests on: weights, config, tokenizer, fingerprints.
_HASHED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".txt")
_SECRET_OPTIONS = ("--token", "--api-key")


def versions() -> dict[str, str]:
    return {"forebear": __version__, "python": platform.python_version(), "numpy": np.__version__}


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one shell line, the values of secret options (``--token``, ``--api-key``)
    redacted."""
    shown: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            shown.append("***")
            hide = False
        elif arg in _SECRET_OPTIONS:
            shown.append(arg)
            hide = True
        elif arg.startswith(tuple(f"{o}=" for o in _SECRET_OPTIONS)):
            shown.append(arg.split("=", 1)[0] + "=***")
        else:
            shown.append(arg)
    return shlex.join(shown)


def describe_input(ref: str | Path, *, hash_limit: int | None = HASH_LIMIT) -> InputRecord:
    """What ``ref`` is, with the sha256 of each local file that identifies it."""
    text = str(ref)
    path = Path(ref)
    if path.is_file():
        return InputRecord(text, "file", files=(_hash(path, path.name, hash_limit),))
    if path.is_dir():
        return _folder(text, path, hash_limit)
    if text.startswith(("http://", "https://")):
        return InputRecord(text, "url", note="remote; not hashed")
    from forebear.sources.hub import parse_hub_ref

    parsed = parse_hub_ref(text)
    if parsed is not None:
        revision = parsed[1]
        note = "" if revision else "hub id; name a commit (org/name@commit) to reproduce exactly"
        return InputRecord(text, "hub", revision, note=note)
    return InputRecord(text, "missing", note="not found when the report was written")


def _folder(text: str, path: Path, hash_limit: int | None) -> InputRecord:
    chosen = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix in _HASHED_SUFFIXES and not p.name.startswith(".")
    )
    files = tuple(_hash(p, p.relative_to(path).as_posix(), hash_limit) for p in chosen[:MAX_FILES])
    extra = len(chosen) - len(files)
    note = f"{extra} more files not listed" if extra > 0 else ""
    return InputRecord(text, "folder", files=files, note=note)


def _hash(path: Path, shown: str, hash_limit: int | None) -> FileHash:
    size = path.stat().st_size
    if hash_limit is not None and size > hash_limit:
        return FileHash(shown, size, None)
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return FileHash(shown, size, digest.hexdigest())


def hash_policy(hash_limit: int | None) -> str:
    limit = "no size limit" if hash_limit is None else f"files up to {_size(hash_limit)}"
    return (
        f"sha256 of each local input file ({limit}; larger ones by size only — hash them with "
        f"sha256sum); in folders, weights, configuration and tokenizer files, at most "
        f"{MAX_FILES}; hub ids by id and revision; URLs as given"
    )


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


class Making(TypedDict, total=False):
    """How a report is made: the keywords every report builder passes on to
    ``reproducibility``. ``command``: the command line as argv; ``inputs``: the references
    read, hashed when local (files up to ``hash_limit`` bytes); ``created`` and
    ``environment`` (versions) fix what would otherwise be read from the clock and the
    interpreter."""

    command: Sequence[str] | None
    inputs: Sequence[str | Path]
    created: datetime | str | None
    environment: Mapping[str, str] | None
    hash_limit: int | None


def reproducibility(
    *,
    seed: int | None,
    settings: Mapping[str, Any],
    command: Sequence[str] | None = None,
    inputs: Sequence[str | Path] = (),
    created: datetime | str | None = None,
    environment: Mapping[str, str] | None = None,
    hash_limit: int | None = HASH_LIMIT,
) -> Reproducibility:
    """The block for a report made now (or at ``created``), in this environment (or the
    ``environment`` given: fixed versions keep golden files stable); see ``Making``."""
    when = created or datetime.now(UTC)
    stamp = when if isinstance(when, str) else when.astimezone(UTC).isoformat(timespec="seconds")
    return Reproducibility(
        created=stamp,
        command=None if command is None else command_line(command),
        versions=dict(environment) if environment is not None else versions(),
        seed=seed,
        settings=dict(settings),
        inputs=tuple(describe_input(ref, hash_limit=hash_limit) for ref in inputs),
        hash_policy=hash_policy(hash_limit),
    )
