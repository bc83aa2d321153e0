"""What a web job does: the library call, then its report written as JSON and HTML.

Each function returns the ``Work`` a ``JobQueue`` runs; model references
arrive already confined (``security.confine``). A report is stored as
``<reports>/<job id>.json`` and ``.html`` (``forebear.report.write_report``,
atomic), so the report's id is the job's. This module owns the mapping from a
request to library calls and the command line it mirrors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from forebear.web.jobs import JobOutcome, Progress, Work

if TYPE_CHECKING:
    from forebear.report import Report

__all__ = ["compare_work", "scan_work"]


def compare_work(reports: Path, a: str, b: str, *, fast: bool) -> Work:
    """A comparison of ``a`` (the suspected parent) and ``b``, as ``forebear compare``."""
    command = ["forebear", "compare", a, b, *(["--fast"] if fast else [])]

    def work(job_id: str, say: Progress) -> JobOutcome:
        from forebear.compare import compare
        from forebear.report import comparison_report

        say(f"compare: opening {a} and {b}")
        result = compare(a, b, fast=fast, progress=lambda message: say(f"compare: {message}"))
        report = comparison_report(result, command=command, inputs=(a, b))
        summary = {"verdict": result.verdict, "log10_p": result.log10_p,
                   "derived": result.derived}  # fmt: skip
        return _stored(reports, job_id, report, summary, say)

    return work


def scan_work(reports: Path, model: str, index: Path, *, top: int, weights: bool) -> Work:
    """A scan of ``model`` against ``index``, as ``forebear scan``."""
    command = ["forebear", "scan", model, "--index", str(index), "--top", str(top),
               *(["--weights"] if weights else [])]  # fmt: skip

    def work(job_id: str, say: Progress) -> JobOutcome:
        from forebear.index import Index
        from forebear.report import scan_report
        from forebear.scan import scan

        say(f"scan: fingerprinting {model} and ranking {index}")
        with Index.open(index, create=False) as opened:
            result = scan(model, opened, top=top, weights=weights)
        say(f"scan: {len(result.matches)} candidates tested")
        report = scan_report(result, command=command, inputs=(model,))
        best = result.best
        summary = {"verdict": result.verdict,
                   "log10_p": None if best is None else best.decisive.log10_p,
                   "derived": best is not None}  # fmt: skip
        return _stored(reports, job_id, report, summary, say)

    return work


def _stored(reports: Path, job_id: str, report: Report, summary: dict[str, Any],
            say: Progress) -> JobOutcome:  # fmt: skip
    from forebear.report import write_report

    write_report(report, reports / f"{job_id}.json")
    write_report(report, reports / f"{job_id}.html")
    say(f"report written: {job_id}")
    return JobOutcome(report=job_id, summary={"title": report.title, **summary})
