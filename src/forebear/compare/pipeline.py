"""``compare(a, b)``: is B derived from A? The pairwise pipeline, layer by layer.

1. Residual map from A's stream to B's through the embeddings of shared token
   strings (``forebear.align.residual``); B's sampled rows are mapped back into
   A's basis (a few hundred rows rotated, not the whole of A).
2. Per layer pair, every MLP of B (dense, experts) against every MLP of A:
   the same-position test (exact null) and the matched-unit test (approximate
   null) of ``evidence``, and the same-position test of sampled value heads
   (exact null, ``attention``). Layer pairs: the diagonal first when depths agree;
   every pair when they differ or a diagonal layer shows no evidence. Only
   one layer of A is held at a time; B's layers are held as samples of units.
3. Combined tests, each valid on its own: Fisher over the diagonal's exact
   p-values, MLP and attention (their permutations are independent under H0);
   the diagonal's matched p-values by Rüger's order statistic at half the
   layers; when the full matrix ran, Bonferroni over every cell's exact
   p-value and Rüger at half of B's layers over each B layer's best matched
   cell. The reported p-value is the Bonferroni minimum of these four (a test
   not run counts as p = 1), and its ``null`` names the test that gave it.
4. Layer map by monotone alignment of the cells' evidence, the ledger and the
   verdict (``verdict``).

``--fast`` reads a deterministic sample of embedding rows and of gate/up rows
(positions a function of shape only, so two models of one shape line up) and
runs the same-position test alone: a re-parameterised model needs the full test.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from forebear.align.layers import LayerMap, align_layers
from forebear.align.residual import ResidualAlignment, align_residual
from forebear.architectures import Role
from forebear.compare.attention import ValueHeads, attention_log10_p, value_heads
from forebear.compare.evidence import MlpEvidence, Prepared, mlp_evidence, prepare, sample_units
from forebear.compare.ledger import build_ledger
from forebear.compare.result import REPORTING_LOG10_P, Comparison, LayerEvidence
from forebear.compare.verdict import Shape, decide
from forebear.compare.views import ReadCounter, layer_views, sampled_layer_views
from forebear.model import Model, open_model
from forebear.stats import bonferroni, fisher, order_statistic

if TYPE_CHECKING:
    from forebear.fingerprint.sketch import Fingerprint

__all__ = ["Settings", "compare"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    fast: bool = False
    max_units: int = 512  # B units sampled per MLP (full test)
    fast_units: int = 64  # gate/up rows read per MLP (fast)
    embedding_rows: int = 8192  # shared-token embedding rows read (full)
    fast_embedding_rows: int = 2048
    attention_heads: int = 8  # value heads sampled per layer (full test only)
    # The all-pairs pass holds every B layer's sample at once; its units per layer shrink
    # so that this bound holds (512 units at the zoo's widths, about 85 for a 32-layer 7B).
    pair_cache_bytes: int = 256 << 20

    @property
    def units(self) -> int:
        return self.fast_units if self.fast else self.max_units


def compare(
    a: str | os.PathLike[str] | Model | Fingerprint,
    b: str | os.PathLike[str] | Model | Fingerprint,
    *,
    fast: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Compare two models (paths or opened ``Model``s); see the module docstring. Either side
    may be a fingerprint (a file or a ``Fingerprint``): the comparison then runs on sketches
    (``compare.sketches``), the other side fingerprinted with the same settings."""
    chosen = settings or Settings(fast=fast)
    say = progress or (lambda message: None)
    started = time.perf_counter()
    sketches = [_as_fingerprint(given) for given in (a, b)]
    opened: list[Model] = []
    try:
        models = []
        for given, sketch in zip((a, b), sketches, strict=True):
            if isinstance(given, Model) or sketch is not None:
                models.append(given if isinstance(given, Model) else None)
            else:
                assert isinstance(given, str | os.PathLike)
                opened.append(open_model(given))
                models.append(opened[-1])
        if any(sketches):
            return _compare_sketched(models, sketches, (a, b), say)
        assert models[0] is not None and models[1] is not None
        return _compare(models[0], models[1], chosen, say, started)
    finally:
        for model in opened:
            model.close()


def _as_fingerprint(given: str | os.PathLike[str] | Model | Fingerprint) -> Fingerprint | None:
    # Imported here: fingerprints build on this package (its views and result thresholds).
    from forebear.fingerprint.io import is_fingerprint_file, load_fingerprint
    from forebear.fingerprint.sketch import Fingerprint

    if isinstance(given, Fingerprint):
        return given
    if not isinstance(given, Model) and is_fingerprint_file(given):
        return load_fingerprint(given)
    return None


def _compare_sketched(models: list[Model | None], sketches: list[Fingerprint | None],
                      given: tuple[object, object], say: Progress) -> Comparison:  # fmt: skip
    """At least one side is a fingerprint: fingerprint the other like it, compare sketches."""
    from forebear.compare.sketches import compare_sketches, sketch_like

    names = []
    for index, (model, sketch) in enumerate(zip(models, sketches, strict=True)):
        other = sketches[1 - index]
        names.append(model.name if model is not None else str(given[index]))
        if sketch is None:
            assert model is not None and other is not None
            say(f"fingerprinting {model.name}")
            sketches[index] = sketch_like(model, other, model.name)
    first, second = sketches
    assert first is not None and second is not None
    return compare_sketches(first, second, names=(names[0], names[1]))


def _rotation(
    model_a: Model, model_b: Model, settings: Settings, counter: ReadCounter
) -> tuple[bool, np.ndarray | None, ResidualAlignment | None, str]:
    """Whether the two residual streams can be compared, the map that takes B's rows into
    A's basis (None: the identity), the alignment found and how."""
    ra, rb = model_a.resolved, model_b.resolved
    limit = settings.fast_embedding_rows if settings.fast else settings.embedding_rows
    residual = align_residual(ra, rb, model_a.vocabulary, model_b.vocabulary, limit)
    if residual is not None:
        for name, resolved in (("a", ra), ("b", rb)):
            counter.add(name, resolved, Role.EMBED_TOKENS, None, rows=residual.rows_read)
        back = None if residual.rotation is None else residual.rotation.T.astype(np.float32)
        return True, back, residual, residual.source
    if ra.dims.hidden and ra.dims.hidden == rb.dims.hidden:
        return True, None, None, "identity (too few shared tokens)"
    return False, None, None, "none"


_MIN_KEPT_UNITS = 16
_T = TypeVar("_T")


def _held(cache: dict[int, _T], layer: int, keep: bool, read: Callable[[], _T]) -> _T:
    """``cache[layer]`` when held; else ``read()``, held when ``keep``."""
    if layer in cache:
        return cache[layer]
    found = read()
    if keep:
        cache[layer] = found
    return found


class _Layers:
    """Prepared MLPs per layer: B's sampled (kept), A's whole (one layer at a time)."""

    def __init__(self, model_a: Model, model_b: Model, back: np.ndarray | None,
                 settings: Settings, counter: ReadCounter) -> None:  # fmt: skip
        self.ra, self.rb = model_a.resolved, model_b.resolved
        self.settings, self.counter = settings, counter
        # B's rows are mapped by the transposed residual map; None (the identity: no
        # re-parameterisation found) costs nothing rather than a width² product per row.
        self.back = back
        self._b: dict[int, list[Prepared]] = {}
        self._b_heads: dict[int, ValueHeads | None] = {}
        self.kept_units, self.kept_heads = self._kept_sizes()

    def _kept_sizes(self) -> tuple[int, int]:
        """Units per B MLP and value heads per B layer for the all-pairs pass, which holds
        B's samples of every layer at once: MLP rows and stripped rows (gate, up, down,
        float32, A's width) within ``pair_cache_bytes``, value rows within a quarter of it."""
        if self.settings.fast:
            return self.settings.units, 0
        hidden = self.ra.dims.hidden or self.rb.dims.hidden or 1
        modules = (self.rb.dims.experts or 1) + (1 if self.rb.dims.shared_experts else 0)
        per_layer = self.settings.pair_cache_bytes // max(len(self.rb.layers), 1)
        units = per_layer // (6 * 4 * hidden * modules)
        head_dim = self.rb.dims.head_dim or 1
        heads = per_layer // 4 // (head_dim * 4 * hidden)
        return (
            int(max(_MIN_KEPT_UNITS, min(self.settings.units, units))),
            int(max(1, min(self.settings.attention_heads, heads))),
        )

    def b(self, layer: int, keep: bool = True) -> list[Prepared]:
        """B's sampled units, mapped into A's basis (only the sampled rows are rotated).

        ``keep`` holds them for the all-pairs pass (``kept_units`` per MLP); the diagonal
        pass uses each layer once, with the full sample, and keeps nothing."""
        units = self.kept_units if keep else self.settings.units

        def read() -> list[Prepared]:
            if self.settings.fast:
                return sampled_layer_views(self.rb, "b", layer, self.back, self.counter, units)
            views = layer_views(self.rb, "b", layer, None, self.counter)
            return [prepare(v, sample_units(v.units, units), True, self.back) for v in views]

        return _held(self._b, layer, keep, read)

    def b_heads(self, layer: int, keep: bool = True) -> ValueHeads | None:
        """B's sampled value heads in A's basis; ``keep`` as for ``b`` (``kept_heads``)."""
        if self.settings.fast:
            return None
        heads = self.kept_heads if keep else self.settings.attention_heads

        def read() -> ValueHeads | None:
            return value_heads(self.rb, "b", layer, self.back, self.counter, heads)

        return _held(self._b_heads, layer, keep, read)

    def a_heads(self, layer: int, kept: bool = False) -> ValueHeads | None:
        """A's value heads at the positions B's are sampled at (``kept``: all-pairs pass)."""
        if self.settings.fast:
            return None
        heads = self.kept_heads if kept else self.settings.attention_heads
        return value_heads(self.ra, "a", layer, None, self.counter, heads)

    def a(self, layer: int) -> list[Prepared]:
        """A's units in its own basis: all of them, or the fast sample."""
        if self.settings.fast:
            units = self.settings.units
            return sampled_layer_views(self.ra, "a", layer, None, self.counter, units)
        return [
            prepare(v, None, True) for v in layer_views(self.ra, "a", layer, None, self.counter)
        ]


def _cell(a_layer: int, b_layer: int, a: Sequence[Prepared], b: Sequence[Prepared],
          matched: bool, attention: float | None = None) -> LayerEvidence | None:  # fmt: skip
    """The evidence of one layer pair: every MLP of B against every MLP of A (the best
    pairing reported, its p-values adjusted for the pairings tried), and ``attention``,
    the value-row test's log10 p."""
    found: list[MlpEvidence] = [mlp_evidence(pa, pb, matched) for pb in b for pa in a]
    if not found:
        return None
    pairs = math.log10(len(found))

    def adjusted(values: list[float]) -> float | None:
        return min(0.0, min(values) + pairs) if values else None

    exact = [e.same_position.log10_p for e in found if e.same_position is not None]
    approx = [e.matched.log10_p for e in found if e.matched is not None]
    best = min(found, key=lambda e: e.log10_p)
    kept = best.matching if best.same_position is None else None  # widths differ
    return LayerEvidence(
        a_layer=a_layer,
        b_layer=b_layer,
        module_a=best.label_a,
        module_b=best.label_b,
        log10_p_same_position=adjusted(exact),
        log10_p_matched=adjusted(approx),
        z_same_position=None if best.same_position is None else best.same_position.z,
        z_matched=None if best.matched is None else best.matched.z,
        match_quality=best.match_quality,
        relative_delta=best.relative_delta,
        units_sampled=len(best.sampled),
        modules_b=len(b),
        modules_b_significant=sum(
            1
            for pb in b
            if min((e.log10_p for e in found if e.label_b == pb.label), default=0.0) + pairs
            <= REPORTING_LOG10_P
        ),
        units_from_a=None if kept is None else tuple(int(u) for u in kept),
        units_b_sampled=tuple(int(u) for u in best.sampled) if kept is not None else None,
        log10_p_attention=attention,
    )


def _half(count: int) -> int:
    return max(1, math.ceil(count / 2))


def _combined(cells: Sequence[LayerEvidence], diagonal: bool) -> dict[str, float]:
    """The combined tests. Exact p-values combine by Fisher (diagonal) or Bonferroni (every
    pair). The approximate test must hold in at least half of B's layers (Rüger's order
    statistic, valid under any dependence): it rests on a normal tail that convergent
    learning can fatten in a single layer pair, never in most of them at once."""
    if diagonal:
        # Every exact p-value of every layer: independent under H0 (each is a function of
        # its own uniformly random permutation of B's units or value rows).
        exact = [
            p for c in cells for p in (c.log10_p_same_position, c.log10_p_attention)
            if p is not None
        ]  # fmt: skip
        approx = [c.log10_p_matched for c in cells if c.log10_p_matched is not None]
        return {
            "same-position, Fisher over layers": fisher(exact),
            "matched units, in half of the layers": order_statistic(approx, _half(len(approx))),
        }
    exact = [c.log10_p_exact for c in cells if c.log10_p_exact is not None]
    rows: dict[int, list[float]] = {}
    for c in cells:
        if c.log10_p_matched is not None:
            rows.setdefault(c.b_layer, []).append(c.log10_p_matched)
    best = [bonferroni(values) for values in rows.values()]  # per B layer: its best A layer
    return {
        "same-position, Bonferroni over layer pairs": bonferroni(exact),
        "matched units, best A layer in half of B's layers": order_statistic(
            best, _half(len(best))
        ),
    }


def _modules(
    cells: Mapping[tuple[int, int], LayerEvidence],
    layer_map: LayerMap | None,
    residual: ResidualAlignment | None,
) -> dict[str, dict[str, Any]]:
    """Which modules carry the evidence, over the layer pairs of the layer map (the
    diagonal when there is no map): per module, the combined log10 p of its own tests and
    the layers where it passes the reporting threshold on its own."""
    if layer_map is not None and any(s is not None for s in layer_map.sources):
        mapped = [cells[(s, j)] for j, s in enumerate(layer_map.sources)
                  if s is not None and (s, j) in cells]  # fmt: skip
    else:
        mapped = [c for c in cells.values() if c.a_layer == c.b_layer]
    found: dict[str, dict[str, Any]] = {
        "embeddings": {
            "kind": "alignment statistic (ranks, never decides)",
            "fit": None if residual is None else residual.fit,
            "shared_tokens": None if residual is None else residual.tokens,
        }
    }
    mlp_label = "experts" if any(c.modules_b > 1 for c in mapped) else "mlp"
    columns: tuple[tuple[str, str, str], ...] = (
        (mlp_label, "log10_p_same_position", "exact (same-position units)"),
        (f"{mlp_label} (matched units)", "log10_p_matched",
         "approximate (matched units, held-out bulk)"),
        ("attention", "log10_p_attention", "exact (same-position value rows)"),
    )  # fmt: skip
    for name, field, kind in columns:
        values = [(c.b_layer, getattr(c, field)) for c in mapped if getattr(c, field) is not None]
        if not values:
            continue
        ps: list[float] = [p for _, p in values]
        found[name] = {
            "kind": kind,
            "log10_p": fisher(ps) if kind.startswith("exact") else bonferroni(ps),
            "b_layers_with_evidence": [j for j, p in values if p <= REPORTING_LOG10_P],
            "b_layers_tested": len(values),
        }
    return found


_NULLS = {
    "same-position": "exact: exchangeability of MLP units and value-head rows under independent "
    "initialisation (Chatterjee's bound for permutation sums; Monte Carlo permutations per head)",
    "matched units": "approximate: held-out bulk similarity of matched units vs re-pairings "
    "(normal approximation per layer pair, asked of half of B's layers by Rüger's order "
    "statistic; calibration measured by forebear bench)",
}


def _compare(model_a: Model, model_b: Model, settings: Settings, say: Progress,
             started: float) -> Comparison:  # fmt: skip
    counter = ReadCounter()
    comparable, back, residual, source = _rotation(model_a, model_b, settings, counter)
    ra, rb = model_a.resolved, model_b.resolved
    layers_a, layers_b = list(ra.layers), list(rb.layers)
    cells: dict[tuple[int, int], LayerEvidence] = {}
    tests: dict[str, float] = {}
    pair_units: int | None = None  # units per B layer in the all-pairs pass, when it ran
    if comparable and layers_a and layers_b:
        store = _Layers(model_a, model_b, back, settings, counter)
        matched = not settings.fast
        full = len(layers_a) != len(layers_b)
        if not full:
            for layer in layers_a:
                say(f"layer {layer + 1}/{len(layers_a)}")
                # Attention first, so its rows are freed before the MLPs are read; then B's
                # layer, which is freed once sampled, then A's.
                heads = store.a_heads(layer), store.b_heads(layer, keep=False)
                attention = attention_log10_p(*heads)
                del heads
                prepared_b = store.b(layer, keep=False)
                cell = _cell(layer, layer, store.a(layer), prepared_b, matched, attention)
                if cell is not None:
                    cells[(layer, layer)] = cell
            diagonal = list(cells.values())
            tests |= _combined(diagonal, diagonal=True)
            threshold = REPORTING_LOG10_P - math.log10(max(len(layers_a), 1))
            full = len(diagonal) < len(layers_a) or any(c.log10_p > threshold for c in diagonal)
        if full and not settings.fast:
            pair_units = store.kept_units
            for i in layers_a:
                say(f"layer pairs: A layer {i + 1}/{len(layers_a)}")
                prepared_a, heads_a = store.a(i), store.a_heads(i, kept=True)
                for j in layers_b:
                    if (i, j) not in cells:
                        attention = attention_log10_p(heads_a, store.b_heads(j))
                        cell = _cell(i, j, prepared_a, store.b(j), matched, attention)
                        if cell is not None:
                            cells[(i, j)] = cell
            tests |= _combined(list(cells.values()), diagonal=False)
    log10_p = bonferroni([*tests.values(), *([0.0] * (4 - len(tests)))]) if tests else 0.0
    best_test = min(tests, key=lambda name: tests[name]) if tests else None
    null = "no test ran"
    if best_test is not None:
        null = _NULLS["same-position" if best_test.startswith("same") else "matched units"]
    evidence_matrix = np.full((len(layers_b), len(layers_a)), np.nan)
    for (i, j), cell in cells.items():
        evidence_matrix[j, i] = -cell.log10_p
    threshold = -REPORTING_LOG10_P + math.log10(max(len(cells), 1))
    layer_map = align_layers(evidence_matrix, threshold) if cells else None
    ledger = build_ledger(model_a, model_b, residual, cells, layer_map)
    verdict, reasons = decide(Shape.of_model(model_a), Shape.of_model(model_b), rb.dims.vocab,
                              log10_p, residual, source, cells, layer_map, ledger)  # fmt: skip
    return Comparison(
        a=model_a.name,
        b=model_b.name,
        verdict=verdict,
        log10_p=log10_p,
        null=null,
        reasons=tuple(reasons),
        cannot_see=(
            "distillation: a model trained on A's outputs shares no weights with A; "
            "an 'independent' verdict does not rule it out (use the behaviour tier)",
            "training data: two models trained from different seeds on the same data "
            "are independent here, as they should be",
        ),
        families=(ra.family, rb.family),
        residual={
            "source": source,
            "shared_tokens": None if residual is None else residual.tokens,
            "rows_used": None if residual is None else residual.rows_read,
            "fit": None if residual is None else residual.fit,
            "identity_like": None if residual is None else residual.identity_like,
        },
        evidence=tuple(sorted(cells.values(), key=lambda c: (c.b_layer, c.a_layer))),
        layer_map=() if layer_map is None else layer_map.sources,
        modules=_modules(cells, layer_map, residual),
        ledger=ledger,
        tests=tests,
        bytes_read=counter.total,
        seconds=time.perf_counter() - started,
        fast=settings.fast,
        settings={
            "max_units": settings.units,
            "fast": settings.fast,
            "units_all_pairs": pair_units,
        },
    )
