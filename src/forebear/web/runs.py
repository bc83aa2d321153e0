"""What a web job does: the library call, then its report written as JSON and HTML.

Each function returns the ``Work`` a ``JobQueue`` runs; model references
arrive already confined (``security.confine``, ``confine_probed``). A probe's
endpoints get the key in the server's ``FOREBEAR_API_KEY``, read when the job starts
and kept out of its parameters, command line and report. A report is stored as
``<reports>/<job id>.json`` and ``.html`` (``forebear.report.write_report``,
atomic), so the report's id is the job's. This module owns the mapping from a
request to library calls and the command line it mirrors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forebear.web.jobs import JobOutcome, Progress, Work

if TYPE_CHECKING:
    from forebear.behavior.base import Client
    from forebear.report import Report

__all__ = ["ProbeJob", "compare_work", "probe_work", "scan_work"]

API_KEY = "FOREBEAR_API_KEY"  # read from the server's environment when a probe job starts


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
            result = scan(
                model,
                opened,
                top=top,
                weights=weights,
                progress=lambda message: say(f"scan: {message}"),
            )
        say(f"scan: {len(result.matches)} candidates tested")
        report = scan_report(result, command=command, inputs=(model,))
        best = result.best
        summary = {"verdict": result.verdict,
                   "log10_p": None if best is None else best.decisive.log10_p,
                   "derived": best is not None}  # fmt: skip
        return _stored(reports, job_id, report, summary, say)

    return work


@dataclass(frozen=True)
class ProbeJob:
    """One ``forebear probe``, its references already confined (``confine_probed``)."""

    suspect: str
    candidates: tuple[str, ...]
    controls: tuple[str, ...] = ()
    budget: int = 2000
    batch: int = 100
    alpha: float = 0.01
    seed: int = 0
    same_data_controls: bool = False

    @property
    def command(self) -> list[str]:
        """The command line it mirrors (no key: that is the server's environment)."""
        listed = [("--candidates", self.candidates), ("--controls", self.controls)]
        return ["forebear", "probe", self.suspect,
                *(word for option, refs in listed if refs for word in (option, ",".join(refs))),
                "--budget", str(self.budget), "--batch", str(self.batch),
                "--alpha", f"{self.alpha:g}", "--seed", str(self.seed),
                *(["--same-data-controls"] if self.same_data_controls else [])]  # fmt: skip


def probe_work(reports: Path, cache: Path | None, job: ProbeJob) -> Work:
    """A behaviour probe, as ``forebear probe``; answers are kept in the ``cache`` file."""

    def work(job_id: str, say: Progress) -> JobOutcome:
        from forebear.behavior.probe import probe
        from forebear.report import probe_report

        say(f"probe: loading {1 + len(job.candidates) + len(job.controls)} models")
        with _clients(job, cache) as (suspect, others):
            result = probe(
                suspect,
                {name: others[name] for name in job.candidates},
                {name: others[name] for name in job.controls},
                budget=job.budget, batch=job.batch, alpha=job.alpha, seed=job.seed,
                same_data_controls=job.same_data_controls,
                progress=lambda message: say(f"probe: {message}"),
            )  # fmt: skip
        inputs = (job.suspect, *job.candidates, *job.controls)
        report = probe_report(result, command=job.command, inputs=inputs)
        best = min((c.log10_p for c in result.candidates), default=None)
        summary = {"verdict": result.verdict, "log10_p": best, "derived": bool(result.derived),
                   "evidence": "behavioural", "derived_from": list(result.derived)}  # fmt: skip
        return _stored(reports, job_id, report, summary, say)

    return work


@contextmanager
def _clients(job: ProbeJob, cache_path: Path | None) -> Iterator[tuple[Client, dict[str, Client]]]:
    """The probe's clients (the suspect's its own, as on the command line) over one
    response cache; endpoints get the server's key. Closed, with the cache, on exit."""
    from forebear.behavior.cache import ResponseCache
    from forebear.behavior.references import open_client

    key = os.environ.get(API_KEY) or None
    with ExitStack() as stack:
        cache = None if cache_path is None else stack.enter_context(ResponseCache(cache_path))

        def opened(ref: str) -> Client:
            client = open_client(ref, cache=cache, api_key=key, budget=job.budget)
            close = getattr(client, "close", None)
            if close is not None:
                stack.callback(close)
            return client

        suspect = opened(job.suspect)
        yield suspect, {ref: opened(ref) for ref in (*job.candidates, *job.controls)}


def _stored(reports: Path, job_id: str, report: Report, summary: dict[str, Any],
            say: Progress) -> JobOutcome:  # fmt: skip
    from forebear.report import write_report

    say(f"writing the report: {job_id}")  # the last point a cancelled job stops at
    write_report(report, reports / f"{job_id}.json")
    write_report(report, reports / f"{job_id}.html")
    return JobOutcome(report=job_id, summary={"title": report.title, **summary})
