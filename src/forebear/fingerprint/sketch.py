"""A fingerprint: what the same-position test needs, kept without the weights.

Rows of different models live in different residual bases (a rotated or
permuted copy moves them all), so a fingerprint expresses every reading row
in a **canonical basis intrinsic to its model**: the top ``dims`` principal
directions of its own token embeddings, signs fixed by positive skew. A
residual rotation of the model rotates these directions with it, so the
coordinates survive it; a comparison then fixes what the convention cannot
(near-equal eigenvalues, sign ties) by a ``dims × dims`` Procrustes on the
embedding rows of token strings both fingerprints hold.

Tokens are chosen by string, not id: the ``basis_tokens`` whose normalised
forms hash lowest (a bottom-k sketch), so any two fingerprints of models that
share most token strings pick mostly the same tokens. Units are sampled at
positions that depend only on the MLP's width (``evidence.sample_units``), so
two fingerprints of models of one shape line up unit for unit.

Positions fail when units move (a permuted copy) or disappear (width pruning).
So a fingerprint made with ``content_units`` also keeps a **content sample**:
per layer, the units with the largest ``‖up‖·‖down‖·‖gate‖`` (folded rows;
unchanged by unit permutation, residual rotation, sign flips and the
``up·c, down/c`` rescaling, and what magnitude pruning keeps), with their gate
and up rows and their down columns stripped of the model's shared directions
(``align.units.strip_shared``), all in canonical coordinates. It costs reading
every MLP weight once (not a row sample), so remote models skip it by default.
A layer without a dense MLP is sketched through its first routed expert.

This module builds fingerprints; ``io`` stores them and ``evidence`` tests them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from forebear.align.units import normalise_rows, strip_shared, top_directions
from forebear.architectures import Role
from forebear.architectures.resolve import ResolvedModel
from forebear.compare.evidence import shared_directions
from forebear.compare.views import ReadCounter, first_mlp_view, sampled_layer_views
from forebear.errors import ForebearError
from forebear.formats.base import Array
from forebear.model import Model

__all__ = [
    "FINGERPRINT_VERSION",
    "ContentSketch",
    "Fingerprint",
    "LayerSketch",
    "fingerprint",
    "hash_order",
    "token_key",
]

FINGERPRINT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DEFAULT_CONTENT_UNITS = 64  # version 1: no content samples, MoE layers not sketched


@dataclass(frozen=True)
class ContentSketch:
    """The units of one MLP chosen by content (see the module docstring), canonical rows."""

    units: Array  # (n,) int64: their positions (reported, never used to pair units)
    gate: Array | None  # (n, dims) float16, or None for an ungated MLP
    up: Array  # (n, dims) float16
    down: Array  # (n, dims) float16: down columns stripped of shared directions, unit length


@dataclass(frozen=True)
class LayerSketch:
    """The sampled units of one layer's dense MLP, reading rows in canonical coordinates."""

    units: Array  # (n,) int64: the unit positions sampled
    width: int  # the MLP's width (units)
    gate: Array | None  # (n, dims) float16, or None for an ungated MLP
    up: Array  # (n, dims) float16
    content: ContentSketch | None = None


@dataclass(frozen=True)
class Fingerprint:
    meta: Mapping[str, Any]  # schema, versions, source, files, structure, settings
    tokens: tuple[str, ...]  # the sketched tokens' keys (``token_key``), in row order
    embedding: Array  # (len(tokens), dims) float16: their rows in canonical coordinates
    layers: tuple[LayerSketch | None, ...]  # per layer; None: no dense MLP


def token_key(form: bytes | str) -> str:
    """A token's normalised form as text that survives JSON: ``s:`` + text, ``b:`` + hex."""
    return f"b:{form.hex()}" if isinstance(form, bytes) else f"s:{form}"


def token_hashes(keys: list[str]) -> Array:
    """(len(keys),) uint64: the blake2b-64 hash of each key, the order the sketches use."""
    digests = [hashlib.blake2b(k.encode("utf-8"), digest_size=8).digest() for k in keys]
    return np.array([int.from_bytes(d, "big") for d in digests], dtype=np.uint64)


def hash_order(keys: list[str]) -> Array:
    """Indices of ``keys`` from the lowest hash up (the bottom-k order)."""
    return np.argsort(token_hashes(keys), kind="stable")


def _selected(model: Model, limit: int) -> tuple[Array, list[str]]:
    """Token ids and keys of the ``limit`` tokens whose keys hash lowest (ids when the model
    has no vocabulary: then only models without one line up)."""
    vocabulary = model.vocabulary
    rows = model.resolved.shape(Role.EMBED_TOKENS)[0]
    if vocabulary is None:
        keys = [f"id:{i}" for i in range(rows)]
    else:
        keys = [
            token_key(form) if i < rows and form and i not in vocabulary.gaps else ""
            for i, form in enumerate(vocabulary.normalized)
        ]
    candidates = [i for i, k in enumerate(keys) if k]
    order = hash_order([keys[i] for i in candidates])[:limit]
    ids = np.sort(np.array([candidates[i] for i in order], dtype=np.int64))
    return ids, [keys[i] for i in ids]


def _canonical_basis(rows: Array, dims: int) -> Array:
    """(hidden, dims): top principal directions of ``rows``, each signed so that the
    projections' third moment is positive."""
    centred = rows - rows.mean(axis=0, keepdims=True)
    basis = top_directions(centred, dims).T  # exact when small, else randomised and seeded
    skew = np.sum((centred @ basis) ** 3, axis=0)
    signs: Array = np.where(skew < 0, -1.0, 1.0)
    oriented: Array = basis * signs[None, :]
    return oriented


def _layer(resolved: ResolvedModel, layer: int, basis: Array, units: int, content: int,
           counter: ReadCounter) -> LayerSketch | None:  # fmt: skip
    """The MLP's gate and up rows at the fast test's positions, norm folded, in the
    canonical basis (``sampled_layer_views`` with the basis as the map), and its content
    sample of ``content`` units (none when 0)."""
    found = sampled_layer_views(resolved, "model", layer, basis.astype(np.float32), counter, units)
    if not found:
        return None
    gate, up, _ = found[0].raw
    as16 = None if gate is None else gate.astype(np.float16)
    chosen = _content(resolved, layer, basis, content, counter) if content > 0 else None
    return LayerSketch(found[0].kept, found[0].units, as16, up.astype(np.float16), chosen)


def _content(resolved: ResolvedModel, layer: int, basis: Array, count: int,
             counter: ReadCounter) -> ContentSketch | None:  # fmt: skip
    """The ``count`` units of largest ``‖up‖·‖down‖·‖gate‖``, rows in canonical coordinates."""
    view = first_mlp_view(resolved, "model", layer, counter)
    if view is None or view.down is None:
        return None
    score = np.linalg.norm(view.up, axis=1) * np.linalg.norm(view.down, axis=1)
    if view.gate is not None:
        score = score * np.linalg.norm(view.gate, axis=1)
    keep = np.sort(np.argsort(-score, kind="stable")[:count])
    mapped = basis.astype(np.float32)
    down = strip_shared(view.down, shared_directions(view.down.shape[1]), keep, normalise=True)
    gate = None if view.gate is None else (view.gate[keep] @ mapped).astype(np.float16)
    return ContentSketch(
        keep.astype(np.int64), gate, (view.up[keep] @ mapped).astype(np.float16),
        normalise_rows(down @ mapped).astype(np.float16),
    )  # fmt: skip


def fingerprint(
    model: Model,
    *,
    dims: int = 256,
    units: int = 64,
    content_units: int | None = None,
    basis_tokens: int = 8192,
    sketch_tokens: int = 2048,
    source: str | None = None,
) -> Fingerprint:
    """The fingerprint of an opened model (see the module docstring). ``content_units``:
    the content sample's size per layer, 0 for none; by default 64 for a local model and
    0 for a remote one (the sample reads every MLP weight)."""
    if content_units is None:
        content_units = 0 if model.traffic() is not None else DEFAULT_CONTENT_UNITS
    resolved = model.resolved
    if not resolved.has(Role.EMBED_TOKENS) or not resolved.dims.hidden:
        raise ForebearError(
            f"{model.name}: no token embeddings, nothing to anchor a fingerprint's basis",
            hint="fingerprints need a model with an embedding matrix (a decoder or encoder)",
        )
    counter = ReadCounter()
    ids, keys = _selected(model, basis_tokens)
    counter.add("model", resolved, Role.EMBED_TOKENS, None, rows=len(ids))
    embedding = resolved.read_row_set(Role.EMBED_TOKENS, rows=ids).astype(np.float64)
    kept = min(dims, resolved.dims.hidden, max(len(ids) - 1, 1))
    basis = _canonical_basis(embedding, kept)
    sketched = np.sort(hash_order(keys)[:sketch_tokens])
    layers = tuple(
        _layer(resolved, i, basis, units, content_units, counter) for i in resolved.layers
    )
    structure = {
        "family": resolved.family,
        "hidden": resolved.dims.hidden,
        "layers": len(resolved.layers),
        "vocab": resolved.dims.vocab,
        "mlp_widths": [None if s is None else s.width for s in layers],
        "experts": resolved.dims.experts or 0,
        "dtypes": sorted({str(model.reader.tensors()[e.tensor].dtype) for e in resolved.entries}),
    }
    meta = {
        "schema": "forebear.fingerprint",
        "version": FINGERPRINT_VERSION,
        "source": source or model.name,
        "revision": model.revision,
        "files": _files(model),
        "structure": structure,
        "settings": {
            "dims": kept,
            "units": units,
            "content_units": content_units,
            "basis_tokens": basis_tokens,
            "sketch_tokens": sketch_tokens,
            "hash": "blake2b-64 of token keys",
        },
        "bytes_read": counter.total,
    }
    rows = (embedding[sketched] - embedding.mean(axis=0, keepdims=True)) @ basis
    return Fingerprint(meta, tuple(keys[i] for i in sketched), rows.astype(np.float16), layers)


def _files(model: Model) -> list[dict[str, Any]]:
    """Each weight file's name, size and the SHA-256 of its first 64 KiB (its header, for
    safetensors and GGUF): enough to tell files apart without reading them whole. Read
    through the model's location, so a remote file costs one ranged read (often cached)."""
    found = []
    for file in model.weight_files:
        source = model.open_weight(file)
        try:
            head = source.read(0, min(1 << 16, source.size))
        finally:
            source.close()
        found.append({"name": file.name, "size": file.size,
                      "head_sha256": hashlib.sha256(head).hexdigest()})  # fmt: skip
    return found
