"""Evidence from attention: the same-position test on value rows, head by head.

Row ``r`` of a value head reads the residual stream (through the attention
norm, whose scale is folded in, as for MLP units) and column ``r`` of the
output projection's block for that head writes it back. Permuting the rows of
one value head together with those columns leaves the model's function, its
initialisation distribution and (coordinate-wise) optimisers like Adam
unchanged, so **under H0 the rows of each of B's value heads are exchangeable
within their head** and independent of A. (Rows are not exchangeable across
heads, and K and Q rows are tied in pairs by rotary embeddings: neither is
used.) The test pairs B's row ``r`` of head ``h`` with A's row ``r`` of head
``h`` and asks whether that pairing beats the other pairings within the head:

- per head: ``T = Σ_r cos(b_r, a_r)``, with a Monte Carlo permutation p-value
  ``(1 + #{T_σ ≥ T}) / (1 + N)`` over ``N`` uniform within-head permutations
  (seeded, so results repeat): exact for any number of rows;
- per layer: Fisher over the sampled heads (their permutations are independent
  under H0, so are the p-values).

Heads are sampled at positions fixed by the head count (``max_heads``), so the
read is small (a few rows of one matrix per layer). A model whose heads were
permuted defeats this test (it loses power, never validity); the matched MLP
test covers that case. Needs separate value rows: fused or MLA attention
whose value projection is not a role of its own gives no attention evidence.
This module owns the attention test; combining is ``pipeline``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from forebear.align.units import normalise_rows
from forebear.architectures import Role
from forebear.architectures.resolve import ResolvedModel
from forebear.compare.evidence import sample_units
from forebear.compare.views import ReadCounter, norm_scale, reading_rows
from forebear.formats.base import Array
from forebear.stats import fisher

__all__ = ["PERMUTATIONS", "ValueHeads", "attention_log10_p", "value_heads"]

PERMUTATIONS = 9999  # per head: the smallest p-value one head can give is 1e-4


@dataclass(frozen=True)
class ValueHeads:
    """The value rows of the sampled heads of one layer, in the comparison's basis."""

    heads: Array  # the (key/value) head indices sampled
    head_dim: int
    rows: Array  # (len(heads) * head_dim, hidden), head by head


def value_heads(
    resolved: ResolvedModel,
    model: str,
    layer: int,
    rotation: Array | None,
    counter: ReadCounter,
    max_heads: int,
) -> ValueHeads | None:
    """The value rows of up to ``max_heads`` heads (evenly spread; the same positions for
    any model with that many heads), the attention norm's scale folded in, then mapped
    by ``rotation``. None when the layer has no value projection of its own."""
    if not resolved.has(Role.ATTN_V, layer):
        return None
    shape = resolved.shape(Role.ATTN_V, layer)
    heads = resolved.dims.kv_heads or resolved.dims.heads
    if len(shape) != 2 or not heads or shape[0] % heads:
        return None
    head_dim = shape[0] // heads
    if head_dim < 2:
        return None
    picked = sample_units(heads, max_heads)
    positions = (picked[:, None] * head_dim + np.arange(head_dim)[None, :]).reshape(-1)
    counter.add(model, resolved, Role.ATTN_V, layer, rows=len(positions))
    # read_row_set returns a fresh array: scaled in place, never a second copy.
    rows = resolved.read_row_set(Role.ATTN_V, layer, rows=positions).astype(np.float32, copy=False)
    scale = norm_scale(resolved, layer, Role.ATTN_NORM)
    return ValueHeads(picked, head_dim, reading_rows(rows, scale, rotation))


def _head_log10_p(scores: Array, rng: np.random.Generator) -> float:
    """Monte Carlo permutation p-value (log10) of the diagonal of one head's scores."""
    m = scores.shape[0]
    observed = float(np.trace(scores))
    exceed = 0
    done = 0
    while done < PERMUTATIONS:
        batch = min(1000, PERMUTATIONS - done)
        permutations = rng.permuted(np.tile(np.arange(m), (batch, 1)), axis=1)
        sums = scores[np.arange(m)[None, :], permutations].sum(axis=1)
        exceed += int(np.sum(sums >= observed - 1e-9 * max(1.0, abs(observed))))
        done += batch
    return math.log10((1 + exceed) / (1 + PERMUTATIONS))


def attention_log10_p(a: ValueHeads | None, b: ValueHeads | None) -> float | None:
    """log10 p of the same-position value-row test for one layer pair (None: not testable,
    e.g. other head counts or head widths)."""
    if a is None or b is None or a.head_dim != b.head_dim or not np.array_equal(a.heads, b.heads):
        return None
    if a.rows.shape[1] != b.rows.shape[1]:
        return None
    rng = np.random.default_rng(0)
    d = a.head_dim
    found = []
    for index in range(len(a.heads)):
        block = slice(index * d, (index + 1) * d)
        scores = normalise_rows(b.rows[block]) @ normalise_rows(a.rows[block]).T
        if not np.all(np.isfinite(scores)):
            continue
        found.append(_head_log10_p(scores, rng))
    return fisher(found) if found else None
