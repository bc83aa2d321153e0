"""The SVG primitives the report's plots are drawn with (``heatmap``, ``bars``, ``forest``).

Plots are drawn by hand: deterministic text, no plotting library, nothing fetched. Text
reaches markup only through ``text`` (escaped); each mark carries a ``<title>`` tooltip and
each plot a title. No ``id`` attributes, so any number of plots can share one page.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

__all__ = ["colours", "label", "num", "rect", "svg_open", "text", "truncate"]

FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\""
INK, MUTED, GRID = "#222", "#666", "#ddd"
PALETTE = {
    "inherited": "#4393c3",
    "changed": "#f4a582",
    "new": "#b2182b",
    "evidence": "#2166ac",
    "match quality": "#1b7837",
}
_EXTRA = ("#762a83", "#e08214", "#35978f", "#8c510a")
SCALE = (
    "#f7fbff",
    "#deebf7",
    "#c6dbef",
    "#9ecae1",
    "#6baed6",
    "#4292c6",
    "#2171b5",
    "#08519c",
    "#08306b",
)


def text(value: object) -> str:
    return escape(str(value), quote=True)


def truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def num(value: float) -> str:
    """A coordinate: one decimal at most, so output is stable across platforms."""
    rounded = round(value, 1)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.1f}"


def svg_open(width: float, height: float, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {num(width)} {num(height)}" '
        f'width="{num(width)}" height="{num(height)}" role="img" aria-label="{text(title)}" '
        f'{FONT} font-size="12" class="plot"><title>{text(title)}</title>'
        f'<text x="8" y="18" font-size="14" font-weight="600" fill="{INK}">{text(title)}</text>'
    )


def label(
    x: float,
    y: float,
    value: str,
    *,
    anchor: str = "start",
    size: int = 12,
    fill: str = INK,
    extra: str = "",
) -> str:
    return (
        f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}" font-size="{size}" '
        f'fill="{fill}"{extra}>{text(value)}</text>'
    )


def rect(x: float, y: float, w: float, h: float, fill: str, tip: str, extra: str = "") -> str:
    return (
        f'<rect x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}" '
        f'fill="{fill}"{extra}><title>{text(tip)}</title></rect>'
    )


def colours(categories: Iterable[str]) -> dict[str, str]:
    chosen = list(categories)
    spare = iter(_EXTRA * (len(chosen) // len(_EXTRA) + 1))
    return {c: PALETTE[c] if c in PALETTE else next(spare) for c in chosen}
