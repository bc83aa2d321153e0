"""Resolve a checkpoint's tensors into roles: ``resolve(reader, config) -> ResolvedModel``.

Owns the step from "tensor names in a file" to "the query projection of layer
3, in canonical (out, in) orientation": it picks the definition (``detect``),
works out the dimensions (``dims``), turns every matched name into ``Entry``
records (cutting fused tensors, transposing Conv1D storage, indexing stacked
experts) and reports coverage. It reads tensor data only on ``read``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from forebear.architectures import dims as dimslib
from forebear.architectures.detect import detect
from forebear.architectures.dims import Dims, axis_size
from forebear.architectures.matching import (
    MAX_CHECKED_EXPERTS,
    Match,
    MatchResult,
    RoleKey,
    match_names,
    missing_roles,
)
from forebear.architectures.roles import NORM_SCALES, Axis, Role
from forebear.architectures.schema import Definition
from forebear.errors import ArchitectureError
from forebear.formats.base import Array, CheckpointReader

__all__ = ["Coverage", "Cut", "Entry", "ResolvedModel", "entry_shape", "resolve"]


@dataclass(frozen=True)
class Cut:
    """Where a part lies in a fused tensor: along canonical ``axis``, ``groups`` times
    ``[offset, offset + size)`` of each ``width``-long group."""

    axis: int
    groups: int
    offset: int
    size: int
    width: int


@dataclass(frozen=True)
class Entry:
    """One role instance and how to get it out of a stored tensor."""

    role: Role
    layer: int | None
    expert: int | None
    tensor: str
    transposed: bool = False  # stored (in, out): the canonical matrix is its transpose
    expert_index: int | None = None  # index along axis 0 of a stacked expert tensor
    cut: Cut | None = None  # part of a fused tensor

    @property
    def key(self) -> RoleKey:
        return (self.role, self.layer, self.expert)


@dataclass(frozen=True)
class Coverage:
    found: Mapping[str, int]  # role name -> how many instances
    missing: Mapping[int | None, tuple[str, ...]]  # layer (None = model level) -> role names
    unknown: tuple[str, ...]  # tensors no template matched
    ignored: tuple[str, ...]  # tensors the definition knows carry no role (buffers, vision tower)
    duplicates: tuple[str, ...]  # tensors naming a role instance another tensor already holds
    mismatches: tuple[str, ...]  # tensors whose shape contradicts the declared axes

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unknown or self.mismatches)


def _canonical_shape(shape: tuple[int, ...], stacked: bool, transposed: bool) -> tuple[int, ...]:
    if stacked:
        shape = shape[1:]
    return shape[::-1] if transposed and len(shape) == 2 else shape


def _observed(
    matches: Sequence[Match], shapes: Mapping[str, tuple[int, ...]]
) -> list[tuple[tuple[Axis, ...], tuple[int, ...]]]:
    """(declared axes, canonical shape) of every unfused tensor, for filling unknown dims."""
    out = []
    for match in matches:
        pattern = match.pattern
        if not pattern.fused:
            shape = _canonical_shape(shapes[match.name], pattern.stacked, pattern.transposed)
            out.append((pattern.parts[0].axes, shape))
    return out


def _count_dims(
    dims: Dims, matches: Sequence[Match], shapes: Mapping[str, tuple[int, ...]]
) -> Dims:
    """Layer and expert counts from the names (and stacked shapes) when config is silent."""
    layers = [m.layer + 1 for m in matches if m.layer is not None]
    experts = [m.expert + 1 for m in matches if m.expert is not None]
    experts += [shapes[m.name][0] for m in matches if m.pattern.stacked and shapes[m.name]]
    return replace(
        dims,
        layers=dims.layers if dims.layers is not None else max(layers, default=None),
        experts=dims.experts if dims.experts is not None else max(experts, default=None),
    )


def _cuts(match: Match, shape: tuple[int, ...], dims: Dims) -> list[Cut] | str:
    """The cut for each part of a fused tensor, or the reason it cannot be cut."""
    pattern = match.pattern
    groups = 1 if pattern.groups is None else axis_size(pattern.groups, dims)
    length = shape[pattern.axis] if pattern.axis < len(shape) else None
    sizes = [axis_size(part.axes[pattern.axis], dims) for part in pattern.parts]
    if groups is None or length is None or length % groups:
        return f"{match.name}: cannot split {shape} into {groups} groups of {pattern.groups}"
    width = length // groups
    unknown = [i for i, size in enumerate(sizes) if size is None]
    if len(unknown) == 1:  # the fused length fixes the one size the dims leave open
        sizes[unknown[0]] = width * groups - sum(s for s in sizes if s is not None)
    if (
        any(s is None or s <= 0 or s % groups for s in sizes)
        or sum(s or 0 for s in sizes) != length
    ):
        parts = ", ".join(p.role_name for p in pattern.parts)
        return f"{match.name}: shape {shape} does not split into {parts} with sizes {sizes}"
    cuts, offset = [], 0
    for size in sizes:
        per_group = (size or 0) // groups
        cuts.append(Cut(pattern.axis, groups, offset, per_group, width))
        offset += per_group
    return cuts


def _entries(match: Match, stored: tuple[int, ...], dims: Dims) -> list[Entry] | str:
    """The role instances one matched tensor holds, or why it holds none it should."""
    pattern = match.pattern
    if pattern.stacked and (not stored or stored[0] > MAX_CHECKED_EXPERTS):
        return f"{match.name}: a stacked expert tensor of shape {stored} is not plausible"
    canonical = _canonical_shape(stored, pattern.stacked, pattern.transposed)
    made = _cuts(match, canonical, dims) if pattern.fused else None
    if isinstance(made, str):
        return made
    cuts: list[Cut | None] = list(made) if made is not None else [None]
    experts: list[int | None] = list(range(stored[0])) if pattern.stacked else [match.expert]
    out = []
    for role, cut in zip(pattern.parts, cuts, strict=True):
        for expert in experts:
            out.append(
                Entry(
                    role=role,
                    layer=match.layer,
                    expert=expert,
                    tensor=match.name,
                    transposed=pattern.transposed,
                    expert_index=expert if pattern.stacked else None,
                    cut=cut,
                )
            )
    return out


def entry_shape(entry: Entry, stored: tuple[int, ...]) -> tuple[int, ...]:
    """The canonical shape ``read`` returns for ``entry`` given the stored tensor's shape."""
    shape = list(_canonical_shape(stored, entry.expert_index is not None, entry.transposed))
    if entry.cut is not None:
        shape[entry.cut.axis] = entry.cut.groups * entry.cut.size
    declared = entry.role.axes
    if len(shape) == len(declared) - 1 and Axis.ONE in declared:  # GGUF stores (1, n) as (n,)
        shape.insert(declared.index(Axis.ONE), 1)
    return tuple(shape)


def _mismatch(entry: Entry, shape: tuple[int, ...], dims: Dims) -> str | None:
    expected = tuple(axis_size(axis, dims) for axis in entry.role.axes)
    agree = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected, shape, strict=False)
    )
    if agree:
        return None
    shown = tuple("?" if e is None else e for e in expected)
    axes = ", ".join(a.value for a in entry.role.axes)
    return f"{entry.tensor}: {entry.role.role_name} has shape {shape}, declared ({axes}) = {shown}"


def _cut(array: Array, cut: Cut) -> Array:
    moved = np.moveaxis(array, cut.axis, 0)
    grouped = moved.reshape(cut.groups, cut.width, *moved.shape[1:])
    piece = grouped[:, cut.offset : cut.offset + cut.size].reshape(
        cut.groups * cut.size, *moved.shape[1:]
    )
    return np.moveaxis(piece, 0, cut.axis)


@dataclass(frozen=True)
class ResolvedModel:
    """A checkpoint seen through its architecture definition."""

    family: str
    definition: Definition
    source_format: str  # "hf" or "gguf": which naming the tensors follow
    dims: Dims
    entries: tuple[Entry, ...]
    coverage: Coverage
    tied_head: bool  # no head tensor: the head is the token embedding
    reader: CheckpointReader
    _index: Mapping[RoleKey, Entry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {entry.key: entry for entry in self.entries})

    @property
    def layers(self) -> range:
        return range(self.dims.layers or 0)

    def entry(self, role: Role, layer: int | None = None, expert: int | None = None) -> Entry:
        found = self._index.get((role, layer, expert))
        if found is not None:
            return found
        raise ArchitectureError(
            f"no {role.role_name} for layer={layer} expert={expert} "
            f"in this {self.family} checkpoint",
            path=self.reader.name,
            hint="see coverage for the roles it holds",
        )

    def has(self, role: Role, layer: int | None = None, expert: int | None = None) -> bool:
        return (role, layer, expert) in self._index

    def read(self, role: Role, layer: int | None = None, expert: int | None = None) -> Array:
        """The role's tensor in canonical orientation (rows, cols as declared by its axes).

        A tied head reads as the token embedding.
        """
        if role is Role.LM_HEAD and self.tied_head and not self.has(role):
            role = Role.EMBED_TOKENS
        entry = self.entry(role, layer, expert)
        stored = self.reader.tensors()[entry.tensor].shape
        cut = entry.cut
        if entry.expert_index is not None:
            array = self.reader.read_rows(entry.tensor, entry.expert_index, entry.expert_index + 1)[
                0
            ]
        elif cut is not None and cut.axis == 0 and cut.groups == 1 and not entry.transposed:
            # Rows of a [q; k; v] concatenation are contiguous: read only this part's bytes.
            array = self.reader.read_rows(entry.tensor, cut.offset, cut.offset + cut.size)
            cut = None
        else:
            array = self.reader.read(entry.tensor)
        if entry.transposed and array.ndim == 2:
            array = array.T
        if cut is not None:
            array = _cut(array, cut)
        array = np.ascontiguousarray(array.reshape(entry_shape(entry, stored)))
        offset = self.definition.gguf_norm_offset
        if offset and self.source_format == "gguf" and role in NORM_SCALES:
            # llama.cpp stores these as (offset + weight); give back the checkpoint's weight.
            array = (array - offset).astype(array.dtype, copy=False)
        return array

    def shape(
        self, role: Role, layer: int | None = None, expert: int | None = None
    ) -> tuple[int, ...]:
        """The role's canonical shape, from the header alone."""
        if role is Role.LM_HEAD and self.tied_head and not self.has(role):
            role = Role.EMBED_TOKENS
        entry = self.entry(role, layer, expert)
        return entry_shape(entry, self.reader.tensors()[entry.tensor].shape)

    def stored_bytes(
        self,
        role: Role,
        layer: int | None = None,
        expert: int | None = None,
        *,
        rows: int | None = None,
    ) -> int:
        """Stored bytes ``read`` touches for the role, or ``read_row_set`` for ``rows`` rows."""
        if role is Role.LM_HEAD and self.tied_head and not self.has(role):
            role = Role.EMBED_TOKENS
        entry = self.entry(role, layer, expert)
        info = self.reader.tensors()[entry.tensor]
        stored_rows = max(info.shape[0] if info.shape else 1, 1)
        if entry.expert_index is not None:
            return info.nbytes // stored_rows
        if rows is not None and self.rows_contiguous(role, layer, expert):
            return info.nbytes * rows // stored_rows
        cut = entry.cut
        if cut is not None and cut.axis == 0 and cut.groups == 1 and not entry.transposed:
            return info.nbytes * cut.size // stored_rows
        return info.nbytes

    def rows_contiguous(
        self, role: Role, layer: int | None = None, expert: int | None = None
    ) -> bool:
        """Whether ``read_row_set`` reads only the rows asked for (else the whole tensor)."""
        if role is Role.LM_HEAD and self.tied_head and not self.has(role):
            role = Role.EMBED_TOKENS
        entry = self.entry(role, layer, expert)
        cut = entry.cut
        contiguous = cut is None or (cut.axis == 0 and cut.groups == 1)
        return contiguous and not entry.transposed and entry.expert_index is None

    def read_row_set(
        self, role: Role, layer: int | None = None, expert: int | None = None, *, rows: Array
    ) -> Array:
        """Rows ``rows`` (canonical orientation) of a 2-D role, in the order given.

        Where the stored layout keeps canonical rows contiguous (not transposed, not
        stacked, not cut across rows), only those rows' bytes are read, a run of
        consecutive rows at a time; otherwise the whole tensor is read and indexed.
        """
        if role is Role.LM_HEAD and self.tied_head and not self.has(role):
            role = Role.EMBED_TOKENS
        entry = self.entry(role, layer, expert)
        wanted = np.asarray(rows, dtype=np.int64)
        cut = entry.cut
        if not self.rows_contiguous(role, layer, expert):
            return self.read(role, layer, expert)[wanted]
        first = 0 if cut is None else cut.offset
        if not len(wanted):  # one row read for its decoded dtype and width, none returned
            return self.reader.read_rows(entry.tensor, first, first + 1)[:0]
        order = np.argsort(wanted, kind="stable")
        ordered = wanted[order]
        cuts = [0, *(np.flatnonzero(np.diff(ordered) > 1) + 1).tolist(), len(ordered)]
        runs = [(int(ordered[a]), int(ordered[b - 1]) + 1) for a, b in itertools.pairwise(cuts)]
        hint = getattr(self.reader, "prefetch_rows", None)
        if hint is not None:  # a remote source fetches every run at once, in parallel
            hint(entry.tensor, [(first + low, first + high) for low, high in runs])
        # Each block goes straight into the result: a list of many small blocks would leave
        # the allocator's heap fragmented (hundreds of MB of RSS for spread-out rows).
        result: Array | None = None
        for (start, stop), (low, high) in zip(itertools.pairwise(cuts), runs, strict=True):
            block = self.reader.read_rows(entry.tensor, first + low, first + high)
            if result is None:
                result = np.empty((len(wanted), *block.shape[1:]), dtype=block.dtype)
            result[order[start:stop]] = block[ordered[start:stop] - low]
        assert result is not None
        return result

    def norm_scale(self, role: Role, layer: int | None = None) -> Array:
        """The scale a norm role multiplies by, as float64: the stored weight plus the
        family's ``norm_scale_offset`` (Gemma stores ``scale - 1``)."""
        if role not in NORM_SCALES:
            raise ValueError(f"{role.role_name} is not a norm scale")
        return self.read(role, layer).astype(np.float64) + self.definition.norm_scale_offset


def _tied_head(
    definition: Definition, config: Mapping[str, Any] | None, has_head: bool, naming: str
) -> bool:
    if has_head:
        return False
    if naming == "gguf":
        return True  # llama.cpp falls back to token_embd when output.weight is absent
    tie = dimslib.text_config(config or {}, definition).get("tie_word_embeddings")
    return definition.tie_word_embeddings if tie is None else bool(tie)


def _match(
    definition: Definition, reader: CheckpointReader, names: Sequence[str]
) -> tuple[str, MatchResult]:
    """The naming the tensors follow (GGUF files: "gguf"; else the better fit) and its matches."""
    gguf = match_names(definition, "gguf", names)
    if reader.format == "gguf":
        return "gguf", gguf
    hf = match_names(definition, "hf", names)
    return ("gguf", gguf) if len(gguf.matches) > len(hf.matches) else ("hf", hf)


def _initial_dims(
    definition: Definition, config: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None
) -> Dims:
    if config:
        return dimslib.dims_from_config(config, definition)
    if metadata:
        return dimslib.dims_from_gguf(metadata, definition)
    return Dims()


def _all_entries(
    matches: Sequence[Match], shapes: Mapping[str, tuple[int, ...]], dims: Dims
) -> tuple[dict[RoleKey, Entry], list[str], list[str]]:
    """Entries by role instance (first tensor wins), duplicate tensors, shape mismatches."""
    entries: dict[RoleKey, Entry] = {}
    duplicates: list[str] = []
    mismatches: list[str] = []
    for match in matches:
        made = _entries(match, shapes[match.name], dims)
        if isinstance(made, str):
            mismatches.append(made)
            continue
        for entry in made:
            if entry.key in entries:
                duplicates.append(entry.tensor)
                continue
            entries[entry.key] = entry
            problem = _mismatch(entry, entry_shape(entry, shapes[entry.tensor]), dims)
            if problem:
                mismatches.append(problem)
    return entries, duplicates, mismatches


def resolve(reader: CheckpointReader, config: Mapping[str, Any] | None = None) -> ResolvedModel:
    """Name every tensor of ``reader`` by role; ``UnknownArchitectureError`` if nothing fits."""
    infos = reader.tensors()
    names = list(infos)
    shapes = {name: info.shape for name, info in infos.items()}
    metadata = reader.metadata if reader.format == "gguf" else None
    definition = detect(names, config, metadata)
    naming, result = _match(definition, reader, names)
    dims = dimslib.fill_from_shapes(
        _initial_dims(definition, config, metadata), _observed(result.matches, shapes)
    )
    dims = _count_dims(dims, result.matches, shapes)
    if config or metadata:
        dims = dims.with_defaults()

    entries, duplicates, mismatches = _all_entries(result.matches, shapes, dims)
    has_head = (Role.LM_HEAD, None, None) in entries
    tied = _tied_head(definition, config, has_head, naming)
    missing = dict(missing_roles(definition, set(entries), dims.layers, dims.experts))
    if not has_head and not tied:
        missing[None] = (*missing.get(None, ()), Role.LM_HEAD.role_name)
    coverage = Coverage(
        found=dict(Counter(role.role_name for role, _, _ in entries)),
        missing=missing,
        unknown=result.unknown,
        ignored=result.ignored,
        duplicates=tuple(dict.fromkeys(duplicates)),
        mismatches=tuple(mismatches),
    )
    return ResolvedModel(
        family=definition.family,
        definition=definition,
        source_format=naming,
        dims=dims,
        entries=tuple(entries.values()),
        coverage=coverage,
        tied_head=tied,
        reader=reader,
    )
