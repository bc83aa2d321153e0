"""The report of one comparison: ``comparison_report(Comparison) -> Report``.

Its figures are the layer-by-layer evidence (B layers × A layers, the alignment path over
it), the evidence per module, the innovation ledger and the unit-matching quality per
layer; its tables repeat them as numbers. The scan report reuses ``comparison_figures`` and
``comparison_tables`` for its best match.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Unpack

from forebear.compare.result import REPORTING_LOG10_P, Comparison, LayerEvidence, Ledger
from forebear.report.model import (
    Bar,
    Bars,
    Figure,
    Finding,
    Heatmap,
    Report,
    Segment,
    Table,
    plain,
)
from forebear.report.provenance import Making, reproducibility
from forebear.report.words import (
    HYPOTHESIS,
    THRESHOLD,
    cannot_see,
    comparison_headline,
    p_text,
)

__all__ = [
    "comparison_figures",
    "comparison_finding",
    "comparison_report",
    "comparison_tables",
    "finite",
    "plain_json",
]

EVIDENCE = "evidence"
INHERITED, CHANGED, NEW = "inherited", "changed", "new"


def comparison_report(
    result: Comparison,
    *,
    seed: int | None = None,
    **made: Unpack[Making],
) -> Report:
    """The report of ``result``; ``made``: how it was made (``provenance.Making``)."""
    return Report(
        kind="compare",
        title=f"Is {result.b} derived from {result.a}?",
        verdict=result.verdict,
        headline=comparison_headline(result),
        finding=comparison_finding(result),
        facts=tuple(result.reasons),
        figures=comparison_figures(result),
        tables=comparison_tables(result),
        cannot_see=cannot_see(result.cannot_see),
        reproducibility=reproducibility(seed=seed, settings=dict(result.settings), **made),
        result=plain_json(result.to_json()),
    )


def comparison_finding(result: Comparison) -> Finding:
    return Finding(
        finite(result.log10_p), p_text(result.log10_p), HYPOTHESIS, result.null, THRESHOLD
    )


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def plain_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as JSON would give it back (lists, str keys, no NaN), so reports round-trip."""
    loaded: dict[str, Any] = json.loads(json.dumps(plain(data), allow_nan=False, default=str))
    return loaded


def comparison_figures(result: Comparison) -> tuple[Figure, ...]:
    found: list[Figure | None] = [
        _heatmap(result),
        _modules(result),
        _ledger(result.ledger),
        _quality(result),
    ]
    return tuple(f for f in found if f is not None)


def _depths(result: Comparison) -> tuple[int, int]:
    cells = result.evidence
    rows = max([len(result.layer_map), *(c.b_layer + 1 for c in cells)])
    columns = max([0, *(c.a_layer + 1 for c in cells)])
    if result.ledger is not None:
        rows, columns = (
            max(rows, len(result.ledger.units_b)),
            max(columns, len(result.ledger.units_a)),
        )
    return rows, columns


def _heatmap(result: Comparison) -> Heatmap | None:
    if not result.evidence:
        return None
    rows, columns = _depths(result)
    values: list[list[float | None]] = [[None] * columns for _ in range(rows)]
    for cell in result.evidence:
        values[cell.b_layer][cell.a_layer] = finite(-cell.log10_p)
    path = tuple((j, a) for j, a in enumerate(result.layer_map) if a is not None)
    tested = len(result.evidence)
    note = f"{tested} of {rows * columns} layer pairs tested"
    if tested < rows * columns:
        note += " (blank: not tested — the diagonal sufficed, or the pair could not be compared)"
    return Heatmap(
        title="Layer-by-layer evidence of shared initialisation",
        x_label=f"A layer ({result.a})",
        y_label=f"B layer ({result.b})",
        x_ticks=tuple(str(i) for i in range(columns)),
        y_ticks=tuple(str(j) for j in range(rows)),
        values=tuple(tuple(row) for row in values),
        value_label="−log10 p of the layer pair",
        path=path,
        threshold=-REPORTING_LOG10_P,
        note=note + "; the line is the alignment: each B layer's source in A",
    )


def _modules(result: Comparison) -> Bars | None:
    bars = []
    for name, module in result.modules.items():
        log10_p = finite(module.get("log10_p"))
        if log10_p is None:
            continue
        layers = f"{len(module['b_layers_with_evidence'])} of {module['b_layers_tested']}"
        bars.append(
            Bar(
                name,
                (Segment(EVIDENCE, -log10_p),),
                f"{module['kind']}: log10 p = {log10_p:.1f}; B layers with evidence "
                f"on their own: {layers}",
            )
        )
    if not bars:
        return None
    return Bars(
        title="Which modules carry the evidence",
        value_label="−log10 p",
        categories=(EVIDENCE,),
        bars=tuple(bars),
        threshold=-REPORTING_LOG10_P,
        threshold_label=f"p = 1e{REPORTING_LOG10_P:.0f} (derived is claimed beyond)",
        note="each module's own combined test over the aligned layer pairs",
    )


def _ledger(ledger: Ledger | None) -> Bars | None:
    if ledger is None:
        return None
    changed = min(ledger.changed or 0.0, 1.0)
    inherited = ledger.inherited_fraction
    bars = [
        Bar(
            "all of B",
            _split(inherited, changed, 1.0 - inherited),
            f"{inherited:.1%} of B's parameters inherited (embeddings included)",
        )
    ]
    for layer in ledger.layers:
        if layer.a_layer is None:
            bars.append(
                Bar(
                    f"B {layer.b_layer}",
                    _split(0.0, 0.0, 1.0),
                    f"new: no A layer is its source; {layer.parameters:,} parameters",
                )
            )
            continue
        delta = min(layer.mlp_delta or 0.0, 1.0)
        bars.append(
            Bar(
                f"B {layer.b_layer} ← A {layer.a_layer}",
                _split(1.0, delta, 0.0),
                f"from A layer {layer.a_layer}; MLP change {_num(layer.mlp_delta)}; "
                f"{layer.parameters:,} parameters",
            )
        )
    return Bars(
        title="Innovation ledger: what of B comes from A",
        value_label="share of the parameters",
        categories=(INHERITED, CHANGED, NEW),
        bars=tuple(bars),
        maximum=1.0,
        note="inherited parts are split by the relative change ‖B − A‖ / ‖B‖ of the MLP "
        "(a share of the weights' norm, not a count of parameters)",
    )


def _split(inherited: float, changed: float, new: float) -> tuple[Segment, ...]:
    return (
        Segment(INHERITED, inherited * (1.0 - changed)),
        Segment(CHANGED, inherited * changed),
        Segment(NEW, new),
    )


def _quality(result: Comparison) -> Bars | None:
    cells = {(c.b_layer, c.a_layer): c for c in result.evidence}
    bars = []
    for j, a in enumerate(result.layer_map):
        cell = None if a is None else cells.get((j, a))
        quality = None if cell is None else finite(cell.match_quality)
        if cell is None or quality is None:
            continue
        bars.append(
            Bar(
                f"B {j} ← A {a}",
                (Segment("match quality", quality),),
                f"mean |cosine| of {cell.units_sampled} paired units' rows: "
                f"{quality:.3f}; {_modules_of(cell)}",
            )
        )
    if not bars:
        return None
    return Bars(
        title="Unit-matching quality along the alignment",
        value_label="mean |cosine|",
        categories=("match quality",),
        bars=tuple(bars),
        maximum=1.0,
        note="how well B's MLP units pair with A's (1: the same rows)",
    )


def _modules_of(cell: LayerEvidence) -> str:
    return f"{cell.module_b} against A's {cell.module_a}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _log(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.1f}"


def comparison_tables(result: Comparison) -> tuple[Table, ...]:
    found = [_models(result), _ledger_table(result.ledger), _tests_table(result)]
    return tuple(t for t in found if t is not None)


def _models(result: Comparison) -> Table:
    residual = result.residual
    fit = residual.get("fit")
    mapped = (
        "none fitted"
        if fit is None
        else (
            f"Procrustes on {residual.get('rows_used')} of {residual.get('shared_tokens')} shared "
            f"tokens, fit {fit:.3f}"
        )
    )
    rows = (
        ("A (suspected parent)", result.a, result.families[0]),
        ("B (under question)", result.b, result.families[1]),
    )
    read = f"{result.bytes_read / 2**20:.1f} MiB read in {result.seconds:.2f} s"
    return Table(
        "The models",
        ("role", "model", "family"),
        rows,
        f"residual map: {mapped} ({residual.get('source')}); {read}"
        + (" (fast mode)" if result.fast else ""),
    )


def _ledger_table(ledger: Ledger | None) -> Table | None:
    if ledger is None or not ledger.layers:
        return None
    rows = tuple(
        (
            str(layer.b_layer),
            "new" if layer.a_layer is None else str(layer.a_layer),
            _log(layer.log10_p),
            _num(layer.mlp_delta),
            f"{layer.parameters:,}",
        )
        for layer in ledger.layers
    )
    note = (
        f"inherited: {ledger.inherited_fraction:.1%} of B's parameters; new layers: "
        f"{_listed(ledger.new_layers)}; dropped A layers: {_listed(ledger.dropped_layers)}; "
        f"repeated: {_listed(ledger.repeated_layers)}; new tokens: "
        f"{'unknown' if ledger.new_tokens is None else ledger.new_tokens}"
    )
    columns = ("B layer", "from A layer", "log10 p", "MLP change", "parameters")
    return Table("Layer map and ledger", columns, rows, note)


def _listed(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _tests_table(result: Comparison) -> Table | None:
    if not result.tests:
        return None
    rows = tuple((name, _log(value)) for name, value in result.tests.items())
    return Table(
        "Combined tests",
        ("test", "log10 p"),
        rows,
        "the reported p-value is the Bonferroni minimum of these (four tests)",
    )
