"""Put the current benchmark summary into README.md, between its bench-summary markers.

Reads ``benchmarks/results/zoo-full.json``, ``zoo-calibration.json`` and
``scale.json`` (written by ``make bench``) and replaces the block between
``<!-- bench-summary:start -->`` and ``<!-- bench-summary:end -->`` with two
tables: per method, detection of all related pairs, false positives, parent
attribution and cost on the zoo, and wall time, memory and bytes on the
7B-shaped pair; then, per p-value method, the share of independent pairs below
each α on both zoos. A result
file that is missing leaves its columns empty; the README is otherwise untouched.

Usage: python benchmarks/update_readme.py [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
START, END = "<!-- bench-summary:start -->", "<!-- bench-summary:end -->"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _num(value: Any, form: str = ".3f") -> str:
    return "–" if value is None or isinstance(value, str) else format(value, form)


def _all_related(summary: dict[str, Any]) -> dict[str, Any]:
    return next((r for r in summary["relations"] if r["relation"] == "all related"), {})


def _zoo_cells(summary: dict[str, Any] | None) -> list[str]:
    if summary is None:
        return ["–"] * 6
    related = _all_related(summary)
    tpr = next((t for t in related.get("tpr", []) if t["max_fpr"] == 0.01), None)
    fp = summary.get("false_positives")
    top = summary.get("attribution")
    behaviour = summary.get("behaviour_only")
    return [
        _num(related.get("auroc")),
        "–" if tpr is None else f"{tpr['tpr']:.2f}",
        "–" if fp is None else f"{fp['count']}/{fp['total']}",
        "–" if top is None else f"{top['hits']}/{top['total']}",
        "–" if behaviour is None else f"{behaviour['detected']}/{behaviour['n_pairs']}",
        _num(summary.get("median_seconds"), ".2f"),
    ]


def _scale_cells(row: dict[str, Any] | None) -> list[str]:
    if row is None:
        return ["–"] * 3
    read = row.get("bytes_read")
    return [
        _num(row.get("wall_s"), ".1f"),
        _num(row.get("peak_rss_mb"), ",.0f"),
        "unknown" if read is None else f"{read / 1e9:.2f}",
    ]


def _calibration_cells(summary: dict[str, Any] | None) -> list[str]:
    rows = ((summary or {}).get("calibration") or {}).get("rows", [])
    by_alpha = {row["alpha"]: row for row in rows}
    cells = []
    for alpha in (0.05, 0.01, 0.001):
        row = by_alpha.get(alpha)
        if row is None:
            cells.append("–")
            continue
        text = f"{row['count']}/{row['n']}"
        if row.get("groups") is not None and row["groups"] != row["n"]:
            text += f" ({row['groups_hit']}/{row['groups']} lineage pairs)"
        cells.append(text)
    return cells


def calibration_table(zoo: dict[str, Any] | None, held_out: dict[str, Any] | None) -> str:
    full = {s["method"]: s for s in (zoo or {}).get("methods", [])}
    calibration = {s["method"]: s for s in (held_out or {}).get("methods", [])}

    def has_p_values(name: str) -> bool:
        return any((found.get(name) or {}).get("calibration") for found in (full, calibration))

    names = [name for name in dict.fromkeys([*full, *calibration]) if has_p_values(name)]
    lines = [
        "| method | zoo: p < 0.05 | zoo: p < 0.01 | zoo: p < 0.001 "
        "| calibration zoo: p < 0.05 | p < 0.01 | p < 0.001 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        cells = [name, *_calibration_cells(full.get(name)),
                 *_calibration_cells(calibration.get(name))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(
        [
            "Calibration: independent pairs with p below α (a calibrated test keeps the share "
            "≤ α). The full zoo's independent pairs repeat 35 lineage pairs through near-identical "
            "copies; the calibration zoo (`benchmarks/results/zoo-calibration.md`) holds 18 "
            "independent bases no test was tuned on, 153 distinct pairs.",
            "",
            *lines,
        ]
    )


def summary_table(zoo: dict[str, Any] | None, scale: dict[str, Any] | None) -> str:
    summaries = {s["method"]: s for s in (zoo or {}).get("methods", [])}
    rows = {r["method"]: r for r in (scale or {}).get("methods", [])}
    names = list(dict.fromkeys([*summaries, *rows]))
    lines = [
        "| method | AUROC, all related | TPR @ FPR ≤ 1 % | false positives | top-1 parent "
        "| distilled called derived | s / pair "
        "| 7B pair: s | 7B pair: peak MB | 7B pair: GB read |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        cells = [name, *_zoo_cells(summaries.get(name)), *_scale_cells(rows.get(name))]
        lines.append("| " + " | ".join(cells) + " |")
    when = (zoo or {}).get("started_at", "")[:10] or (scale or {}).get("date", "")
    pairs = sum(len(v) for v in (zoo or {}).get("pairs", {}).values()) // max(len(summaries), 1)
    return "\n".join(
        [
            f"`make bench`, {when}: the full zoo ({pairs} pairs; "
            "`benchmarks/results/zoo-full.md` has every relation) and the Llama-2-7B-shaped "
            "bf16 pair (`benchmarks/results/scale.md`). False positives: independent pairs the "
            "method calls derived at its own threshold. Distilled students are independent in "
            "weights; a weight method should not call them derived.",
            "",
            *lines,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", type=Path, default=ROOT.parent / "README.md")
    args = parser.parse_args()
    results = ROOT / "results"
    zoo = _load(results / "zoo-full.json")
    table = summary_table(zoo, _load(results / "scale.json"))
    table += "\n\n" + calibration_table(zoo, _load(results / "zoo-calibration.json"))
    text = args.readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme}: no {START} … {END} block; add one where the table goes")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
