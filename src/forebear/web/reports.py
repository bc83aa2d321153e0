"""Stored reports: ``<reports>/<id>.json`` beside ``<id>.html``, as jobs write them.

A report id is a job id (twelve hex digits); anything else is refused before a
path is built, so no id can name a file outside the reports folder. Listing
reads each JSON report (``forebear.report.load_report``); a file that does not
load is listed as unreadable rather than failing the whole listing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forebear.errors import ForebearError, InputNotFoundError

__all__ = ["list_reports", "report_html", "report_json"]

REPORT_ID = re.compile(r"[0-9a-f]{12}")


def list_reports(folder: Path) -> list[dict[str, Any]]:
    """Each report's id, kind, title and time, newest first."""
    from forebear.report import load_report

    found = []
    for path in folder.glob("*.json"):
        if not REPORT_ID.fullmatch(path.stem):
            continue
        kind: str
        try:
            report = load_report(path)
            kind, title = report.kind, report.title
        except (ForebearError, ValueError, KeyError, OSError):
            kind, title = "unreadable", f"{path.name} (not a report this forebear can read)"
        found.append(_entry(path, kind, title))
    return sorted(found, key=lambda entry: entry["created"], reverse=True)


def _entry(path: Path, kind: str, title: str) -> dict[str, Any]:
    stamp = path.stat().st_mtime
    written = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
    return {
        "id": path.stem,
        "kind": kind,
        "title": title,
        "created": stamp,
        "created_iso": written.replace("+00:00", "Z"),
        "html": f"/reports/{path.stem}",
        "json": f"/api/reports/{path.stem}",
    }


def report_path(folder: Path, report_id: str, suffix: str) -> Path:
    """The stored file of ``report_id``; ``InputNotFoundError`` when there is none."""
    if not REPORT_ID.fullmatch(report_id) or not (folder / f"{report_id}{suffix}").is_file():
        raise InputNotFoundError(f"report {report_id}: no such report",
                                 hint="list the reports with GET /api/reports")  # fmt: skip
    return folder / f"{report_id}{suffix}"


def report_json(folder: Path, report_id: str) -> dict[str, Any]:
    """The report as JSON (loaded and re-serialised: only what the schema holds)."""
    from forebear.report import load_report

    data: dict[str, Any] = load_report(report_path(folder, report_id, ".json")).to_json()
    return data


def report_html(folder: Path, report_id: str) -> str:
    """The stored, self-contained HTML of the report."""
    return report_path(folder, report_id, ".html").read_text(encoding="utf-8")
