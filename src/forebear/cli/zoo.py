"""``forebear zoo build``: train the model zoo and write its ground-truth manifest.

Parses the options, calls ``forebear.zoo.build.run_build`` (imported when the
command runs, so the CLI starts without torch), prints progress to stderr and
a summary to stdout. Register with ``app.add_typer(zoo_app, name="zoo")``.
"""

from __future__ import annotations

import sys
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from forebear.cli.output import Format, Output

__all__ = ["Profile", "render_build", "zoo_app", "zoo_build_command"]

zoo_app = typer.Typer(
    name="zoo",
    help="The model zoo: tiny models trained on CPU with known ground truth.",
    no_args_is_help=True,
)


@zoo_app.callback()
def _zoo() -> None:
    """The model zoo: tiny models trained on CPU with known ground truth."""


class Profile(StrEnum):
    mini = "mini"
    full = "full"
    calibration = "calibration"
    behaviour = "behaviour"


def _progress(message: str) -> None:
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


@zoo_app.command("build")
def zoo_build_command(
    profile: Annotated[Profile, typer.Option("--profile", help="Which zoo to build.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the models and manifest.")],
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Cache folder (default: OUT/.cache); reused across builds."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Build a zoo profile (cached: unchanged models are not retrained)."""
    from forebear.zoo.build import run_build
    from forebear.zoo.profiles import profile_specs

    result = run_build(
        profile_specs(profile.value),
        out,
        profile=profile.value,
        cache=cache,
        progress=None if quiet else _progress,
    )
    labels = Counter(pair.label for pair in result.manifest.pairs)
    data = {
        "profile": profile.value,
        "out": str(out),
        "manifest": str(out / "manifest.json"),
        "models": len(result.manifest.models),
        "built": list(result.built),
        "cached": list(result.cached),
        "pairs": dict(sorted(labels.items())),
        "seconds": round(result.seconds, 2),
    }
    Output(fmt).emit(data, render_build)


def render_build(console: Console, data: dict[str, Any]) -> None:
    pairs = ", ".join(f"{count} {label}" for label, count in data["pairs"].items())
    console.print(f"zoo {data['profile']}: {data['models']} models in {data['out']}")
    console.print(f"  built {len(data['built'])}, from cache {len(data['cached'])}")
    console.print(f"  pairs: {pairs}")
    console.print(f"  manifest: {data['manifest']}")
    console.print(f"  time: {data['seconds']:.1f} s")
