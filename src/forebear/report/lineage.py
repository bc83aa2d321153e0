"""The report of a lineage tree: ``tree_report(Lineage) -> Report``.

Its figure is the forest itself (families, parent edges labelled with the probability of
their direction, merges with two parents); its table, every edge with its evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

from forebear.lineage.tree import Edge, Lineage
from forebear.report.comparison import plain_json
from forebear.report.model import EdgeStyle, Forest, ForestEdge, Report, Table
from forebear.report.provenance import Making, reproducibility
from forebear.report.words import cannot_see

__all__ = ["tree_report"]

DIRECTION_LIMIT = (
    "direction: which of two related models is the parent is read from structure, storage "
    "precision and weight growth; it is a probability, and an edge between 0.1 and 0.9 is "
    "left undetermined"
)
_P_NOTE = (
    "P: the probability of the direction drawn, from the weights alone (with the metadata "
    "priors reported apart); dashed: undetermined; dotted: decided by the priors"
)


def tree_report(
    result: Lineage,
    *,
    seed: int | None = None,
    settings: Mapping[str, Any] | None = None,
    **made: Unpack[Making],
) -> Report:
    """The report of ``result``; the keywords as ``scan_report``'s."""
    return Report(
        kind="tree",
        title=f"Lineage of {len(result.models)} models",
        verdict=_verdict(result),
        headline=_headline(result),
        finding=None,
        facts=_facts(result),
        figures=(
            Forest(
                "The lineage forest",
                result.families,
                tuple(_forest_edge(e) for e in result.edges),
                _P_NOTE,
            ),
        ),
        tables=(_edges(result),),
        cannot_see=cannot_see([DIRECTION_LIMIT]),
        reproducibility=reproducibility(seed=seed, settings=dict(settings or {}), **made),
        result=plain_json(result.to_json()),
    )


def _merged(result: Lineage) -> set[str]:
    return {e.child for e in result.edges if e.relation == "merge"}


def _count(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _verdict(result: Lineage) -> str:
    return (
        f"{_count(len(result.families), 'family', 'families')}, "
        f"{_count(len(result.edges), 'parent edge', 'parent edges')}, "
        f"{_count(len(_merged(result)), 'merge', 'merges')}"
    )


def _headline(result: Lineage) -> str:
    undetermined = sum(e.decided_by == "undetermined" for e in result.edges)
    return (
        f"Among {len(result.models)} models, the weights show "
        f"{_count(len(result.families), 'family', 'families')} (models that share "
        f"initialisation, p < 1e-6 per pair), "
        f"{_count(len(result.edges), 'parent edge', 'parent edges')} ({undetermined} of "
        f"undetermined direction) and {_count(len(_merged(result)), 'merge', 'merges')}."
    )


def _facts(result: Lineage) -> tuple[str, ...]:
    facts = [f"{result.comparisons} pairs compared in {result.seconds:.1f} s"]
    facts += [f"warning: {w}" for w in result.warnings]
    declared = {
        e.child for e in result.edges if e.relation == "merge" and e.attached_by == "priors"
    }
    for child in sorted(_merged(result)):
        parents = " and ".join(result.parents(child))
        if child in declared:
            facts.append(f"{child} is declared a merge of {parents} (metadata; the weights "
                         "do not rule it out)")  # fmt: skip
        else:
            facts.append(f"{child} is a merge of {parents}")
    moved = [e for e in result.edges if e.attached_by == "priors" and e.relation != "merge"]
    for edge in moved:
        facts.append(f"{edge.child} is placed under {edge.parent} by its declared base (the "
                     "weights cannot tell the parent apart)")  # fmt: skip
    return tuple(facts)


def _style(edge: Edge) -> EdgeStyle:
    if edge.relation == "merge":
        return "merge"
    if edge.decided_by == "priors" or edge.attached_by == "priors":
        return "priors"
    return "undetermined" if edge.decided_by == "undetermined" else "weights"


def _forest_edge(edge: Edge) -> ForestEdge:
    label = f"P {edge.p_weights:.2f}" + ("?" if edge.decided_by == "undetermined" else "")
    if edge.weight is not None:
        label = f"weight {edge.weight:.2f}; {label}"
    note = f"{edge.parent} → {edge.child}: {edge.relation}; {label}"
    if edge.p_priors is not None:
        note += f"; with priors {edge.p_priors:.2f}"
    if edge.attached_by == "priors":
        note += "; parent from the declared base (the weights cannot tell it from "
        note += ", ".join(edge.alternatives) + ")"
    return ForestEdge(edge.parent, edge.child, label, _style(edge), note)


def _edges(result: Lineage) -> Table:
    rows = tuple(
        (
            e.parent,
            e.child,
            e.relation,
            "–" if e.log10_p is None else f"{e.log10_p:.1f}",
            f"{e.p_weights:.2f}",
            "–" if e.p_priors is None else f"{e.p_priors:.2f}",
            e.decided_by + ("; parent from priors" if e.attached_by == "priors" else ""),
            ", ".join(e.alternatives) or "–",
        )
        for e in result.edges
    )
    columns = (
        "parent",
        "child",
        "relation",
        "log10 p",
        "P (weights)",
        "P (priors)",
        "decided by",
        "nearly as close",
    )
    return Table("Parent edges", columns, rows, _P_NOTE)
