"""Reports on disk: the format a path's suffix names, atomic writes, JSON reports read back.

A report is written to a temporary file beside its destination and renamed over it, so a
failure never leaves a half-written report nor clobbers the one already there.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from forebear.errors import ForebearError, InputNotFoundError, UnsupportedFormatError
from forebear.report.model import Report
from forebear.report.render import render

__all__ = ["ReportFormat", "load_report", "report_format", "write_report"]

ReportFormat = Literal["html", "markdown", "json"]
_SUFFIXES: dict[str, ReportFormat] = {
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".json": "json",
}
_HINT = "name the report .html (one self-contained page), .md or .json"


def report_format(path: str | os.PathLike[str]) -> ReportFormat:
    """The format ``path``'s suffix names; a ForebearError for any other suffix, so a
    command can refuse before its slow work starts."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise ForebearError(f"a report cannot be written with {shown}", path=path, hint=_HINT)
    return _SUFFIXES[suffix]


def write_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """Render ``report`` in the format of ``path``'s suffix and write it atomically."""
    target = Path(path)
    text = render(report, report_format(target))
    folder = target.parent
    if not folder.is_dir():
        raise InputNotFoundError(
            "the report's folder does not exist",
            path=folder,
            hint="create it first, or name another path",
        )
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise ForebearError(
            f"cannot write a report here ({error.strerror})",
            path=folder,
            hint="choose a folder you can write to",
        ) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise ForebearError(
            f"cannot write the report ({error.strerror or error})",
            path=target,
            hint="check the path and the free space",
        ) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load_report(path: str | os.PathLike[str]) -> Report:
    """The report a ``.json`` report file holds."""
    source = Path(path)
    if not source.is_file():
        raise InputNotFoundError(
            "no such report file",
            path=source,
            hint="give the path of a .json report (--report FILE.json)",
        )
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        return Report.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        why = f"missing field {error.args[0]!r}" if isinstance(error, KeyError) else str(error)
        raise UnsupportedFormatError(
            f"not a forebear JSON report ({why})",
            path=source,
            hint="load the .json written by --report; HTML and Markdown reports are for people",
        ) from None
