"""``forebear bench --zoo DIR``: score provenance methods on a zoo's ground-truth pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from forebear.bench.methods import METHODS
from forebear.bench.report import to_json, to_markdown, write_report
from forebear.bench.run import run_benchmark
from forebear.cli.output import Format, Output
from forebear.zoo.manifest import load_manifest

DEFAULT_METHODS = ["baseline-cosine"]


def _progress(method: str, done: int, total: int) -> None:
    # Progress belongs on stderr so stdout stays the table (or JSON) alone.
    typer.echo(f"bench: {method} {done}/{total}", err=True)


def bench_command(
    zoo: Annotated[
        Path, typer.Option("--zoo", help="The zoo's folder (with manifest.json) or the manifest.")
    ],
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="A registered method; repeat for several."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the JSON and Markdown results.")
    ] = Path("benchmarks/results"),
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> None:
    """Score methods on every manifest pair: AUROC, TPR at low FPR, calibration, attribution."""
    names = methods or DEFAULT_METHODS
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise typer.BadParameter(
            f"unknown method {unknown[0]!r}; known: {', '.join(sorted(METHODS))}",
            param_hint="--method",
        )
    manifest = load_manifest(zoo)
    result = run_benchmark(manifest, [METHODS[name]() for name in names], progress=_progress)
    files = write_report(result, out)
    typer.echo(f"bench: wrote {files.json} and {files.markdown}", err=True)
    data = to_json(result)
    markdown = to_markdown(result)

    def render(console: Console, _: dict[str, Any]) -> None:
        # out() writes verbatim: no wrapping (Markdown rows are long) and no markup.
        console.out(markdown, end="", highlight=False)

    Output(fmt).emit(data, render)
