"""Horizontal bar charts, stacked when a bar has several segments: evidence per module or
per candidate, the innovation ledger, the unit-matching quality.
"""

from __future__ import annotations

from forebear.report.model import Bar, Bars
from forebear.report.svg import GRID, MUTED, colours, label, num, rect, svg_open, text, truncate

__all__ = ["bars_svg"]

PLOT, ROW, GAP, LABEL_CHARS = 380.0, 18.0, 6.0, 30


def _end(b: Bars) -> float:
    if b.maximum is not None:
        return b.maximum
    totals = [sum(s.value for s in bar.segments) for bar in b.bars]
    return max([*totals, b.threshold or 0.0]) or 1.0


def bars_svg(b: Bars) -> str:
    names = [truncate(bar.label, LABEL_CHARS) for bar in b.bars]
    left = min(max(7.0 * max(map(len, names), default=4) + 16, 64.0), 230.0)
    top = 52.0 if len(b.categories) > 1 or b.threshold is not None else 32.0
    height = top + len(b.bars) * (ROW + GAP) + 40
    end, palette = _end(b), colours(b.categories)
    scale = PLOT / end
    parts = [svg_open(left + PLOT + 70, height, b.title)]
    if len(b.categories) > 1:
        parts += _legend(palette, 8.0, 34.0)
    for k, (bar, name) in enumerate(zip(b.bars, names, strict=True)):
        parts.append(_bar(bar, name, left, top + k * (ROW + GAP), scale, palette))
    bottom = top + len(b.bars) * (ROW + GAP)
    parts += _axis(b, left, bottom, end, scale)
    if b.threshold is not None and b.threshold <= end:
        x = left + b.threshold * scale
        parts.append(
            f'<line x1="{num(x)}" y1="{num(top - 6)}" x2="{num(x)}" y2="{num(bottom)}" '
            f'stroke="#b2182b" stroke-dasharray="4 3"><title>{text(b.threshold_label)}'
            "</title></line>"
        )
        anchor = "end" if b.threshold > end / 2 else "start"
        parts.append(
            label(
                x + (-4 if anchor == "end" else 4),
                top - 8,
                b.threshold_label,
                anchor=anchor,
                size=10,
                fill="#b2182b",
            )
        )
    return "".join(parts) + "</svg>"


def _bar(bar: Bar, name: str, left: float, y: float, scale: float, palette: dict[str, str]) -> str:
    parts = [
        f"<g><title>{text(bar.label)}: {text(bar.note)}</title>",
        label(left - 6, y + ROW - 5, name, anchor="end"),
    ]
    x = left
    for segment in bar.segments:
        width = max(segment.value, 0.0) * scale
        if width > 0:
            tip = f"{bar.label} — {segment.category}: {segment.value:.3g}"
            parts.append(rect(x, y, width, ROW, palette[segment.category], tip))
        x += width
    if len(bar.segments) == 1:
        parts.append(label(x + 4, y + ROW - 5, f"{bar.segments[0].value:.3g}", size=10, fill=MUTED))
    return "".join(parts) + "</g>"


def _axis(b: Bars, left: float, bottom: float, end: float, scale: float) -> list[str]:
    parts = [
        f'<line x1="{num(left)}" y1="{num(bottom)}" x2="{num(left + PLOT)}" '
        f'y2="{num(bottom)}" stroke="{GRID}"/>'
    ]
    for value in (0.0, end / 2, end):
        x = left + value * scale
        parts.append(
            f'<line x1="{num(x)}" y1="{num(bottom)}" x2="{num(x)}" y2="{num(bottom + 4)}" '
            f'stroke="{MUTED}"/>'
        )
        parts.append(label(x, bottom + 15, f"{value:.3g}", anchor="middle", size=10, fill=MUTED))
    parts.append(label(left + PLOT / 2, bottom + 30, b.value_label, anchor="middle"))
    return parts


def _legend(palette: dict[str, str], x: float, y: float) -> list[str]:
    parts = []
    for category, colour in palette.items():
        parts.append(rect(x, y - 9, 10, 10, colour, category))
        parts.append(label(x + 14, y, category, size=11))
        x += 14 + 7 * len(category) + 16
    return parts
