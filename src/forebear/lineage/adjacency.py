"""Evidence that two related models are adjacent in a tree, beyond their distance.

Distance alone attaches a child to whichever relative moved the same way, and a
sibling trained on the same data, or with the same seed after a different edit, can
be nearer than the true parent. Two facts are harder to fake by accident:

- **coordinates**: a function-preserving re-parameterisation (permuted units, a
  rotated residual stream) is a deliberate act. A child keeps its parent's
  coordinates unless someone re-parameterised it, so an edge between models in
  different coordinates costs one such act, and the tree takes as few as it can
  (``reparameterised``). Joining two coordinate classes, an edge that also
  changes the structure (layers, experts, MLP width, vocabulary) is two acts
  where one would do (``structural_changes``); only there is structure counted —
  two siblings cut the same way share a structure, but never a random
  re-parameterisation.
- **frozen tensors**: training changes every tensor it trains, so a tensor
  bit-identical in two models was frozen on the way between them (a merged LoRA
  leaves embeddings and norms untouched). A tensor two siblings share, their
  parent holds too, and a grandchild shares with its parent whatever it shares
  with the grandparent: the relative sharing the most is never a sibling or an
  ancestor beyond the parent (``shared_parameters``). Constant tensors (all ones,
  all zeros) are left out: they agree by coincidence.

This module reads and scores; ``tree`` orders the candidate edges by these facts
before distance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from forebear.compare.result import Comparison
from forebear.model import Model

if TYPE_CHECKING:
    from forebear.lineage.direction import ModelProfile

__all__ = ["reparameterised", "shared_parameters", "structural_changes", "tensor_digests"]

# A layer's MLP units count as permuted when the same-position test sees nothing
# (z below this) while the matched-unit test is strong (z above STRONG).
_WEAK_Z, _STRONG_Z = 3.0, 8.0


def tensor_digests(model: Model) -> dict[str, tuple[str, int]]:
    """Each non-constant tensor's digest (of its values as float32) and size, by role;
    routed experts beyond the first are skipped (a tree does not need them all)."""
    resolved = model.resolved
    found: dict[str, tuple[str, int]] = {}
    for entry in resolved.entries:
        role, layer, expert = entry.key
        if expert not in (None, 0):
            continue
        values = np.ascontiguousarray(resolved.read(role, layer, expert), dtype=np.float32)
        if values.size == 0 or float(values.min()) == float(values.max()):
            continue
        digest = hashlib.blake2b(values.tobytes(), digest_size=12)
        digest.update(repr(values.shape).encode())
        found[f"{role.role_name}:{layer}:{expert}"] = (digest.hexdigest(), int(values.size))
    return found


def shared_parameters(u: Mapping[str, tuple[str, int]], v: Mapping[str, tuple[str, int]]) -> int:
    """Parameters in tensors bit-identical in ``u`` and ``v`` (0 without digests)."""
    return sum(size for key, (digest, size) in u.items() if v.get(key, ("", 0))[0] == digest)


def reparameterised(found: Comparison) -> bool:
    """Whether the two models of ``found`` sit in different coordinates: a residual map
    that is not the identity, or MLP units that match only after permuting."""
    if found.residual.get("identity_like") is False:
        return True
    permuted = [
        cell.z_same_position < _WEAK_Z
        for cell in found.evidence
        if cell.z_same_position is not None
        and cell.z_matched is not None
        and cell.z_matched > _STRONG_Z
        and cell.a_layer == _mapped(found, cell.b_layer)
    ]
    return bool(permuted) and sum(permuted) > len(permuted) / 2


def structural_changes(u: ModelProfile, v: ModelProfile) -> int:
    """How many of layers, routed experts, MLP units and vocabulary differ."""
    return sum(
        (u.layers != v.layers, u.experts != v.experts, u.units != v.units, u.vocab != v.vocab)
    )


def _mapped(found: Comparison, b_layer: int) -> int | None:
    return found.layer_map[b_layer] if 0 <= b_layer < len(found.layer_map) else None
