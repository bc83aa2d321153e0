"""``forebear inspect MODEL``: what a checkpoint is, without reading its weights."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from forebear.cli.output import Format, Output
from forebear.model import open_model
from forebear.summary import summarize


def inspect_command(
    model: Annotated[
        str,
        typer.Argument(help="Model folder, weights file, hub id org/name[@revision] or https URL."),
    ],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
    tensors: Annotated[bool, typer.Option("--tensors", help="Also list every tensor.")] = False,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Hub or server token (default: HF_TOKEN or the saved login)."),
    ] = None,
) -> None:
    """Family, dimensions, dtypes, size and role coverage of a checkpoint (headers only)."""
    with open_model(model, token=token) as opened:
        data = summarize(opened)
        traffic = opened.traffic()
        if traffic is not None:
            data["revision"] = opened.revision
            data["traffic"] = dataclasses.asdict(traffic)
        if tensors:
            data["tensor_list"] = [
                {"name": info.name, "dtype": info.dtype, "shape": list(info.shape)}
                for info in opened.reader.tensors().values()
            ]
    Output(fmt).emit(data, render_summary)


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _human_count(count: int) -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.2f}{suffix}"
    return str(count)


def render_summary(console: Console, data: dict[str, Any]) -> None:
    dims = {k: v for k, v in data["dimensions"].items() if v is not None}
    vocab = data["vocabulary"]
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("model", data["model"])
    overview.add_row("family", data["family"])
    overview.add_row("format", f"{data['format']} ({len(data['files'])} file(s))")
    overview.add_row("size on disk", _human_bytes(data["bytes_on_disk"]))
    if "traffic" in data:
        traffic, revision = data["traffic"], data["revision"]
        overview.add_row(
            "fetched",
            f"{_human_bytes(traffic['bytes_fetched'])} in {traffic['requests']} requests"
            + (f" (commit {revision})" if revision else ""),
        )
    overview.add_row(
        "parameters", f"{_human_count(data['parameters'])} in {data['tensors']} tensors"
    )
    overview.add_row(
        "dtypes", ", ".join(f"{k} ({_human_count(v)})" for k, v in data["dtypes"].items())
    )
    overview.add_row("dimensions", ", ".join(f"{k}={v}" for k, v in dims.items()))
    overview.add_row("head", "tied to the token embedding" if data["tied_head"] else "separate")
    overview.add_row(
        "vocabulary",
        "no tokenizer files"
        if vocab is None
        else f"{vocab['size']} tokens ({vocab['kind']}, {vocab['source']})",
    )
    console.print(overview)
    roles = data["roles"]
    table = Table(title="role coverage", title_justify="left", show_edge=False)
    table.add_column("role")
    table.add_column("tensors", justify="right")
    for role, count in roles["found"].items():
        table.add_row(role, str(count))
    console.print(table)
    if roles["missing_count"]:
        console.print(
            f"[bold]missing[/bold] ({roles['missing_count']}): " + ", ".join(roles["missing"])
        )
    else:
        console.print("missing: none")
    if roles["unknown_count"]:
        console.print(
            f"[bold]unknown tensors[/bold] ({roles['unknown_count']}): "
            + ", ".join(roles["unknown"])
        )
    else:
        console.print("unknown tensors: none")
    for item in data.get("tensor_list", []):
        console.print(f"  {item['name']}  {item['dtype']}  {tuple(item['shape'])}")
