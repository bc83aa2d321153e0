"""One index entry: a model's fingerprint with its key, structure, card claims and vector.

An ``IndexRecord`` is what the index stores and what a scan ranks. Its key is
``(ref, revision, fingerprint_version)``: the same model at another revision,
or fingerprinted by a forebear whose fingerprints changed, is another record.
The fingerprint itself travels as the bytes ``fingerprint_to_bytes`` makes,
with their SHA-256, so a damaged blob is caught when it is loaded.

This module owns the record's shape and its checks; storing is ``store``'s,
making one from a model is ``batch``'s.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from forebear import __version__
from forebear.errors import CorruptCheckpointError
from forebear.fingerprint.io import fingerprint_to_bytes
from forebear.fingerprint.sketch import Fingerprint
from forebear.fingerprint.vector import VECTOR_DIMS, retrieval_vector
from forebear.formats.base import Array
from forebear.index.card import CardClaims

__all__ = ["Candidate", "IndexRecord", "check_record", "record_from_fingerprint", "utc_now"]

_NORM_SLACK = 1e-3  # float32 rounding of a unit vector


@dataclass(frozen=True)
class IndexRecord:
    """A model in the index. ``blob`` is None when loaded without it (``records``, scans)
    and for vector-only records (synthetic entries for scale tests)."""

    ref: str  # hub id, URL or absolute local path, without ``@revision``
    revision: str | None  # resolved commit when known; None for a local folder
    fingerprint_version: int
    family: str | None
    structure: Mapping[str, Any]  # hidden, layers, vocab, mlp_widths, ...
    card: CardClaims
    vector: Array = field(compare=False, repr=False)  # (VECTOR_DIMS,) float32
    blob: bytes | None = field(default=None, compare=False, repr=False)
    blob_sha256: str | None = None  # hex; None only when no fingerprint is stored
    bytes_read: int = 0
    created: str = ""  # ISO 8601, UTC
    forebear_version: str = __version__

    def __hash__(self) -> int:  # the structure is a dict: hash what identifies the record
        return hash(self.key)

    @property
    def key(self) -> tuple[str, str, int]:
        """The UNIQUE key as stored (an unknown revision is the empty string)."""
        return (self.ref, self.revision or "", self.fingerprint_version)

    @property
    def label(self) -> str:
        return self.ref if not self.revision else f"{self.ref}@{self.revision}"

    @property
    def hidden(self) -> int | None:
        value = self.structure.get("hidden")
        return value if isinstance(value, int) else None

    def without_blob(self) -> IndexRecord:
        return self if self.blob is None else replace(self, blob=None)

    def to_json(self) -> dict[str, Any]:
        """Everything but the vector and the blob, for listings."""
        return {
            "ref": self.ref,
            "revision": self.revision,
            "fingerprint_version": self.fingerprint_version,
            "family": self.family,
            "structure": dict(self.structure),
            "card": self.card.to_json(),
            "blob_sha256": self.blob_sha256,
            "bytes_read": self.bytes_read,
            "created": self.created,
            "forebear_version": self.forebear_version,
        }


@dataclass(frozen=True)
class Candidate:
    """A record a scan should test, with its retrieval score (cosine; higher is closer)."""

    record: IndexRecord  # without its blob: ``Index.load_fingerprint`` fetches it
    score: float


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record_from_fingerprint(
    found: Fingerprint,
    *,
    ref: str,
    revision: str | None = None,
    card: CardClaims | None = None,
) -> IndexRecord:
    """The record of a fingerprint; ``revision`` defaults to the one the fingerprint names."""
    structure = dict(found.meta["structure"])
    blob = fingerprint_to_bytes(found)
    named = found.meta.get("revision")
    return IndexRecord(
        ref=ref,
        revision=revision or (named if isinstance(named, str) and named else None),
        fingerprint_version=int(found.meta["version"]),
        family=structure.get("family"),
        structure=structure,
        card=card or CardClaims(),
        vector=retrieval_vector(found),
        blob=blob,
        blob_sha256=hashlib.sha256(blob).hexdigest(),
        bytes_read=int(found.meta.get("bytes_read", 0)),
        created=utc_now(),
    )


def check_record(record: IndexRecord, where: str) -> None:
    """Refuse a record the index must not hold: bad vector, blob that fails its checksum."""

    def fail(why: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"record {record.label!r} {why}",
            path=where,
            hint="make it again with `forebear index add MODEL --force`",
        )

    if not record.ref or "\n" in record.ref:
        raise fail("has an empty or multi-line ref")
    vector = record.vector
    if not isinstance(vector, np.ndarray) or vector.shape != (VECTOR_DIMS,):
        raise fail(f"has a vector that is not ({VECTOR_DIMS},)")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if not math.isfinite(norm) or norm > 1 + _NORM_SLACK:
        raise fail(f"has a vector of norm {norm:.4g}, expected at most 1")
    if record.blob is not None:
        if record.blob_sha256 != hashlib.sha256(record.blob).hexdigest():
            raise fail("has a fingerprint blob that fails its SHA-256")
    elif record.blob_sha256 is not None:
        raise fail("names a blob checksum but carries no blob")
