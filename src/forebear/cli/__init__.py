"""The ``forebear`` command line: parse, call the library, render — nothing else.

``main`` maps every ``ForebearError`` to one line on stderr and its exit code;
a traceback appears only with ``FOREBEAR_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

import typer

from forebear import __version__
from forebear.cli.bench import bench_command
from forebear.cli.compare import compare_command
from forebear.cli.decompose import decompose_command
from forebear.cli.demo import demo_command
from forebear.cli.fingerprint import fingerprint_command
from forebear.cli.index import index_app
from forebear.cli.inspect import inspect_command
from forebear.cli.output import Output
from forebear.cli.probe import probe_command
from forebear.cli.scan import scan_command
from forebear.cli.serve import serve_command
from forebear.cli.tree import tree_command
from forebear.cli.zoo import zoo_app
from forebear.errors import ForebearError

__all__ = ["app", "main"]

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70

app = typer.Typer(
    name="forebear",
    help="Is this model original work, or derived from another? Evidence from weights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("inspect")(inspect_command)
app.command("compare")(compare_command)
app.command("fingerprint")(fingerprint_command)
app.command("scan")(scan_command)
app.command("decompose")(decompose_command)
app.command("tree")(tree_command)
app.command("demo")(demo_command)
app.command("bench")(bench_command)
app.command("serve")(serve_command)
app.command("probe")(probe_command)
app.add_typer(zoo_app, name="zoo")
app.add_typer(index_app, name="index")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"forebear {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Is this model original work, or derived from another? Evidence from weights."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (usage errors are typer's: 2)."""
    debug = os.environ.get("FOREBEAR_DEBUG") == "1"
    try:
        app(args=argv, prog_name="forebear")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except ForebearError as error:
        if debug:
            raise
        Output.error(str(error))
        return error.exit_code
    except KeyboardInterrupt:
        Output.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:  # the last line of defence: never a traceback for users
        if debug:
            raise
        Output.error(
            f"internal error ({type(error).__name__}: {error}) — "
            "rerun with FOREBEAR_DEBUG=1 and report it with the traceback"
        )
        return EXIT_INTERNAL
    return 0


def run() -> None:
    sys.exit(main())
