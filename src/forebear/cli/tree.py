"""``forebear tree MODEL…``: the lineage forest of a set of models, each edge with its
evidence and the probability of its direction.

Exit codes: 0 done, 1 error.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from forebear.cli.compare import ReportOption
from forebear.cli.output import Format, Output
from forebear.errors import ForebearError
from forebear.index import Index
from forebear.lineage.graphml import to_graphml
from forebear.lineage.priors import load_priors
from forebear.lineage.tree import Lineage, build_tree, tree_from_index
from forebear.report import report_format, tree_report, write_report


class TreeFormat(StrEnum):
    text = "text"
    json = "json"
    graphml = "graphml"


def tree_command(
    models: Annotated[
        list[str] | None, typer.Argument(help="Model folders, weights files or hub ids.")
    ] = None,
    index: Annotated[
        bool, typer.Option("--index", help="The indexed models instead, from their fingerprints.")
    ] = False,
    index_file: Annotated[
        Path | None,
        typer.Option(
            "--index-file", help="Index file (default: $FOREBEAR_INDEX, else the cache's)."
        ),
    ] = None,
    family: Annotated[
        str | None, typer.Option("--family", help="With --index: only this family.")
    ] = None,
    priors: Annotated[
        Path | None,
        typer.Option(
            "--priors",
            help="Metadata priors (JSON/YAML): release dates, declared "
            "bases, quantised flags; reported apart from the weights' evidence. A declared "
            "base also picks the parent (or a merge's parents) where the weights cannot; "
            "such edges are marked.",
        ),
    ] = None,
    cards: Annotated[
        bool,
        typer.Option(
            "--cards",
            help="Also take each model's card (README.md base_model) as priors; --priors "
            "wins for a model both name. (--index always reads the cards.)",
        ),
    ] = False,
    fmt: Annotated[TreeFormat, typer.Option("--format", "-f", help="Output format.")] = (
        TreeFormat.text
    ),
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the output here, not stdout.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    report: ReportOption = None,
) -> None:
    """Compare every pair, find families, copies and merges, and orient each parent edge
    (structure, storage precision, weight growth; priors kept apart). With --index: the
    indexed models from their fingerprints, their cards' declared bases as priors."""
    if report is not None:
        report_format(report)  # a bad suffix fails now, not after every pair is compared
    claims = None if priors is None else load_priors(priors)

    live = not quiet and sys.stderr.isatty()  # a log file gets no carriage-return updates

    def say(message: str) -> None:
        if live:
            sys.stderr.write(f"\r\033[Ktree: {message}")
            sys.stderr.flush()

    if index == bool(models):
        raise ForebearError(
            "name models, or pass --index (not both)",
            hint="forebear tree MODEL MODEL…  or  forebear tree --index",
        )
    if index:
        with Index.open(index_file, create=False) as opened:
            found = tree_from_index(opened, family=family, priors=claims, progress=say)
            index_file = opened.path
    else:
        found = build_tree(models or [], priors=claims, cards=cards, progress=say)
    if live:
        sys.stderr.write("\r\033[K")
    if report is not None:
        inputs: list[str | Path] = [*(models or []), *(p for p in (index_file, priors) if p)]
        settings = {"index": index, "index_file": index_file and str(index_file),
                    "family": family, "priors": priors and str(priors),
                    "cards": cards or index}  # fmt: skip
        _report(found, report, inputs, settings, quiet)
    if fmt is TreeFormat.graphml:
        _write(to_graphml(found), out)
        return
    if out is not None:
        with out.open("w", encoding="utf-8") as stream:
            Output(Format(fmt.value), stream).emit(found.to_json(), _render)
        return
    Output(Format(fmt.value)).emit(found.to_json(), _render)


def _report(found: Lineage, path: Path, inputs: list[str | Path], settings: dict[str, Any],
            quiet: bool) -> None:  # fmt: skip
    made = tree_report(found, command=["forebear", *sys.argv[1:]], inputs=inputs,
                       settings=settings)  # fmt: skip
    written = write_report(made, path)
    if not quiet:
        sys.stderr.write(f"tree: report written to {written}\n")


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(out)


def _render(console: Console, data: dict[str, Any]) -> None:
    children: dict[str, list[dict[str, Any]]] = {}
    has_parent = set()
    for edge in data["edges"]:
        children.setdefault(edge["parent"], []).append(edge)
        has_parent.add(edge["child"])
    for index, family in enumerate(data["families"], start=1):
        console.print(f"[bold]family {index}[/bold] ({len(family)} models)")
        for root in [m for m in family if m not in has_parent]:
            console.print(f"  {root}", markup=False)
            _branch(console, root, children, "    ", set())
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(f"[dim]{data['comparisons']} pairs compared in {data['seconds']:.1f} s; "
                  "P: probability of the direction shown, from the weights (priors apart); "
                  "'?': undetermined[/dim]")  # fmt: skip


def _branch(console: Console, node: str, children: dict[str, list[dict[str, Any]]],
            indent: str, seen: set[str]) -> None:  # fmt: skip
    for edge in sorted(children.get(node, []), key=lambda e: e["child"]):
        child = edge["child"]
        mark = "?" if edge["decided_by"] == "undetermined" else ""
        share = "" if edge["weight"] is None else f", weight {edge['weight']:.2f}"
        priors = "" if edge["p_priors"] is None else f", with priors {edge['p_priors']:.2f}"
        if edge.get("attached_by") == "priors":
            priors += "; parent from the declared base"
        if edge["alternatives"]:
            priors += "; nearly as close: " + ", ".join(edge["alternatives"])
        console.print(f"{indent}└─ {child}  [{edge['relation']}{share}; P {edge['p_weights']:.2f}"
                      f"{mark}{priors}]", markup=False)  # fmt: skip
        if child not in seen:  # a merge hangs under each parent; its subtree is shown once
            seen.add(child)
            _branch(console, child, children, indent + "   ", seen)
