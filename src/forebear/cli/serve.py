"""``forebear serve``: the web app on 127.0.0.1 (FastAPI + uvicorn, the ``web`` extra).

Parses its options into ``WebSettings`` and hands them to uvicorn. FastAPI and
uvicorn are imported here, inside the command, so a core install runs every
other command; without them this one says how to get them and exits 1. A
non-loopback ``--host`` without a token is refused before anything listens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forebear.cli.output import Output
from forebear.errors import ForebearError
from forebear.paths import cache_root, default_index_path

__all__ = ["serve_command"]

EXIT_ERROR = 1
MISSING = "forebear serve needs the web extra: pip install 'forebear[web]' (or run make serve)"


def serve_command(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8000,
    root: Annotated[
        list[Path] | None,
        typer.Option(
            "--root",
            help="A folder jobs may read models from (repeatable; default: the current directory).",
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index", help="Index to browse and scan (default: $FOREBEAR_INDEX, else the cache's)."
        ),
    ] = None,
    reports: Annotated[
        Path | None, typer.Option("--reports", help="Where job reports are stored.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="FOREBEAR_TOKEN",
            help="Required on a non-loopback --host; clients send 'Authorization: Bearer TOKEN'.",
        ),
    ] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint",
            help="A model endpoint host (or host:port) probes may ask besides loopback "
            "(repeatable); their key: $FOREBEAR_API_KEY.",
        ),
    ] = None,
    max_jobs: Annotated[int, typer.Option("--max-jobs", min=1, help="Jobs run at once.")] = 2,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.001, help="Largest fingerprint upload.")
    ] = 64.0,
) -> None:
    """Serve the web app: run comparisons, scans and behaviour probes, read reports, browse
    the index and its lineage atlas. Binds 127.0.0.1 unless told otherwise (then a token is
    required)."""
    try:
        import uvicorn

        from forebear.web.app import create_app
    except ImportError:
        Output.error(MISSING)
        raise typer.Exit(EXIT_ERROR) from None
    from forebear.web.settings import WebSettings

    settings = WebSettings(
        roots=tuple(root or [Path.cwd()]), index=index or default_index_path(),
        state=cache_root() / "web", reports_dir=reports, host=host, port=port, token=token,
        max_jobs=max_jobs, max_upload_mb=max_upload_mb, endpoints=tuple(endpoint or ()),
    )  # fmt: skip
    try:
        app = create_app(settings)
    except ForebearError as error:
        Output.error(str(error))
        raise typer.Exit(EXIT_ERROR) from None
    typer.echo(f"forebear serve: http://{_url_host(host)}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
