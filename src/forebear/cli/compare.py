"""``forebear compare A B``: is B derived from A? Verdict, p-value, layer map and ledger.

Exit codes say the verdict, so scripts need not parse: 0 independent, 3
derived (any derived class, identical and re-packaged copies included), 4
inconclusive, 1 error (the error's own line on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from forebear.cli.output import Format, Output
from forebear.compare import compare
from forebear.errors import ForebearError
from forebear.report import comparison_report, report_format, write_report
from forebear.report.words import p_text

EXIT_INDEPENDENT, EXIT_ERROR, EXIT_DERIVED, EXIT_INCONCLUSIVE = 0, 1, 3, 4

ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also write an evidence report here: .html (one self-contained page), .md or .json.",
    ),
]


def _progress(message: str) -> None:
    typer.echo(f"compare: {message}", err=True)


def compare_command(
    a: Annotated[
        str,
        typer.Argument(
            help="The suspected parent: model folder, weights file, hub id org/name[@revision], "
            "https URL, or a fingerprint file (forebear fingerprint)."
        ),
    ],
    b: Annotated[str, typer.Argument(help="The model under question (the same kinds as A).")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
    fast: Annotated[
        bool,
        typer.Option("--fast", help="Read a sample of rows; same-position test only."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    report: ReportOption = None,
) -> None:
    """Is B derived from A? A p-value against independent initialisation, with evidence.

    With a fingerprint on either side the comparison runs on sketches (the other side is
    fingerprinted the same way): same verdict classes, blind to permuted units."""
    try:
        if report is not None:
            report_format(report)  # a bad suffix fails now, not after the comparison
        result = compare(a, b, fast=fast, progress=None if quiet else _progress)
        if report is not None:
            made = comparison_report(result, command=["forebear", *sys.argv[1:]], inputs=(a, b))
            written = write_report(made, report)
            if not quiet:
                _progress(f"report written to {written}")
    except ForebearError as error:
        Output.error(str(error))
        raise typer.Exit(EXIT_ERROR) from None
    Output(fmt).emit(result.to_json(), render_comparison)
    if result.derived:
        raise typer.Exit(EXIT_DERIVED)
    raise typer.Exit(EXIT_INCONCLUSIVE if result.verdict == "inconclusive" else EXIT_INDEPENDENT)


def _fraction(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def render_comparison(console: Console, data: dict[str, Any]) -> None:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("A", f"{data['a']} ({data['families'][0]})")
    head.add_row("B", f"{data['b']} ({data['families'][1]})")
    head.add_row("verdict", f"[bold]{data['verdict']}[/bold]")
    head.add_row("evidence", p_text(data["log10_p"]))
    head.add_row("null", data["null"])
    residual = data["residual"]
    if residual["shared_tokens"] is not None and residual["fit"] is None:
        head.add_row(
            "residual map",
            f"none fitted: {residual['shared_tokens']} shared tokens are too few "
            f"({residual['source']}; coordinates compared as they are)",
        )
    elif residual["shared_tokens"] is not None:
        head.add_row(
            "residual map",
            f"Procrustes on {residual['rows_used']} of {residual['shared_tokens']} shared "
            f"tokens ({residual['source']}), fit {residual['fit']:.3f}",
        )
    head.add_row("read", f"{data['bytes_read'] / 2**20:.1f} MiB in {data['seconds']:.2f} s"
                 + (" (--fast)" if data["fast"] else ""))  # fmt: skip
    console.print(head)
    console.print()
    for reason in data["reasons"]:
        console.print(f"  • {reason}")
    modules = {k: v for k, v in data.get("modules", {}).items() if "log10_p" in v}
    if modules:
        console.print()
        table = Table(title="which modules carry the evidence", title_justify="left",
                      show_edge=False)  # fmt: skip
        for column in ("module", "test", "log10 p", "layers with evidence"):
            table.add_column(column, justify="left" if column in ("module", "test") else "right")
        for name, module in modules.items():
            table.add_row(
                name, module["kind"], f"{module['log10_p']:.1f}",
                f"{len(module['b_layers_with_evidence'])} of {module['b_layers_tested']}",
            )  # fmt: skip
        console.print(table)
    ledger = data["ledger"]
    if ledger is not None and data["layer_map"]:
        console.print()
        table = Table(title="layer map and ledger", title_justify="left", show_edge=False)
        for column in ("B layer", "from A layer", "log10 p", "MLP change", "parameters"):
            table.add_column(column, justify="right")
        for layer in ledger["layers"]:
            table.add_row(
                str(layer["b_layer"]),
                "new" if layer["a_layer"] is None else str(layer["a_layer"]),
                "–" if layer["log10_p"] is None else f"{layer['log10_p']:.1f}",
                _fraction(layer["mlp_delta"]),
                f"{layer['parameters']:,}",
            )
        console.print(table)
        console.print(
            f"inherited: {ledger['inherited_fraction']:.1%} of B's parameters; "
            f"new layers: {list(ledger['new_layers']) or 'none'}; dropped A layers: "
            f"{list(ledger['dropped_layers']) or 'none'}; repeated: "
            f"{list(ledger['repeated_layers']) or 'none'}; new tokens: "
            f"{'unknown' if ledger['new_tokens'] is None else ledger['new_tokens']}"
        )
    console.print()
    console.print("[dim]What weights cannot show:[/dim]")
    for line in data["cannot_see"]:
        console.print(f"[dim]  • {line}[/dim]")
