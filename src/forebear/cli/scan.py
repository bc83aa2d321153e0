"""``forebear scan MODEL``: what does this model come from? Ranked, tested, card checked.

Exit codes: 0 no indexed relative, 3 a derived relative found, 5 a model-card
claim contradicted by the weights (takes precedence: it is the finding a
reviewer must see), 1 error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from forebear.cli.compare import ReportOption
from forebear.cli.fingerprint import ContentUnits
from forebear.cli.output import Format, Output
from forebear.index import Index
from forebear.report import report_format, scan_report, write_report
from forebear.scan import scan

EXIT_NONE, EXIT_RELATIVE, EXIT_CONTRADICTED = 0, 3, 5


def scan_command(
    model: Annotated[
        str,
        typer.Argument(
            help="Model folder, weights file, hub id org/name[@revision], https URL "
            "or fingerprint file."
        ),
    ],
    index: Annotated[
        Path | None,
        typer.Option("--index", help="Index file (default: $FOREBEAR_INDEX, else the cache's)."),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Candidates to test.")] = 5,
    weights: Annotated[
        bool, typer.Option("--weights", help="Also compare the weights of candidates reachable.")
    ] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Hub revision.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Hugging Face token.")] = None,
    dims: Annotated[
        int, typer.Option("--dims", min=2, help="Canonical directions (as the index's).")
    ] = 256,
    units: Annotated[
        int, typer.Option("--units", min=2, help="MLP units sampled per layer (as the index's).")
    ] = 64,
    content_units: ContentUnits = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
    report: ReportOption = None,
) -> None:
    """Rank every indexed model, test the top ones, report the best relative and check the
    model card's claims against the weights."""
    if report is not None:
        report_format(report)  # a bad suffix fails now, not after the scan
    with Index.open(index, create=False) as opened:
        result = scan(model, opened, top=top, weights=weights, revision=revision, token=token,
                      dims=dims, units=units, content_units=content_units)  # fmt: skip
        index_file = opened.path
    if report is not None:
        settings = {"index": str(index_file), "top": top, "weights": weights, "revision": revision,
                    "dims": dims, "units": units, "content_units": content_units}  # fmt: skip
        made = scan_report(result, command=["forebear", *sys.argv[1:]],
                           inputs=(model, index_file), settings=settings)  # fmt: skip
        typer.echo(f"scan: report written to {write_report(made, report)}", err=True)
    Output(fmt).emit(result.to_json(), _render)
    if any(check.status == "contradicted" for check in result.checks):
        raise typer.Exit(EXIT_CONTRADICTED)
    raise typer.Exit(EXIT_NONE if result.best is None else EXIT_RELATIVE)


def _render(console: Console, data: dict[str, Any]) -> None:
    console.print(f"[bold]{data['query']}[/bold]: {data['verdict']}")
    console.print(
        f"{data['retrieved']} of {data['indexed']} indexed models ranked in "
        f"{data['seconds']['retrieval']:.3f} s; {len(data['matches'])} tested"
    )
    table = Table(show_edge=False)
    for column in ("candidate", "retrieval", "verdict", "log10 p", "tested on"):
        table.add_column(column, justify="right" if column in ("retrieval", "log10 p") else "left")
    for match in data["matches"]:
        table.add_row(match["ref"], f"{match['retrieval_score']:.3f}", match["verdict"],
                      f"{match['log10_p']:.1f}", match["tested_on"])  # fmt: skip
    console.print(table)
    for check in data["checks"]:
        style = "bold red" if check["status"] == "contradicted" else "none"
        console.print(f"[{style}]card: {check['claim']} — {check['status']}[/{style}]: "
                      f"{check['evidence']}")  # fmt: skip
    console.print("[dim]Retrieval scores rank candidates; the verdicts come from the tests.[/dim]")
