"""Benchmark results as JSON (everything) and Markdown (the tables people read).

``to_json`` turns a ``BenchmarkResult`` into plain JSON data: machine, package
versions, date, the manifest's profile, every summary and every pair's
result. ``to_markdown`` renders the tables: detection per method × relation,
false positives and calibration, behaviour-only pairs, parent attribution and
cost. ``write_report`` writes both under a results folder, and only when
called. Infinite scores are written as the strings ``"inf"`` / ``"-inf"``
(JSON has no infinity). This module renders; it computes no metric.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from forebear.bench.run import FPR_LEVELS, BenchmarkResult, MethodSummary, RelationMetrics

__all__ = ["REPORT_SCHEMA", "ReportFiles", "to_json", "to_markdown", "write_report"]

REPORT_SCHEMA = "forebear.bench.report/1"


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _summary_json(summary: MethodSummary) -> dict[str, Any]:
    data: dict[str, Any] = _plain(summary)
    if summary.calibration is not None:
        data["calibration"]["calibrated"] = summary.calibration.calibrated
    return data


def to_json(result: BenchmarkResult) -> dict[str, Any]:
    """Everything the run measured, as JSON-ready data."""
    return {
        "schema": REPORT_SCHEMA,
        "profile": result.profile,
        "manifest": result.manifest,
        "started_at": result.started_at,
        "environment": _plain(result.environment),
        "fpr_levels": list(FPR_LEVELS),
        "methods": [_summary_json(summary) for summary in result.summaries],
        "pairs": {
            method: [_plain(pair) for pair in pairs] for method, pairs in result.pairs.items()
        },
    }


# ---------------------------------------------------------------- Markdown


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows), ""]


def _tpr_cell(relation: RelationMetrics, index: int) -> str:
    if index >= len(relation.tpr):
        return "–"
    found = relation.tpr[index]
    # † marks a level finer than 1/n negatives: the TPR shown is the one at zero false positives.
    return _num(found.tpr, 2) + (" †" if found.below_resolution else "")


def _method_label(summary: MethodSummary) -> str:
    return f"{summary.method}" + (" (unavailable)" if summary.n_unscored == summary.n_pairs else "")


def _detection(summaries: Sequence[MethodSummary]) -> list[str]:
    header = ["method", "relation", "pairs", "AUROC"]
    header += [f"TPR @ FPR ≤ {level:.1%}" for level in FPR_LEVELS]
    header += ["called derived", "unscored"]
    rows = []
    for summary in summaries:
        for rel in summary.relations:
            rows.append(
                [
                    _method_label(summary),
                    rel.relation,
                    str(rel.n_pairs),
                    _num(rel.auroc),
                    *(_tpr_cell(rel, i) for i in range(len(FPR_LEVELS))),
                    f"{rel.detected}/{rel.n_pairs}",
                    str(rel.n_unscored),
                ]
            )
    negatives = max((r.n_negative for s in summaries for r in s.relations), default=0)
    notes = [
        f"Negatives: every independent pair ({negatives}). An unscored pair ranks as no evidence.",
        "† the FPR level is finer than 1/(number of negatives); the TPR shown is at FPR = 0.",
        "",
    ]
    title = "## Detection (each relation against all independent pairs)"
    return [title, "", *notes, *_table(header, rows)]


def _false_positives(summaries: Sequence[MethodSummary]) -> list[str]:
    rows = []
    for s in summaries:
        fp = s.false_positives
        rows.append(
            [
                _method_label(s),
                s.kind,
                _num(s.threshold),
                "–" if fp is None else f"{fp.count}/{fp.total}",
                "–" if fp is None else _num(fp.rate),
                str(s.derived_verdicts_on_independent),
            ]
        )
    header = ["method", "kind", "threshold", "false positives", "rate", "'derived' verdicts"]
    return ["## False positives among independent pairs", "", *_table(header, rows)]


def _calibration(summaries: Sequence[MethodSummary]) -> list[str]:
    rows = []
    for s in summaries:
        if s.calibration is None:
            continue
        for row in s.calibration.rows:
            verdict = (
                "yes" if row.exceeds else ("above α, within noise" if row.exceeds_raw else "no")
            )
            groups = "–" if row.groups is None else f"{row.groups_hit}/{row.groups}"
            rows.append(
                [
                    s.method,
                    f"{row.alpha:g}",
                    f"{row.count}/{row.n}",
                    _num(row.fraction),
                    f"{row.binomial_p:.3g}",
                    verdict,
                    groups,
                ]
            )
    lines = ["## Calibration (p-values of independent pairs)", ""]
    if not rows:
        return [*lines, "No p-value method was run.", ""]
    header = [
        "method", "α", "p < α", "fraction", "binomial P(≥ count)", "exceeds α",
        "lineage pairs with p < α",
    ]  # fmt: skip
    note = (
        "Exceeds α: the count is improbable (P < 0.05) for a calibrated test — if the pairs "
        "were independent draws. They are not: copies of one model repeat its pairs, so the "
        "last column counts distinct pairs of lineages (the bases each model descends from)."
    )
    return [*lines, note, "", *_table(header, rows)]


def _behaviour(summaries: Sequence[MethodSummary]) -> list[str]:
    rows = []
    for s in summaries:
        rel = s.behaviour_only
        if rel is None:
            continue
        rows.append([s.method, str(rel.n_pairs), f"{rel.detected}/{rel.n_pairs}", _num(rel.auroc)])
    lines = ["## Behaviour-only pairs (distillation)", ""]
    if not rows:
        return [*lines, "The manifest has no behaviour-only pairs.", ""]
    note = "Weight methods are not expected to detect these; the rate is reported as measured."
    header = ["method", "pairs", "called derived", "AUROC vs independent"]
    return [*lines, note, "", *_table(header, rows)]


def _attribution(summaries: Sequence[MethodSummary]) -> list[str]:
    rows = []
    for s in summaries:
        top = s.attribution
        if top is None:
            rows.append([_method_label(s), "–", "–", "–"])
            continue
        misses = "; ".join(
            f"{m.derived} → {', '.join(m.chosen) or 'nothing'} (true: {', '.join(m.truth)})"
            for m in top.misses
        )
        rows.append([s.method, f"{top.hits}/{top.total}", _num(top.rate), misses or "none"])
    header = ["method", "top-1 hits", "rate", "misses (ranked first → truth)"]
    return [
        "## Parent attribution (true base ranked first among all bases)",
        "",
        *_table(header, rows),
    ]


def verdict_classes(result: BenchmarkResult, reference: str = "forebear") -> list[str]:
    """How often each other method's own verdict class equals ``reference``'s, pair by pair
    (only methods that report classes: forebear's own)."""
    truth = {(p.a, p.b): p.result.verdict_class for p in result.pairs.get(reference, ())}
    rows = []
    for name, pairs in result.pairs.items():
        if name == reference or not any(p.result.verdict_class for p in pairs):
            continue
        both = [(truth.get((p.a, p.b)), p.result.verdict_class, p.relation) for p in pairs]
        both = [b for b in both if b[0] is not None]
        same = sum(1 for mine, theirs, _ in both if mine == theirs)
        differing: dict[str, int] = {}
        for mine, theirs, relation in both:
            if mine != theirs:
                key = f"{relation}: {mine} → {theirs}"
                differing[key] = differing.get(key, 0) + 1
        worst = "; ".join(f"{k} ({v})" for k, v in sorted(differing.items(), key=lambda kv: -kv[1]))
        rows.append([name, f"{same}/{len(both)}", worst or "none"])
    if not rows:
        return []
    header = ["method", f"same class as {reference}", "where they differ (relation: weights → it)"]
    title = f"## Verdict classes against {reference}'s (pair by pair)"
    return [title, "", *_table(header, rows)]


def _cost(summaries: Sequence[MethodSummary]) -> list[str]:
    rows = []
    for s in summaries:
        rss = _num(s.peak_rss_mb, 0) + ("" if s.peak_rss_scope == "method" else " (process)")
        rows.append(
            [
                s.method,
                _num(s.median_seconds),
                _num(s.max_seconds),
                _num(s.total_seconds, 1),
                "unknown" if s.bytes_read is None else f"{s.bytes_read / 2**20:.1f}",
                rss,
            ]
        )
    header = ["method", "median s/pair", "max s/pair", "total s", "MiB read", "peak RSS MiB"]
    note = (
        "Peak RSS is this process's (VmHWM, reset before each method where the kernel allows;"
        ' "(process)": since start). External tools\' own memory is not measured.'
    )
    return ["## Cost", "", note, "", *_table(header, rows)]


def _errors(summaries: Sequence[MethodSummary]) -> list[str]:
    lines = [
        f"- **{s.method}**: {s.n_unscored}/{s.n_pairs} pairs unscored; e.g. {s.errors[0]}"
        for s in summaries
        if s.errors
    ]
    return ["## Errors", "", *lines, ""] if lines else []


def to_markdown(result: BenchmarkResult) -> str:
    """The benchmark tables as one Markdown document."""
    env = result.environment
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    head = [
        f"# forebear benchmark — zoo profile `{result.profile}`",
        "",
        f"Run {result.started_at} on {env.get('platform')} ({env.get('cpu_count')} CPUs), "
        f"Python {env.get('python')}; {packages}.",
        "",
        *(f"- **{s.method}**: {s.description}" for s in result.summaries),
        "",
    ]
    sections = (
        _detection,
        _false_positives,
        _calibration,
        _behaviour,
        _attribution,
        _cost,
        _errors,
    )
    body = [line for section in sections for line in section(result.summaries)]
    return "\n".join(head + body + verdict_classes(result)).rstrip() + "\n"


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path


def write_report(
    result: BenchmarkResult, folder: str | os.PathLike[str], *, stem: str | None = None
) -> ReportFiles:
    """Write ``<stem>.json`` and ``<stem>.md`` (default stem ``zoo-<profile>``) under ``folder``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    name = stem or f"zoo-{result.profile or 'unnamed'}"
    files = ReportFiles(json=target / f"{name}.json", markdown=target / f"{name}.md")
    files.json.write_text(json.dumps(to_json(result), indent=2) + "\n", encoding="utf-8")
    files.markdown.write_text(to_markdown(result), encoding="utf-8")
    return files
