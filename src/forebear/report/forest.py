"""The lineage forest as a layered drawing: each family side by side, roots on top, a
child one level below its lowest parent (a merge below both of its parents), edges styled
by what decided their direction and labelled with its probability.
"""

from __future__ import annotations

from collections.abc import Sequence

from forebear.report.model import Forest, ForestEdge
from forebear.report.svg import INK, MUTED, label, num, svg_open, text, truncate

__all__ = ["forest_svg", "layout"]

NODE_W, NODE_H, STEP_X, STEP_Y, FAMILY_GAP, TOP = 150.0, 28.0, 170.0, 92.0, 40.0, 64.0
NAME_CHARS = 22
STYLES = {
    "weights": f'stroke="{INK}"',
    "priors": 'stroke="#762a83" stroke-dasharray="2 3"',
    "undetermined": f'stroke="{MUTED}" stroke-dasharray="7 4"',
    "merge": 'stroke="#e08214"',
}
LEGEND = (
    ("weights", "direction from the weights"),
    ("priors", "direction or parent from the priors"),
    ("undetermined", "direction undetermined"),
    ("merge", "merge parent"),
)

Positions = dict[str, tuple[float, float]]


def _levels(family: Sequence[str], edges: Sequence[ForestEdge]) -> dict[str, int]:
    members = set(family)
    inside = [e for e in edges if e.parent in members and e.child in members]
    level = dict.fromkeys(family, 0)
    for _ in family:  # longest path from a root; bounded, so a cycle cannot hang it
        for edge in inside:
            level[edge.child] = max(level[edge.child], level[edge.parent] + 1)
    return level


def _place(family: Sequence[str], edges: Sequence[ForestEdge], left: float) -> Positions:
    level = _levels(family, edges)
    parents: dict[str, list[str]] = {}
    for edge in edges:
        parents.setdefault(edge.child, []).append(edge.parent)
    rows: dict[int, list[str]] = {}
    for name in family:
        rows.setdefault(level[name], []).append(name)
    widest = max(len(row) for row in rows.values())
    placed: Positions = {}
    for depth in sorted(rows):

        def centre(name: str) -> tuple[float, str]:
            xs = [placed[p][0] for p in parents.get(name, []) if p in placed]
            return (sum(xs) / len(xs) if xs else 0.0, name)

        row = sorted(rows[depth], key=centre)
        start = left + (widest - len(row)) * STEP_X / 2
        for k, name in enumerate(row):
            placed[name] = (start + k * STEP_X + NODE_W / 2, TOP + depth * STEP_Y)
    return placed


def layout(forest: Forest) -> tuple[Positions, list[tuple[float, str]], float, float]:
    """Node centres, each family's left edge and title, and the drawing's size."""
    positions: Positions = {}
    titles: list[tuple[float, str]] = []
    left, depth = 16.0, 0.0
    for k, family in enumerate(forest.families, start=1):
        placed = _place(family, forest.edges, left)
        positions |= placed
        titles.append((left, f"family {k} ({len(family)} model{'s' if len(family) > 1 else ''})"))
        left = max(x for x, _ in placed.values()) + NODE_W / 2 + FAMILY_GAP
        depth = max([depth, *(y for _, y in placed.values())])
    return positions, titles, max(left, 480.0), depth + NODE_H + 90


def forest_svg(forest: Forest) -> str:
    positions, titles, width, height = layout(forest)
    parts = [svg_open(width, height, forest.title)]
    parts += [label(x, TOP - 30, title, size=11, fill=MUTED) for x, title in titles]
    parts += [
        _edge(e, positions) for e in forest.edges if e.parent in positions and e.child in positions
    ]
    for name, (x, y) in positions.items():
        parts.append(
            f'<g><title>{text(name)}</title><rect x="{num(x - NODE_W / 2)}" '
            f'y="{num(y - NODE_H / 2)}" width="{num(NODE_W)}" height="{num(NODE_H)}" rx="6" '
            f'fill="#f4f7fb" stroke="#4393c3"/>'
            + label(x, y + 4, truncate(name, NAME_CHARS), anchor="middle")
            + "</g>"
        )
    parts += _legend(height - 20)
    return "".join(parts) + "</svg>"


def _edge(edge: ForestEdge, positions: Positions) -> str:
    (px, py), (cx, cy) = positions[edge.parent], positions[edge.child]
    y0, y1 = py + NODE_H / 2, cy - NODE_H / 2
    head = f"{num(cx)},{num(y1)} {num(cx - 4)},{num(y1 - 8)} {num(cx + 4)},{num(y1 - 8)}"
    # The label sits in the gap just above the child, so an edge across levels keeps it clear
    # of the nodes it passes.
    t = 1.0 - 0.45 * (STEP_Y - NODE_H) / max(y1 - y0, 1.0)
    mx, my = px + (cx - px) * t, y0 + (y1 - y0) * t
    halo = ' stroke="#fff" stroke-width="3" paint-order="stroke"'
    return (
        f"<g><title>{text(edge.note or edge.label)}</title>"
        f'<line x1="{num(px)}" y1="{num(y0)}" x2="{num(cx)}" y2="{num(y1 - 6)}" '
        f'{STYLES[edge.style]} stroke-width="1.5"/>'
        f'<polygon points="{head}" fill="{INK if edge.style == "weights" else MUTED}"/>'
        + label(mx + 4, my, edge.label, size=10, extra=halo)
        + "</g>"
    )


def _legend(y: float) -> list[str]:
    parts, x = [], 16.0
    for style, meaning in LEGEND:
        parts.append(
            f'<line x1="{num(x)}" y1="{num(y - 4)}" x2="{num(x + 28)}" '
            f'y2="{num(y - 4)}" {STYLES[style]} stroke-width="1.5"/>'
        )
        parts.append(label(x + 34, y, meaning, size=10, fill=MUTED))
        x += 40 + 6 * len(meaning) + 12
    return parts
