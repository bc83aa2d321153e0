"""Draw a ``Report``: one self-contained HTML page (inline CSS, inline SVG plots, nothing
fetched), Markdown, or JSON.

Templates are Jinja2. HTML is autoescaped; Markdown escapes every value through
``markdown_text`` (model names and card text are untrusted input and must not become markup,
links or table cells of their own). SVG comes only from the plot modules, which escape their
own text.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from forebear import __version__
from forebear.errors import ForebearError
from forebear.report.bars import bars_svg
from forebear.report.forest import forest_svg
from forebear.report.heatmap import heatmap_svg
from forebear.report.model import Bars, Figure, Forest, Heatmap, Report, Table

__all__ = ["figure_svg", "figure_table", "forest_lines", "markdown_text", "render"]

# Values never start a line in the template, so list and heading markers need no escape there;
# these are the characters that make markup anywhere in a line.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#!|~])")


class Verbatim(str):
    """Text the Markdown template writes as it is (already made safe: a fenced block)."""


def markdown_text(value: object) -> str:
    if isinstance(value, Verbatim):
        return value
    if value is None:
        return "–"
    flat = " ".join(str(value).split())  # no newline may start a heading or a list
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def fenced(value: object) -> Verbatim:
    body = str(value).replace("\r", "")
    ticks = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, ticks + 1)
    return Verbatim(f"{fence}\n{body}\n{fence}")


@cache
def _environment(fmt: Literal["html", "markdown"]) -> Environment:
    html = fmt == "html"
    env = Environment(
        loader=PackageLoader("forebear.report", "templates"),
        autoescape=html,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=None if html else markdown_text,
    )
    env.filters["fenced"] = fenced
    env.filters["indent_by"] = lambda depth: Verbatim("  " * int(depth))
    return env


def render(report: Report, fmt: Literal["html", "markdown", "json"]) -> str:
    """``report`` as one HTML page, Markdown or JSON text."""
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt not in ("html", "markdown"):
        raise ForebearError(f"unknown report format {fmt!r}", hint="use html, markdown or json")
    template = _environment(fmt).get_template(f"report.{'html' if fmt == 'html' else 'md'}.j2")
    return template.render(**_context(report, svg=fmt == "html"))


def _context(report: Report, *, svg: bool) -> dict[str, Any]:
    figures = [
        {
            "title": figure.title,
            "note": figure.note,
            "svg": Markup(figure_svg(figure)) if svg else "",  # the plots escape their text
            "table": figure_table(figure),
            "tree": forest_lines(figure) if isinstance(figure, Forest) else [],
        }
        for figure in report.figures
    ]
    return {
        "report": report,
        "figures": figures,
        "version": __version__,
        "kind": {
            "compare": "comparison",
            "scan": "scan",
            "tree": "lineage tree",
            "probe": "behaviour probe",
        }[report.kind],
    }


def figure_svg(figure: Figure) -> str:
    if isinstance(figure, Heatmap):
        return heatmap_svg(figure)
    if isinstance(figure, Bars):
        return bars_svg(figure)
    return forest_svg(figure)


def figure_table(figure: Figure) -> Table | None:
    """The numbers behind a plot, for Markdown and for readers who cannot see the plot."""
    if isinstance(figure, Bars):
        columns = ("", *figure.categories, "what it stands for")
        rows = tuple(
            (bar.label, *(_segment(bar.segments, c) for c in figure.categories), bar.note)
            for bar in figure.bars
        )
        return Table(figure.title, columns, rows, figure.note)
    if isinstance(figure, Heatmap):
        rows = tuple(
            (f"B {tick}", *("·" if v is None else f"{v:.1f}" for v in values))
            for tick, values in zip(figure.y_ticks, figure.values, strict=True)
        )
        path = ", ".join(f"B {figure.y_ticks[j]} ← A {figure.x_ticks[i]}" for j, i in figure.path)
        note = f"{figure.value_label}; ·: not tested; alignment: {path or 'none'}"
        return Table(figure.title, ("", *(f"A {t}" for t in figure.x_ticks)), rows, note)
    return None


def _segment(segments: Any, category: str) -> str:
    values = [s.value for s in segments if s.category == category]
    return f"{sum(values):.3g}" if values else "–"


def forest_lines(forest: Figure) -> list[tuple[int, str]]:
    """The forest as an indented outline: (depth, "child — label"), roots at depth 0; a
    merge is listed under each parent, its own children once."""
    assert isinstance(forest, Forest)
    below: dict[str, list[Any]] = {}
    children = set()
    for edge in forest.edges:
        below.setdefault(edge.parent, []).append(edge)
        children.add(edge.child)
    lines: list[tuple[int, str]] = []
    seen: set[str] = set()

    def walk(node: str, depth: int) -> None:
        for edge in sorted(below.get(node, []), key=lambda e: e.child):
            lines.append((depth, f"{edge.child} — {edge.label} ({edge.style})"))
            if edge.child not in seen:
                seen.add(edge.child)
                walk(edge.child, depth + 1)

    for family in forest.families:
        for root in [m for m in family if m not in children]:
            lines.append((0, root))
            walk(root, 1)
    return lines
