"""The layer-by-layer evidence as a heatmap: B layers (rows) × A layers (columns), colour by
−log10 p on a log scale, blank where a pair was not tested, the alignment path drawn over it.
"""

from __future__ import annotations

import math

from forebear.report.model import Heatmap
from forebear.report.svg import GRID, MUTED, SCALE, label, num, rect, svg_open, text, truncate

__all__ = ["heatmap_svg"]

PATH_COLOUR = "#d6604d"


def _colour(value: float, top: float) -> str:
    share = math.log1p(max(value, 0.0)) / math.log1p(top) if top > 0 else 0.0
    return SCALE[min(int(share * (len(SCALE) - 1) + 0.5), len(SCALE) - 1)]


def _every(count: int, room: float) -> int:
    """Label every n-th tick so labels ~ 14 px apart fit in ``room``."""
    return max(1, math.ceil(count * 14 / max(room, 1.0)))


def heatmap_svg(h: Heatmap) -> str:
    rows, columns = len(h.y_ticks), len(h.x_ticks)
    cell = min(40.0, max(4.0, 420.0 / max(rows, columns, 1)))
    left, top = 48.0, 52.0
    width, height = left + columns * cell + 24, top + rows * cell + 110
    found = [v for row in h.values for v in row if v is not None]
    peak = max([*found, h.threshold or 0.0, 1.0])
    parts = [svg_open(max(width, 480), height, h.title)]
    parts.append(
        rect(left, top, columns * cell, rows * cell, "#fff", "not tested", f' stroke="{GRID}"')
    )
    for j, row in enumerate(h.values):
        for i, value in enumerate(row):
            if value is not None:
                where = f"B layer {h.y_ticks[j]} · A layer {h.x_ticks[i]}"
                tip = f"{where}: {h.value_label} = {value:.1f}"
                parts.append(
                    rect(left + i * cell, top + j * cell, cell, cell, _colour(value, peak), tip)
                )
    parts += _heatmap_axes(h, left, top, cell)
    parts.append(_path(h, left, top, cell))
    parts += _scale(h, left, top + rows * cell + 54, peak)
    return "".join(parts) + "</svg>"


def _heatmap_axes(h: Heatmap, left: float, top: float, cell: float) -> list[str]:
    rows, columns = len(h.y_ticks), len(h.x_ticks)
    parts: list[str] = []
    step = _every(columns, columns * cell)
    for i in range(0, columns, step):
        parts.append(
            label(
                left + (i + 0.5) * cell,
                top + rows * cell + 14,
                h.x_ticks[i],
                anchor="middle",
                size=10,
                fill=MUTED,
            )
        )
    step = _every(rows, rows * cell)
    for j in range(0, rows, step):
        parts.append(
            label(
                left - 6,
                top + (j + 0.5) * cell + 4,
                h.y_ticks[j],
                anchor="end",
                size=10,
                fill=MUTED,
            )
        )
    # Axis titles run horizontally: a model's name is too long to stand beside a short grid.
    parts.append(label(8, top + rows * cell + 32, f"columns → {truncate(h.x_label, 60)}"))
    parts.append(label(8, top - 10, f"rows ↓ {truncate(h.y_label, 60)}"))
    return parts


def _path(h: Heatmap, left: float, top: float, cell: float) -> str:
    if not h.path:
        return ""
    points = [(left + (i + 0.5) * cell, top + (j + 0.5) * cell) for j, i in h.path]
    pairs = "; ".join(f"B {h.y_ticks[j]} ← A {h.x_ticks[i]}" for j, i in h.path)
    tip = f"alignment path: {pairs}"
    marks = "".join(
        f'<circle cx="{num(x)}" cy="{num(y)}" r="{num(min(3.0, cell / 4))}" fill="{PATH_COLOUR}"/>'
        for x, y in points
    )
    line = " ".join(f"{num(x)},{num(y)}" for x, y in points)
    return (
        f'<g><title>{text(tip)}</title><polyline points="{line}" fill="none" '
        f'stroke="{PATH_COLOUR}" stroke-width="2"/>{marks}</g>'
    )


def _scale(h: Heatmap, left: float, y: float, peak: float) -> list[str]:
    width = 24.0
    parts = [label(left, y - 6, f"{h.value_label} (log scale of colour)", size=10, fill=MUTED)]
    for k, colour in enumerate(SCALE):
        low = math.expm1(k / (len(SCALE) - 1) * math.log1p(peak))
        parts.append(
            rect(left + k * width, y, width, 12, colour, f"≈ {low:.1f}", f' stroke="{GRID}"')
        )
    end = left + len(SCALE) * width
    parts.append(label(left, y + 26, "0", size=10, fill=MUTED))
    parts.append(label(end, y + 26, f"{peak:.0f}", anchor="end", size=10, fill=MUTED))
    if h.threshold is not None:
        parts.append(
            label(
                left,
                y + 40,
                f"a pair is evidence on its own at ≥ {h.threshold:g}; the line: the alignment path",
                size=10,
                fill=MUTED,
            )
        )
    return parts
