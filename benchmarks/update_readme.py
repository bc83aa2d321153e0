"""Put the current benchmark summary into README.md, between its bench-summary markers.

Reads ``benchmarks/results/zoo-full.json`` and ``scale.json`` (written by
``make bench``) and replaces the block between ``<!-- bench-summary:start -->``
and ``<!-- bench-summary:end -->`` with one table: per method, detection of
all related pairs, false positives, calibration, parent attribution and cost
on the zoo, and wall time, memory and bytes on the 7B-shaped pair. A result
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
    table = summary_table(_load(results / "zoo-full.json"), _load(results / "scale.json"))
    text = args.readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme}: no {START} … {END} block; add one where the table goes")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
