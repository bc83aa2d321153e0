"""The report of a scan against an index: ``scan_report(ScanResult) -> Report``.

Its figures are the evidence per tested candidate, then the best relative's own comparison
(layer evidence, modules, ledger); its tables, the candidates and the model card's claims
checked against the weights (a contradicted claim flagged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

from forebear.compare.result import REPORTING_LOG10_P
from forebear.report.comparison import (
    comparison_figures,
    comparison_finding,
    comparison_tables,
    plain_json,
)
from forebear.report.model import Bar, Bars, Report, Segment, Table
from forebear.report.provenance import Making, reproducibility
from forebear.report.words import cannot_see, comparison_headline
from forebear.scan import ScanMatch, ScanResult

__all__ = ["scan_report"]

INDEX_LIMIT = (
    "the index: only indexed models can be found; a parent outside the index leaves "
    "'no indexed relative'"
)


def scan_report(
    result: ScanResult,
    *,
    seed: int | None = None,
    settings: Mapping[str, Any] | None = None,
    **made: Unpack[Making],
) -> Report:
    """The report of ``result``; the keywords as ``comparison_report``'s, and ``settings``
    the scan ran with (``top``, ``weights``, ...), which the result does not record."""
    best = result.best
    lead = best or (result.matches[0] if result.matches else None)
    return Report(
        kind="scan",
        title=f"What does {result.query} come from?",
        verdict=result.verdict,
        headline=_headline(result),
        finding=None if lead is None else comparison_finding(lead.decisive),
        facts=_facts(result),
        figures=(
            *_candidates(result),
            *(() if best is None else comparison_figures(best.decisive)),
        ),
        tables=(
            _matches(result),
            *_checks(result),
            *(() if best is None else comparison_tables(best.decisive)),
        ),
        cannot_see=cannot_see([*(() if lead is None else lead.decisive.cannot_see), INDEX_LIMIT]),
        reproducibility=reproducibility(seed=seed, settings=dict(settings or {}), **made),
        result=plain_json(result.to_json()),
    )


def _tested_on(match: ScanMatch) -> str:
    return "weights" if match.weights is not None else "fingerprints"


def _headline(result: ScanResult) -> str:
    if result.best is None:
        return (
            f"No indexed relative: none of the {len(result.matches)} candidates tested (of "
            f"{result.indexed} indexed models) shares initialisation with {result.query}."
        )
    if result.merge is not None:
        (a, b), (wa, wb) = result.merge.parents, result.merge.weights
        return (
            f"{result.query} is statistically consistent with a merge of {a} (weight {wa:.2f}) "
            f"and {b} (weight {wb:.2f}), both of which it shares initialisation with."
        )
    said = comparison_headline(result.best.decisive)
    return f"{said} (Tested on {_tested_on(result.best)}.)"


def _facts(result: ScanResult) -> tuple[str, ...]:
    facts = [
        f"card: {c.claim} — contradicted by the weights: {c.evidence}"
        for c in result.checks
        if c.status == "contradicted"
    ]
    if result.best is not None:
        facts += result.best.decisive.reasons
    facts.append(
        f"{result.retrieved} of {result.indexed} indexed models ranked by retrieval; "
        f"{len(result.matches)} tested. Retrieval scores rank candidates; the verdicts come "
        "from the tests."
    )
    return tuple(facts)


def _candidates(result: ScanResult) -> tuple[Bars, ...]:
    if not result.matches:
        return ()
    bars = tuple(
        Bar(
            m.record.label,
            (Segment("evidence", max(-m.decisive.log10_p, 0.0)),),
            f"{m.decisive.verdict}; log10 p = {m.decisive.log10_p:.1f} on "
            f"{_tested_on(m)}; retrieval score {m.score:.3f}",
        )
        for m in result.matches
    )
    return (
        Bars(
            title="Evidence per tested candidate",
            value_label="−log10 p",
            categories=("evidence",),
            bars=bars,
            threshold=-REPORTING_LOG10_P,
            threshold_label=f"p = 1e{REPORTING_LOG10_P:.0f} (derived is claimed beyond)",
            note="candidates in the order tested: strongest evidence first",
        ),
    )


def _matches(result: ScanResult) -> Table:
    rows = tuple(
        (
            m.record.label,
            f"{m.score:.3f}",
            m.decisive.verdict,
            f"{m.decisive.log10_p:.1f}",
            _tested_on(m) + ("" if m.weights_error is None else f" (weights: {m.weights_error})"),
        )
        for m in result.matches
    )
    columns = ("candidate", "retrieval", "verdict", "log10 p", "tested on")
    return Table(
        "Candidates tested", columns, rows, "retrieval scores rank candidates; they never decide"
    )


def _checks(result: ScanResult) -> tuple[Table, ...]:
    if not result.checks:
        return ()
    rows = tuple((c.claim, c.status, c.evidence) for c in result.checks)
    flagged = tuple(i for i, c in enumerate(result.checks) if c.status == "contradicted")
    return (
        Table(
            "The model card's claims, checked against the weights",
            ("claim", "status", "evidence"),
            rows,
            flagged=flagged,
        ),
    )
