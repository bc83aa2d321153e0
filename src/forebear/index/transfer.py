"""Export files: an index's records as JSON lines, to move or merge indexes.

The format (``EXPORT_SCHEMA``, version ``EXPORT_VERSION``), one JSON object a line:

- a header ``{"schema", "version", "forebear", "vector_dims"}``;
- one line per record: the ``IndexRecord`` fields, the vector as base64 of
  little-endian float32 and the fingerprint blob as base64 (null for a
  vector-only record), with the blob's SHA-256;
- a trailer ``{"end": true, "records": N}``, so a truncated file is refused.

Import checks the whole file before it adds anything: every field's type, every
blob against its SHA-256, and, for fingerprints of this forebear's version, that
the blob parses and yields the record's structure and vector. Records of another
fingerprint version are checked by checksum only (this forebear cannot read
them; scans skip them). Then the records whose keys are absent are added, so an
import can be repeated, or resumed after it was killed, without duplicates.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forebear import __version__
from forebear.errors import CorruptCheckpointError, ForebearError
from forebear.fingerprint.io import fingerprint_from_bytes
from forebear.fingerprint.sketch import FINGERPRINT_VERSION
from forebear.fingerprint.vector import VECTOR_DIMS, retrieval_vector
from forebear.index.card import CardClaims
from forebear.index.record import IndexRecord, check_record
from forebear.sources.local import LocalFile

if TYPE_CHECKING:
    from forebear.index.store import Index

__all__ = ["EXPORT_SCHEMA", "EXPORT_VERSION", "Imported", "export_index", "import_index"]

EXPORT_SCHEMA = "forebear.index.export"
EXPORT_VERSION = 1
_HINT = "the export is damaged or not a forebear index export; export it again"
_VECTOR_ATOL = 1e-5
_FIELDS: dict[str, tuple[type, ...]] = {
    "ref": (str,),
    "revision": (str, type(None)),
    "fingerprint_version": (int,),
    "family": (str, type(None)),
    "structure": (dict,),
    "card": (dict,),
    "vector": (str,),
    "blob": (str, type(None)),
    "blob_sha256": (str, type(None)),
    "bytes_read": (int,),
    "created": (str,),
    "forebear_version": (str,),
}


@dataclass(frozen=True)
class Imported:
    records: int  # in the file
    added: int  # of those, absent from the index before


def export_index(index: Index, path: str | os.PathLike[str]) -> int:
    """Write every record of ``index`` to ``path`` (atomically); returns how many."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    header = {
        "schema": EXPORT_SCHEMA,
        "version": EXPORT_VERSION,
        "forebear": __version__,
        "vector_dims": VECTOR_DIMS,
    }
    count = 0
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        for record in index.records_with_blobs():
            out.write(json.dumps(_to_line(record)) + "\n")
            count += 1
        out.write(json.dumps({"end": True, "records": count}) + "\n")
    os.replace(temporary, target)
    return count


def import_index(index: Index, path: str | os.PathLike[str]) -> Imported:
    """Check all of ``path``, then add its records whose keys are absent."""
    total = sum(1 for _ in _read(path, deep=True))
    added = index.add_many(_read(path, deep=False))
    return Imported(total, added)


def _to_line(record: IndexRecord) -> dict[str, Any]:
    line = record.to_json()
    line["vector"] = base64.b64encode(np.asarray(record.vector, "<f4").tobytes()).decode("ascii")
    line["blob"] = None if record.blob is None else base64.b64encode(record.blob).decode("ascii")
    return line


def _read(path: str | os.PathLike[str], *, deep: bool) -> Iterator[IndexRecord]:
    LocalFile(path).close()  # a missing file is reported as such
    where = Path(path)
    count, ended = 0, False
    with open(where, encoding="utf-8", errors="strict") as lines:
        try:
            _check_header(where, next(lines, ""))
            for number, text in enumerate(lines, start=2):
                if ended:
                    raise _fail(where, number, "text after the trailer")
                data = _json(where, number, text)
                if data.get("end") is True:
                    if data.get("records") != count:
                        raise _fail(
                            where,
                            number,
                            f"the trailer counts {data.get('records')!r} "
                            f"records, the file holds {count}",
                        )
                    ended = True
                    continue
                record = _record(where, number, data)
                if deep:
                    _check_deep(where, number, record)
                count += 1
                yield record
        except UnicodeDecodeError:
            raise CorruptCheckpointError("is not UTF-8 text", path=where, hint=_HINT) from None
    if not ended:
        raise CorruptCheckpointError("ends without its trailer (truncated)", path=where, hint=_HINT)


def _fail(where: Path, number: int, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"line {number}: {why}", path=where, hint=_HINT)


def _json(where: Path, number: int, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise _fail(where, number, "not JSON") from None
    if not isinstance(data, dict):
        raise _fail(where, number, "not a JSON object")
    return data


def _check_header(where: Path, text: str) -> None:
    data = _json(where, 1, text) if text else {}
    if data.get("schema") != EXPORT_SCHEMA:
        raise CorruptCheckpointError("is not a forebear index export", path=where, hint=_HINT)
    if data.get("version") != EXPORT_VERSION or data.get("vector_dims") != VECTOR_DIMS:
        raise CorruptCheckpointError(
            f"export version {data.get('version')!r} with {data.get('vector_dims')!r}-value "
            f"vectors; this forebear reads version {EXPORT_VERSION} with {VECTOR_DIMS}",
            path=where,
            hint="export it with this forebear's version, or upgrade forebear",
        )


def _record(where: Path, number: int, data: dict[str, Any]) -> IndexRecord:
    if set(data) != set(_FIELDS):
        raise _fail(where, number, f"fields {sorted(data)} are not a record's")
    for name, kinds in _FIELDS.items():
        if not isinstance(data[name], kinds) or isinstance(data[name], bool):
            raise _fail(where, number, f"{name} is not {' or '.join(k.__name__ for k in kinds)}")
    try:
        vector = np.frombuffer(base64.b64decode(data["vector"], validate=True), dtype="<f4")
        blob = None if data["blob"] is None else base64.b64decode(data["blob"], validate=True)
        card = _card(data["card"])
    except (binascii.Error, ValueError, TypeError) as error:
        raise _fail(where, number, f"undecodable value ({error})") from None
    record = IndexRecord(
        ref=data["ref"],
        revision=data["revision"] or None,
        fingerprint_version=data["fingerprint_version"],
        family=data["family"],
        structure=data["structure"],
        card=card,
        vector=vector.astype(np.float32),
        blob=blob,
        blob_sha256=data["blob_sha256"],
        bytes_read=data["bytes_read"],
        created=data["created"],
        forebear_version=data["forebear_version"],
    )
    try:
        check_record(record, str(where))
    except ForebearError as error:
        raise _fail(where, number, error.message) from None
    return record


def _card(data: dict[str, Any]) -> CardClaims:
    bases, licence, scratch, evidence = (
        data.get("base_models"),
        data.get("license"),
        data.get("from_scratch"),
        data.get("evidence"),
    )
    if set(data) != {"base_models", "license", "from_scratch", "evidence"}:
        raise ValueError("card fields are not a card's")
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError("card base_models is not a list of strings")
    if not isinstance(scratch, bool) or not all(
        v is None or isinstance(v, str) for v in (licence, evidence)
    ):
        raise ValueError("card fields of the wrong type")
    return CardClaims(tuple(bases), licence, scratch, evidence)


def _check_deep(where: Path, number: int, record: IndexRecord) -> None:
    """The blob parses, and its structure and vector are the record's."""
    if record.blob is None or record.fingerprint_version != FINGERPRINT_VERSION:
        return
    try:
        found = fingerprint_from_bytes(record.blob, f"line {number}")
    except ForebearError as error:
        raise _fail(where, number, error.message) from None
    if dict(found.meta["structure"]) != dict(record.structure):
        raise _fail(where, number, "the structure disagrees with the fingerprint's")
    if not np.allclose(retrieval_vector(found), record.vector, atol=_VECTOR_ATOL):
        raise _fail(where, number, "the vector disagrees with the fingerprint's")
