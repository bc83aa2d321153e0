"""``forebear demo [DIR]``: build tiny checkpoints, inspect each, and compare suspects with one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from forebear.cli.inspect import render_summary
from forebear.cli.output import Format, Output
from forebear.compare import compare
from forebear.demo import (
    MAIN_SUSPECT,
    REFERENCE,
    build_demo_models,
    build_demo_suspects,
    write_demo_report,
)
from forebear.model import open_model
from forebear.summary import summarize


def demo_command(
    folder: Annotated[Path, typer.Argument(help="Where to write the checkpoints.")] = Path(
        "demo-output"
    ),
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> None:
    """Build tiny random checkpoints, inspect them, ask which suspects derive from one, and
    write the evidence report of the disguised suspect (report.html, .md, .json)."""
    paths = build_demo_models(folder)
    summaries = []
    for path in paths:
        with open_model(path) as model:
            summaries.append(summarize(model))
    reference = folder / REFERENCE
    suspects = [p for p in paths if p.suffix == ".gguf"]
    suspects += list(build_demo_suspects(folder).values())
    results = {suspect.name: compare(reference, suspect) for suspect in suspects}
    comparisons = [result.to_json() for result in results.values()]
    written = write_demo_report(folder, results[MAIN_SUSPECT], command=["forebear", *sys.argv[1:]])
    reports = [str(path) for path in written]
    output = Output(fmt)

    def render(console: Console, data: dict[str, Any]) -> None:
        for summary in data["models"]:
            console.rule(Path(summary["model"]).name)
            render_summary(console, summary)
            console.print()
        console.rule(f"is it derived from {REFERENCE}?")
        table = Table(show_edge=False)
        for column in ("suspect", "verdict", "evidence", "read"):
            table.add_column(column)
        for result in data["comparisons"]:
            log10_p = result["log10_p"]
            evidence = f"p = {10**log10_p:.2g}" if log10_p > -4 else f"log10 p = {log10_p:.0f}"
            table.add_row(Path(result["b"]).name, result["verdict"], evidence,
                          f"{result['bytes_read'] / 1024:.0f} KiB")  # fmt: skip
        console.print(table)
        console.print(f"\nDetails of one: forebear compare {reference} {folder / MAIN_SUSPECT}")
        _how_to_open(console, written[0])

    output.emit({"models": summaries, "comparisons": comparisons, "reports": reports}, render)


def _how_to_open(console: Console, report: Path) -> None:
    console.print(f"\nThe evidence report of that comparison: {report}", markup=False)
    console.print(f"  open it in a browser: {report.resolve().as_uri()}", markup=False)
    console.print(f"  (also as Markdown and JSON: {report.with_suffix('.md')}, "
                  f"{report.with_suffix('.json')})", markup=False)  # fmt: skip
    console.print(
        "The web app: make serve, or pip install 'forebear[web]' and run forebear serve;\n"
        "  then open http://127.0.0.1:8000",
        markup=False,
    )
