"""``forebear demo [DIR]``: build tiny checkpoints, inspect each, and compare suspects with one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from forebear.cli.inspect import render_summary
from forebear.cli.output import Format, Output
from forebear.compare import compare
from forebear.demo import REFERENCE, build_demo_models, build_demo_suspects
from forebear.model import open_model
from forebear.summary import summarize


def demo_command(
    folder: Annotated[Path, typer.Argument(help="Where to write the checkpoints.")] = Path(
        "demo-output"
    ),
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> None:
    """Build tiny random checkpoints, inspect them, and ask which suspects derive from one."""
    paths = build_demo_models(folder)
    summaries = []
    for path in paths:
        with open_model(path) as model:
            summaries.append(summarize(model))
    reference = folder / REFERENCE
    suspects = [p for p in paths if p.suffix == ".gguf"]
    suspects += list(build_demo_suspects(folder).values())
    comparisons = [compare(reference, suspect).to_json() for suspect in suspects]
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
        console.print(
            f"\nDetails of one: forebear compare {reference} {folder / 'suspect-disguised'}"
        )

    output.emit({"models": summaries, "comparisons": comparisons}, render)
