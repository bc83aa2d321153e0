"""``forebear decompose MODEL PARENT… [--base BASE]``: is MODEL a merge of these parents?

Exit codes: 0 a merge (exact, or changed after merging), 4 not a merge of these
parents (or a copy of one), 1 error.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs
from rich.console import Console
from rich.table import Table

from forebear.cli.output import Format, Output
from forebear.lineage import decompose
from forebear.model import open_model

EXIT_MERGE, EXIT_NOT_MERGE = 0, 4


def decompose_command(
    model: Annotated[str, typer.Argument(help="The model that may be a merge.")],
    parents: Annotated[list[str], typer.Argument(help="Candidate parents (two or more).")],
    base: Annotated[
        str | None,
        typer.Option("--base", help="The parents' common base (fits task arithmetic and TIES)."),
    ] = None,
    budget: Annotated[
        int,
        typer.Option(
            "--budget", min=1024, help="Values read per model (a sample of every tensor)."
        ),
    ] = 1 << 24,
    mergekit: Annotated[
        Path | None, typer.Option("--mergekit", help="Write the nearest mergekit config here.")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="Hugging Face token.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> None:
    """Fit MODEL as a merge of PARENTs (linear, SLERP; with --base also task arithmetic and
    TIES): mixture weights, per layer where they vary, a residual that tells an exact merge
    from one trained further, and the nearest mergekit config."""
    with ExitStack() as stack:
        opened = [stack.enter_context(open_model(ref, token=token)) for ref in [model, *parents]]
        found_base = None if base is None else stack.enter_context(open_model(base, token=token))
        found = decompose(opened[0], opened[1:], found_base, budget=budget)
    data = found.to_json()
    config = found.mergekit()
    if mergekit is not None and config is not None:
        temporary = mergekit.with_name(f".{mergekit.name}.tmp")
        temporary.write_text(yaml.safe_dump(config, sort_keys=False))
        temporary.replace(mergekit)
        data["mergekit_file"] = str(mergekit)
    Output(fmt).emit(data, _render)
    merged = found.verdict in ("exact merge", "merge, then changed")
    raise typer.Exit(EXIT_MERGE if merged else EXIT_NOT_MERGE)


def _render(console: Console, data: dict[str, Any]) -> None:
    best = data["best"]
    console.print(f"[bold]{data['model']}[/bold]: {data['verdict']}")
    if best is not None:
        weights = ", ".join(f"{p} {w:.3f}" for p, w in zip(data["parents"], best["weights"],
                                                           strict=True))  # fmt: skip
        extra = "".join(f", {k} {v:.3f}" for k, v in best["params"].items())
        residual, exact = best["residual"], data["exact_threshold"]
        console.print(f"best fit: {best['method']} — {weights}{extra}; residual "
                      f"{residual:.4f} (exact up to {exact:.3f})")  # fmt: skip
    table = Table(show_edge=False)
    for column in ("method", "weights", "parameters", "residual"):
        table.add_column(column)
    for fit in data["fits"]:
        table.add_row(fit["method"], ", ".join(f"{w:.3f}" for w in fit["weights"]),
                      ", ".join(f"{k} {v:.3f}" for k, v in fit["params"].items()),
                      f"{fit['residual']:.4f}")  # fmt: skip
    console.print(table)
    if best is not None and best["varies_by_layer"]:
        console.print("weights per layer:")
        for layer in best["layers"]:
            where = "embeddings, head" if layer["layer"] is None else f"layer {layer['layer']}"
            console.print(f"  {where}: " + ", ".join(f"{w:.3f}" for w in layer["weights"]))
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if data["mergekit"] is not None:
        console.print("nearest mergekit config:")
        console.print(yaml.safe_dump(data["mergekit"], sort_keys=False).rstrip(), markup=False)
    console.print(
        f"[dim]{data['tensors']} tensors, {data['elements']:,} values per model; "
        f"residual ρ = ‖M − fit‖ / min ‖M − parent‖[/dim]"
    )
