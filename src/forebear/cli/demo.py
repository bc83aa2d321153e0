"""``forebear demo [DIR]``: build tiny checkpoints in several formats and inspect each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from forebear.cli.inspect import render_summary
from forebear.cli.output import Format, Output
from forebear.demo import build_demo_models
from forebear.model import open_model
from forebear.summary import summarize


def demo_command(
    folder: Annotated[Path, typer.Argument(help="Where to write the checkpoints.")] = Path(
        "demo-output"
    ),
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> None:
    """Build tiny random checkpoints (safetensors, sharded, GGUF, .bin) and inspect them."""
    paths = build_demo_models(folder)
    summaries = []
    for path in paths:
        with open_model(path) as model:
            summaries.append(summarize(model))
    output = Output(fmt)

    def render(console: Console, data: dict[str, Any]) -> None:
        for summary in data["models"]:
            console.rule(Path(summary["model"]).name)
            render_summary(console, summary)
            console.print()

    output.emit({"models": summaries}, render)
