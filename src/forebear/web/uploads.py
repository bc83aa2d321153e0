"""Uploaded fingerprint files: streamed to the server's uploads folder under the size limit,
then checked as fingerprints before anything else may use them.

A fingerprint file is safetensors with a JSON description (``fingerprint.io``):
it is parsed by forebear's own bounds-checked reader, never unpickled or
executed. The stored name is the content's SHA-256, so the client chooses no
path and the same file uploaded twice is stored once. A file that is not a
fingerprint is deleted and refused.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread

from forebear.errors import ForebearError
from forebear.fingerprint.io import load_fingerprint
from forebear.web.security import UploadTooLargeError

__all__ = ["check_declared_size", "store_fingerprint"]

SUFFIX = ".fingerprint.safetensors"


async def store_fingerprint(chunks: AsyncIterator[bytes], uploads: Path,
                            limit: int) -> dict[str, Any]:  # fmt: skip
    """Write the body to ``uploads`` (refused past ``limit`` bytes), check that it is a
    fingerprint, and describe it: id, path, bytes, sha256 and the model it was made from."""
    partial = uploads / f".upload-{secrets.token_hex(8)}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with partial.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise ForebearError("upload: empty body", hint="send the fingerprint file's bytes")
        # Raises on anything that is not a fingerprint; off the event loop (it reads the file).
        found = await anyio.to_thread.run_sync(load_fingerprint, partial)
        target = uploads / f"{digest.hexdigest()[:32]}{SUFFIX}"
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    structure = found.meta.get("structure", {})
    return {"id": target.name.removesuffix(SUFFIX), "path": str(target), "bytes": size,
            "sha256": digest.hexdigest(), "source": found.meta.get("source"),
            "family": structure.get("family") if isinstance(structure, dict) else None}  # fmt: skip


def _too_large(limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"upload: over the limit of {limit / (1 << 20):.1f} MiB",
        hint="make a smaller fingerprint (forebear fingerprint --units), or raise --max-upload-mb",
    )


def check_declared_size(declared: str | None, limit: int) -> None:
    """Refuse before reading when the declared Content-Length is over ``limit``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
