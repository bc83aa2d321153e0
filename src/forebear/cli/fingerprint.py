"""``forebear fingerprint MODEL -o FILE``: the comparison's inputs, without the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from forebear.cli.output import Format, Output
from forebear.fingerprint import fingerprint, save_fingerprint
from forebear.model import open_model

ContentUnits = Annotated[
    int | None,
    typer.Option(
        "--content-units",
        min=0,
        help="Units per layer chosen by content (they survive permuted and pruned units; reads "
        "every MLP weight). Default: 64 for a local model, 0 for a remote one.",
    ),
]


def fingerprint_command(
    model: Annotated[
        str,
        typer.Argument(help="Model folder, weights file, hub id org/name[@revision] or https URL."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Fingerprint file to write.")],
    dims: Annotated[
        int, typer.Option("--dims", min=2, help="Canonical directions kept (at most the width).")
    ] = 256,
    units: Annotated[int, typer.Option("--units", min=2, help="MLP units sampled per layer.")] = 64,
    content_units: ContentUnits = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Hub or server token (default: HF_TOKEN or the saved login)."),
    ] = None,
) -> None:
    """Write a fingerprint: sampled reading rows in the model's own canonical basis, a sketch
    of its token embeddings and its structure (a few MB for a 7B model)."""
    with open_model(model, token=token) as opened:
        source = str(Path(model)) if Path(model).exists() else model  # local: as before
        found = fingerprint(
            opened, dims=dims, units=units, content_units=content_units, source=source
        )
        traffic = opened.traffic()
    written = save_fingerprint(found, out)
    data = {
        "fingerprint": str(written),
        "bytes": written.stat().st_size,
        "bytes_read": found.meta["bytes_read"],
        "layers": sum(1 for layer in found.layers if layer is not None),
        "dims": found.meta["settings"]["dims"],
        "content_units": found.meta["settings"]["content_units"],
        "tokens": len(found.tokens),
        "structure": found.meta["structure"],
    }
    if traffic is not None:  # a remote model: what reading it cost on the network
        data |= {
            "revision": found.meta["revision"],
            "bytes_fetched": traffic.bytes_fetched,
            "bytes_cached": traffic.bytes_cached,
            "requests": traffic.requests,
        }
    Output(fmt).emit(data, _render)


def _render(console: Console, data: dict[str, Any]) -> None:
    console.print(
        f"{data['fingerprint']}: {data['bytes']:,} bytes — {data['layers']} layers, "
        f"{data['dims']} canonical directions, {data['tokens']} sketched tokens; "
        f"{data['bytes_read']:,} bytes of weights read"
        + (
            f", {data['bytes_fetched']:,} fetched in {data['requests']} requests"
            if "bytes_fetched" in data
            else ""
        )
    )
