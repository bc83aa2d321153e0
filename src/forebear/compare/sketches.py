"""A ``Comparison`` from two fingerprints: the verdict, layer map and ledger without the weights.

``fingerprint.evidence`` tests the sketched units; this module turns its cells
into the same result shape ``compare`` returns for weights, with the same
thresholds (``REPORTING_LOG10_P``, the layer map's per-cell threshold) and the
same verdict wording (``verdict.decide``). What a sketch cannot give is said:
the ledger counts MLP parameters only (a fingerprint keeps no per-tensor
sizes), the change is measured on the sampled rows in canonical coordinates,
and permuted units or a changed MLP width leave the test blind.
"""

from __future__ import annotations

import math
import time

import numpy as np

from forebear.align.layers import LayerMap, align_layers
from forebear.compare.result import (
    REPORTING_LOG10_P,
    Comparison,
    LayerEvidence,
    Ledger,
    LedgerLayer,
)
from forebear.compare.verdict import Shape, decide
from forebear.fingerprint.evidence import FingerprintEvidence, SketchCell, compare_fingerprints
from forebear.fingerprint.sketch import Fingerprint, fingerprint, token_hashes
from forebear.model import Model

__all__ = ["CANNOT_SEE", "compare_sketches", "sketch_like"]

NULL = (
    "exact: B's MLP units are exchangeable under independent initialisation, so the "
    "same-position score of the fingerprints' sampled units is a permutation test "
    "(Chatterjee's bound), Fisher over layers"
)
NULL_MATCHED = (
    "exact for the same-position units (Chatterjee's bound); approximate for the units "
    "chosen by content (matched on reading rows, held-out down columns against re-pairings, "
    "normal approximation); Bonferroni per layer pair, Fisher over layers"
)
CANNOT_SEE = (
    "distillation: a model trained on A's outputs shares no weights with A; "
    "an 'independent' verdict does not rule it out (use the behaviour tier)",
    "training data: two models trained from different seeds on the same data "
    "are independent here, as they should be",
)
_FROM_SKETCHES = {
    False: "from fingerprints without content samples (units at fixed positions only): "
    "permuted units and a changed MLP width leave this comparison blind; fingerprint both "
    "with --content-units, or compare the weights",
    True: "from fingerprints: units at fixed positions and units chosen by content "
    "(the weights were not read)",
}


_TEST_NAME = {
    False: "same-position units (fingerprints)",
    True: "same-position and matched units (fingerprints)",
}

# A fingerprint samples 64 units a layer, too few for one layer to reach 1e-6 on its own (the
# combined test decides "derived"); a B layer is mapped to an A layer at a family-wise 1 %.
LAYER_LOG10_P = -2.0


def compare_sketches(a: Fingerprint, b: Fingerprint, *, names: tuple[str, str] | None = None
                     ) -> Comparison:  # fmt: skip
    """Compare two fingerprints; the result has the shape of a comparison of weights."""
    started = time.perf_counter()
    evidence = compare_fingerprints(a, b)
    cells = evidence.cells
    layers_a, layers_b = len(a.layers), len(b.layers)
    matrix = np.full((layers_b, layers_a), np.nan)
    for cell in cells:
        matrix[cell.b_layer, cell.a_layer] = -cell.log10_p
    threshold = -LAYER_LOG10_P + math.log10(max(len(cells), 1))
    layer_map = align_layers(matrix, threshold) if cells else None
    ledger = _ledger(a, b, evidence, layer_map)
    as_layers = {(c.a_layer, c.b_layer): _layer_evidence(c) for c in cells}
    source = "fingerprints" if evidence.reason is None or cells else "none"
    verdict, reasons = decide(
        _shape(a), _shape(b), b.meta["structure"].get("vocab"), evidence.log10_p, None, source,
        as_layers, layer_map, ledger,
    )  # fmt: skip
    if evidence.reason is not None and not cells:
        reasons = [evidence.reason, *reasons[1:]] if verdict == "inconclusive" else reasons
    name_a, name_b = names or (str(a.meta.get("source")), str(b.meta.get("source")))
    return Comparison(
        a=name_a,
        b=name_b,
        verdict=verdict,
        log10_p=evidence.log10_p,
        null=(NULL_MATCHED if evidence.matched else NULL) if cells else "no test ran",
        reasons=(*reasons, _FROM_SKETCHES[evidence.matched]),
        cannot_see=CANNOT_SEE,
        families=(str(a.meta["structure"]["family"]), str(b.meta["structure"]["family"])),
        residual={
            "source": "fingerprints",
            "shared_tokens": evidence.shared_tokens,
            "rows_used": evidence.shared_tokens,
            "fit": None if math.isnan(evidence.fit) else evidence.fit,
            "identity_like": None,
        },
        evidence=tuple(as_layers[key] for key in sorted(as_layers, key=lambda k: (k[1], k[0]))),
        layer_map=() if layer_map is None else layer_map.sources,
        modules=_modules(evidence, layer_map),
        ledger=ledger,
        tests={_TEST_NAME[evidence.matched]: evidence.log10_p} if cells else {},
        bytes_read=0,
        seconds=time.perf_counter() - started,
        fast=True,
        settings={"fingerprints": True, "all_pairs": evidence.all_pairs},
    )


def sketch_like(model: Model, other: Fingerprint, source: str) -> Fingerprint:
    """``model``'s fingerprint with the settings ``other`` was made with, so the two line up
    (a remote model without its content sample: that would read every MLP weight)."""
    settings = other.meta["settings"]
    content = int(settings.get("content_units", 0)) if model.traffic() is None else 0
    return fingerprint(
        model, dims=int(settings["dims"]), units=int(settings["units"]), content_units=content,
        basis_tokens=int(settings["basis_tokens"]), sketch_tokens=int(settings["sketch_tokens"]),
        source=source,
    )  # fmt: skip


def _shape(found: Fingerprint) -> Shape:
    structure = found.meta["structure"]
    dtypes = structure.get("dtypes")
    return Shape(
        layers=int(structure["layers"]),
        hidden=structure.get("hidden"),
        experts=int(structure.get("experts", 0)),
        dtypes=None if dtypes is None else frozenset(str(d) for d in dtypes),
    )


def _layer_evidence(cell: SketchCell) -> LayerEvidence:
    return LayerEvidence(
        a_layer=cell.a_layer, b_layer=cell.b_layer, module_a="mlp", module_b="mlp",
        log10_p_same_position=cell.log10_p, log10_p_matched=None, z_same_position=None,
        z_matched=None, match_quality=math.nan, relative_delta=cell.relative_delta,
        units_sampled=cell.units,
    )  # fmt: skip


def _mlp_parameters(found: Fingerprint) -> list[int]:
    """Per layer, the dense MLP's parameters (hidden × width × matrices); 0 when not sketched."""
    hidden = int(found.meta["structure"].get("hidden") or 0)
    return [
        0 if s is None else hidden * s.width * (3 if s.gate is not None else 2)
        for s in found.layers
    ]


def new_token_share(a: Fingerprint, b: Fingerprint) -> float:
    """The share of B's token strings A lacks, estimated from the two bottom-k sketches: among
    B's sketched strings hashing at or below both sketches' largest hash, the share not in A's."""
    if not a.tokens or not b.tokens:
        return 0.0
    hashes_b = token_hashes(list(b.tokens))
    cutoff = min(token_hashes(list(a.tokens)).max(), hashes_b.max())
    held_a = set(a.tokens)
    below = [key for key, h in zip(b.tokens, hashes_b, strict=True) if h <= cutoff]
    return sum(1 for key in below if key not in held_a) / max(len(below), 1)


def _ledger(a: Fingerprint, b: Fingerprint, evidence: FingerprintEvidence,
            layer_map: LayerMap | None) -> Ledger | None:  # fmt: skip
    if layer_map is None:
        return None
    sizes = _mlp_parameters(b)
    by_pair = {(c.a_layer, c.b_layer): c for c in evidence.cells}
    rows, inherited, weighted, weight = [], 0, 0.0, 0
    for j, source in enumerate(layer_map.sources):
        cell = None if source is None else by_pair.get((source, j))
        delta = None if cell is None else cell.relative_delta
        rows.append(LedgerLayer(j, source, None if cell is None else cell.log10_p, delta, sizes[j]))
        if source is not None:
            inherited += sizes[j]
            if delta is not None:
                weighted, weight = weighted + delta * sizes[j], weight + sizes[j]
    vocab_b = b.meta["structure"].get("vocab")
    new_tokens = None if not vocab_b else round(new_token_share(a, b) * int(vocab_b))
    return Ledger(
        inherited_fraction=inherited / max(sum(sizes), 1),
        changed=weighted / weight if weight else None,
        layers=tuple(rows),
        new_layers=tuple(j for j, s in enumerate(layer_map.sources) if s is None),
        dropped_layers=layer_map.dropped,
        repeated_layers=layer_map.repeated,
        shared_tokens=evidence.shared_tokens,
        new_tokens=new_tokens,
        units_a=tuple(0 if s is None else s.width for s in a.layers),
        units_b=tuple(0 if s is None else s.width for s in b.layers),
        experts_b=int(b.meta["structure"].get("experts", 0)),
    )


def _modules(
    evidence: FingerprintEvidence, layer_map: LayerMap | None
) -> dict[str, dict[str, object]]:
    if not evidence.cells:
        return {}
    mapped = [] if layer_map is None else [
        (s, j) for j, s in enumerate(layer_map.sources) if s is not None
    ]  # fmt: skip
    by_pair = {(c.a_layer, c.b_layer): c for c in evidence.cells}
    values = [by_pair[key].log10_p for key in mapped if key in by_pair]
    return {
        "mlp": {
            "kind": "same-position units (fingerprints)",
            "log10_p": evidence.log10_p,
            "b_layers_tested": len({c.b_layer for c in evidence.cells}),
            "b_layers_with_evidence": sorted(
                j
                for s, j in mapped
                if (s, j) in by_pair and by_pair[(s, j)].log10_p <= REPORTING_LOG10_P
            ),
            "mapped_log10_p": min(values, default=0.0),
        }
    }
