"""``forebear index …``: the reference index of known models that ``forebear scan`` ranks.

``add``, ``ls``, ``show``, ``rm``, ``export``, ``import`` and ``build`` parse
their options, call ``forebear.index`` and render; progress goes to stderr.
``add`` and ``build`` report each failed model as one line and exit 1 when any
failed, after the others were added. Register with
``app.add_typer(index_app, name="index")``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from forebear.cli.fingerprint import ContentUnits
from forebear.cli.output import Format, Output
from forebear.errors import InputNotFoundError
from forebear.index import Engine, Index, TaskSettings, build_index, executor
from forebear.index.batch import BuildOutcome, BuildReport, normalize_ref, read_ref_list
from forebear.index.transfer import export_index, import_index

__all__ = ["index_app"]

EXIT_FAILED = 1

index_app = typer.Typer(
    name="index",
    help="The reference index: fingerprints of known models, for `forebear scan`.",
    no_args_is_help=True,
)

IndexPath = Annotated[
    Path | None,
    typer.Option("--index", help="Index file (default: $FOREBEAR_INDEX, else the cache's)."),
]
Fmt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
Force = Annotated[bool, typer.Option("--force", help="Fingerprint again and replace.")]
Dims = Annotated[int, typer.Option("--dims", min=2, help="Canonical directions kept.")]
Units = Annotated[int, typer.Option("--units", min=2, help="MLP units sampled per layer.")]
Token = Annotated[
    str | None, typer.Option("--token", help="Hugging Face token (default: your login).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]


@index_app.callback()
def _index() -> None:
    """The reference index: fingerprints of known models, for `forebear scan`."""


@index_app.command("add")
def add_command(
    models: Annotated[
        list[str], typer.Argument(help="Model folders, weights files or hub ids [@revision].")
    ],
    index: IndexPath = None,
    force: Force = False,
    dims: Dims = 256,
    units: Units = 64,
    content_units: ContentUnits = None,
    token: Token = None,
    fmt: Fmt = Format.text,
) -> None:
    """Fingerprint models and add them (models already indexed are skipped)."""
    settings = TaskSettings(dims=dims, units=units, token=token, content_units=content_units)
    with Index.open(index) as opened, executor(Engine.serial) as serial:
        report = build_index(opened, models, serial, settings, force=force)
        _finish(opened, report, fmt)


@index_app.command("build")
def build_command(
    listing: Annotated[
        Path, typer.Argument(help="Text file of model refs, one a line; # starts a comment.")
    ],
    index: IndexPath = None,
    engine: Annotated[Engine, typer.Option("--engine", help="Where tasks run.")] = Engine.process,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Processes (default: the cores).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Dask scheduler address (--engine dask).")
    ] = None,
    force: Force = False,
    dims: Dims = 256,
    units: Units = 64,
    content_units: ContentUnits = None,
    token: Token = None,
    quiet: Quiet = False,
    fmt: Fmt = Format.text,
) -> None:
    """Add every model of a list; resumable: models already indexed are skipped."""
    refs = read_ref_list(listing)
    settings = TaskSettings(dims=dims, units=units, token=token, content_units=content_units)
    with Index.open(index) as opened:
        with (
            executor(engine, workers=workers, scheduler=scheduler) as pool,
            _ProgressBar(len(refs), quiet) as advance,
        ):
            report = build_index(opened, refs, pool, settings, force=force, progress=advance)
        if not quiet:
            typer.echo("indexing: bringing the search cache up to date", err=True)
        opened.warm()  # the first scan after a build should not pay for it
        _finish(opened, report, fmt)


@index_app.command("ls")
def ls_command(
    index: IndexPath = None,
    family: Annotated[str | None, typer.Option("--family", help="Only this family.")] = None,
    fmt: Fmt = Format.text,
) -> None:
    """List the indexed models."""
    with Index.open(index, create=False) as opened:
        records = [record.to_json() for record in opened.records(family=family)]
        data = {"index": str(opened.path), "records": records}
    Output(fmt).emit(data, _render_list)


@index_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="The model as indexed (a local path is resolved).")],
    index: IndexPath = None,
    revision: Annotated[str | None, typer.Option("--revision", help="This revision.")] = None,
    fmt: Fmt = Format.text,
) -> None:
    """Show one indexed model: structure, card claims, fingerprint checksum."""
    with Index.open(index, create=False) as opened:
        record = opened.get(normalize_ref(ref), revision, fingerprint_version=None)
        if record is None:
            raise _not_indexed(ref, opened.path)
        data = {"index": str(opened.path), **record.to_json()}
    Output(fmt).emit(data, _render_record)


@index_app.command("rm")
def rm_command(
    ref: Annotated[str, typer.Argument(help="The model as indexed (a local path is resolved).")],
    index: IndexPath = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Only this one.")] = None,
    fmt: Fmt = Format.text,
) -> None:
    """Remove a model's records (every revision unless --revision)."""
    with Index.open(index, create=False) as opened:
        removed = opened.remove(normalize_ref(ref), revision)
        if not removed:
            raise _not_indexed(ref, opened.path)
        data = {"index": str(opened.path), "ref": ref, "removed": removed}
    Output(fmt).emit(data, _render_removed)


@index_app.command("export")
def export_command(
    out: Annotated[Path, typer.Argument(help="Export file to write (JSON lines).")],
    index: IndexPath = None,
    fmt: Fmt = Format.text,
) -> None:
    """Write every record (fingerprints included) to one portable file."""
    with Index.open(index, create=False) as opened:
        count = export_index(opened, out)
        data = {"index": str(opened.path), "export": str(out), "records": count}
    Output(fmt).emit(data, _render_export)


@index_app.command("import")
def import_command(
    source: Annotated[Path, typer.Argument(help="An export file (forebear index export).")],
    index: IndexPath = None,
    fmt: Fmt = Format.text,
) -> None:
    """Check an export file whole, then add its records that are not indexed yet."""
    with Index.open(index) as opened:
        result = import_index(opened, source)
        opened.warm()
        data = {
            "index": str(opened.path),
            "import": str(source),
            "records": result.records,
            "added": result.added,
            "present": result.records - result.added,
        }
    Output(fmt).emit(data, _render_import)


def _not_indexed(ref: str, path: Path) -> InputNotFoundError:
    return InputNotFoundError(
        f"{ref} is not in the index", path=path, hint="list what is with `forebear index ls`"
    )


class _ProgressBar:
    """A rich bar on stderr advanced once per outcome (nothing when quiet)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self._bar = (
            None
            if quiet
            else Progress(
                TextColumn("indexing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=False,
            )
        )
        self._total = total
        self._counts: dict[str, int] = {}

    def __enter__(self) -> Callable[[BuildOutcome], None] | None:
        if self._bar is None:
            return None
        self._bar.start()
        self._task = self._bar.add_task("", total=self._total)
        return self.advance

    def advance(self, outcome: BuildOutcome) -> None:
        assert self._bar is not None
        self._counts[outcome.status] = self._counts.get(outcome.status, 0) + 1
        described = ", ".join(f"{n} {status}" for status, n in sorted(self._counts.items()))
        self._bar.update(self._task, advance=1, description=described)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _finish(index: Index, report: BuildReport, fmt: Format) -> None:
    """Print the summary, each failure as one line on stderr; exit 1 when any failed."""
    data = {
        "index": str(index.path),
        "records": len(index),
        "added": report.count("added"),
        "skipped": report.count("skipped") + report.count("present"),
        "failed": [{"ref": o.ref, "error": o.message} for o in report.failed],
        "seconds": round(report.seconds, 2),
    }
    Output(fmt).emit(data, _render_build)
    for failure in report.failed:
        message = failure.message or "failed"
        Output.error(message if failure.ref in message else f"{failure.ref}: {message}")
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def _render_build(console: Console, data: dict[str, Any]) -> None:
    console.print(
        f"{data['index']}: {data['added']} added, {data['skipped']} already indexed, "
        f"{len(data['failed'])} failed; {data['records']} records ({data['seconds']:.1f} s)"
    )


def _render_removed(console: Console, data: dict[str, Any]) -> None:
    console.print(f"{data['ref']}: {data['removed']} record(s) removed from {data['index']}")


def _render_export(console: Console, data: dict[str, Any]) -> None:
    console.print(f"{data['export']}: {data['records']} record(s) from {data['index']}")


def _render_import(console: Console, data: dict[str, Any]) -> None:
    console.print(
        f"{data['import']}: {data['added']} added, {data['present']} already in {data['index']}"
    )


def _summary(data: dict[str, Any]) -> str:
    shape = data["structure"]
    card = data["card"]
    parts = [f"{data['family'] or '?'} {shape.get('hidden', '?')}×{shape.get('layers', '?')}"]
    if card["base_models"]:
        parts.append("base: " + ", ".join(card["base_models"]))
    if card["license"]:
        parts.append(f"licence: {card['license']}")
    if card["from_scratch"]:
        parts.append("card claims: from scratch")
    return "; ".join(parts)


def _render_list(console: Console, data: dict[str, Any]) -> None:
    for record in data["records"]:
        console.print(f"{_label(record)}  [dim]{_summary(record)}[/dim]")
    console.print(f"{len(data['records'])} record(s) in {data['index']}")


def _label(record: dict[str, Any]) -> str:
    return record["ref"] if not record["revision"] else f"{record['ref']}@{record['revision']}"


def _render_record(console: Console, data: dict[str, Any]) -> None:
    card = data["card"]
    console.print(f"[bold]{_label(data)}[/bold]  ({_summary(data)})")
    console.print(f"  structure: {data['structure']}")
    if card["evidence"]:
        console.print(f"  card: “{card['evidence']}”")
    console.print(
        f"  fingerprint v{data['fingerprint_version']}, sha256 {data['blob_sha256']}, "
        f"{data['bytes_read']:,} bytes of weights read"
    )
    console.print(f"  added {data['created']} by forebear {data['forebear_version']}")
