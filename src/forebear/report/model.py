"""The report object: one frozen ``Report`` that every rendering (HTML, Markdown, JSON, the
web app) is drawn from, and its JSON form, which round-trips exactly.

A report holds words and figure *data* (values, labels, the alignment path), never markup:
the renderers own the drawing. ``result`` keeps the analysis's own JSON (``Comparison``,
``ScanResult`` or ``Lineage``) so a machine reading the report loses nothing. This module
owns the shapes; ``build`` fills them and ``render`` draws them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from forebear.compare.result import plain

__all__ = [
    "FORMAT",
    "VERSION",
    "Bar",
    "Bars",
    "Figure",
    "FileHash",
    "Finding",
    "Forest",
    "ForestEdge",
    "Heatmap",
    "InputRecord",
    "Report",
    "ReportKind",
    "Reproducibility",
    "Segment",
    "Table",
    "plain",
]

FORMAT = "forebear-report"
VERSION = 1

ReportKind = Literal["compare", "scan", "tree", "probe"]
EdgeStyle = Literal["weights", "priors", "undetermined", "merge"]


@dataclass(frozen=True)
class Finding:
    """The p-value in words and the null hypothesis it is computed against."""

    log10_p: float | None  # base-10 log of a one-sided p-value; None: no test ran
    p_text: str  # "below 1e-40", "p = 0.31"
    hypothesis: str  # H0 in words
    null: str  # what the p-value rests on (exact / approximate, and why)
    threshold: str  # when the evidence is called derived

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            _opt_float(data["log10_p"]),
            data["p_text"],
            data["hypothesis"],
            data["null"],
            data["threshold"],
        )


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    flagged: tuple[int, ...] = ()  # rows a reader must see (a contradicted card claim)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Table:
        rows = tuple(tuple(str(cell) for cell in row) for row in data["rows"])
        return cls(
            data["title"],
            tuple(data["columns"]),
            rows,
            data["note"],
            tuple(int(i) for i in data["flagged"]),
        )


@dataclass(frozen=True)
class Heatmap:
    """Cells of B layers (rows) × A layers (columns); None: the pair was not tested."""

    title: str
    x_label: str
    y_label: str
    x_ticks: tuple[str, ...]
    y_ticks: tuple[str, ...]
    values: tuple[tuple[float | None, ...], ...]  # rows: B layers
    value_label: str
    path: tuple[tuple[int, int], ...]  # (row, column) of the alignment, in B's order
    threshold: float | None = None  # values at or above it are evidence on their own
    note: str = ""
    type: Literal["heatmap"] = "heatmap"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Heatmap:
        values = tuple(tuple(_opt_float(v) for v in row) for row in data["values"])
        return cls(
            data["title"],
            data["x_label"],
            data["y_label"],
            tuple(data["x_ticks"]),
            tuple(data["y_ticks"]),
            values,
            data["value_label"],
            tuple((int(r), int(c)) for r, c in data["path"]),
            _opt_float(data["threshold"]),
            data["note"],
        )


@dataclass(frozen=True)
class Segment:
    category: str  # one of the chart's ``categories``
    value: float


@dataclass(frozen=True)
class Bar:
    label: str
    segments: tuple[Segment, ...]  # stacked, in order
    note: str = ""  # the tooltip: what the bar stands for, in words


@dataclass(frozen=True)
class Bars:
    """Horizontal bars, stacked when a bar has several segments."""

    title: str
    value_label: str
    categories: tuple[str, ...]
    bars: tuple[Bar, ...]
    maximum: float | None = None  # the axis end (None: the longest bar)
    threshold: float | None = None  # a reference line
    threshold_label: str = ""
    note: str = ""
    type: Literal["bars"] = "bars"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bars:
        bars = tuple(
            Bar(
                bar["label"],
                tuple(Segment(s["category"], float(s["value"])) for s in bar["segments"]),
                bar["note"],
            )
            for bar in data["bars"]
        )
        return cls(
            data["title"],
            data["value_label"],
            tuple(data["categories"]),
            bars,
            _opt_float(data["maximum"]),
            _opt_float(data["threshold"]),
            data["threshold_label"],
            data["note"],
        )


@dataclass(frozen=True)
class ForestEdge:
    parent: str
    child: str
    label: str  # relation and P(direction), in words
    style: EdgeStyle  # how the direction was decided (merge: a merge parent)
    note: str = ""


@dataclass(frozen=True)
class Forest:
    """The lineage forest: nodes per family, parent edges (a merge has two parents)."""

    title: str
    families: tuple[tuple[str, ...], ...]
    edges: tuple[ForestEdge, ...]
    note: str = ""
    type: Literal["forest"] = "forest"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Forest:
        edges = tuple(
            ForestEdge(e["parent"], e["child"], e["label"], cast(EdgeStyle, e["style"]), e["note"])
            for e in data["edges"]
        )
        return cls(data["title"], tuple(tuple(f) for f in data["families"]), edges, data["note"])


Figure = Heatmap | Bars | Forest
_FIGURES: dict[str, type[Heatmap] | type[Bars] | type[Forest]] = {
    "heatmap": Heatmap,
    "bars": Bars,
    "forest": Forest,
}


@dataclass(frozen=True)
class FileHash:
    path: str  # relative to the input when the input is a folder
    size: int
    sha256: str | None  # None: not hashed (see ``Reproducibility.hash_policy``)


@dataclass(frozen=True)
class InputRecord:
    ref: str  # as given
    kind: Literal["file", "folder", "hub", "url", "missing"]
    revision: str | None = None  # for hub ids: the revision named, if any
    files: tuple[FileHash, ...] = ()
    note: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputRecord:
        files = tuple(FileHash(f["path"], int(f["size"]), f["sha256"]) for f in data["files"])
        return cls(data["ref"], data["kind"], data["revision"], files, data["note"])


@dataclass(frozen=True)
class Reproducibility:
    created: str  # UTC, ISO 8601
    command: str | None  # the command line, secrets redacted
    versions: Mapping[str, str]  # forebear, python, numpy
    seed: int | None
    settings: Mapping[str, Any]
    inputs: tuple[InputRecord, ...]
    hash_policy: str  # which files were hashed, and the size limit

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reproducibility:
        return cls(
            data["created"],
            data["command"],
            dict(data["versions"]),
            data["seed"],
            dict(data["settings"]),
            tuple(InputRecord.from_json(i) for i in data["inputs"]),
            data["hash_policy"],
        )


@dataclass(frozen=True)
class Report:
    """One report: the verdict in words, its evidence, what it cannot see, how to redo it."""

    kind: ReportKind
    title: str
    verdict: str  # the verdict class (or the scan's and tree's summary verdict)
    headline: str  # the verdict in plain words, one sentence
    finding: Finding | None  # the p-value and its null; None for a tree (one per edge)
    facts: tuple[str, ...]  # the reasons, one fact per line
    figures: tuple[Figure, ...]
    tables: tuple[Table, ...]
    cannot_see: tuple[str, ...]
    reproducibility: Reproducibility
    result: Mapping[str, Any] = field(default_factory=dict)  # the analysis's own JSON

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (non-finite floats become null); ``from_json`` inverts it exactly."""
        from dataclasses import asdict

        data = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return cast(dict[str, Any], plain(data))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        """The report ``to_json`` wrote. Raises KeyError, TypeError or ValueError on
        anything else (``load_report`` turns those into one error naming the file)."""
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} version {VERSION}")
        finding = data["finding"]
        return cls(
            kind=data["kind"],
            title=data["title"],
            verdict=data["verdict"],
            headline=data["headline"],
            finding=None if finding is None else Finding.from_json(finding),
            facts=tuple(data["facts"]),
            figures=tuple(_FIGURES[f["type"]].from_json(f) for f in data["figures"]),
            tables=tuple(Table.from_json(t) for t in data["tables"]),
            cannot_see=tuple(data["cannot_see"]),
            reproducibility=Reproducibility.from_json(data["reproducibility"]),
            result=dict(data["result"]),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
