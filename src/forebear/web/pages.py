"""The HTML pages: run (``/``), reports, the index and the atlas. Jinja2 templates with
autoescaping; the pages' behaviour is the app's own static scripts (no inline script,
nothing from a CDN). A stored report is served as it was written — self-contained HTML —
under a sandboxing Content-Security-Policy: no script runs in it and it loads nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from forebear import __version__
from forebear.errors import InputNotFoundError
from forebear.index import Index
from forebear.web.api import web_state
from forebear.web.reports import list_reports, report_html

__all__ = ["REPORT_CSP", "router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["version"] = __version__
State = Annotated[Any, Depends(web_state)]
PAGE = 50
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"page": name.removesuffix(".html"),
                                                      **context})  # fmt: skip


@router.get("/", response_class=HTMLResponse)
def home(request: Request, state: State) -> HTMLResponse:
    settings = state.settings
    return _page(request, "home.html", roots=[str(root) for root in settings.roots],
                 index=str(settings.index), upload_mb=settings.max_upload_mb)  # fmt: skip


@router.get("/reports", response_class=HTMLResponse)
def reports(request: Request, state: State) -> HTMLResponse:
    return _page(request, "reports.html", reports=list_reports(state.settings.reports))


@router.get("/reports/{report_id}")
def report(report_id: str, state: State) -> Response:
    html = report_html(state.settings.reports, report_id)
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})


@router.get("/index", response_class=HTMLResponse)
def index(
    request: Request,
    state: State,
    family: Annotated[str | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    records, families, missing = [], [], None
    try:
        with Index.open(state.settings.index, create=False) as opened:
            every = list(opened.records())
    except InputNotFoundError as error:
        every, missing = [], str(error)
    families = sorted({r.family for r in every if r.family})
    chosen = [r for r in every if family in (None, "", r.family)]
    records = [r.to_json() | {"label": r.label} for r in chosen[offset : offset + PAGE]]
    return _page(request, "index.html", records=records, families=families, family=family or "",
                 offset=offset, total=len(chosen), size=PAGE, missing=missing,
                 index=str(state.settings.index))  # fmt: skip


@router.get("/atlas", response_class=HTMLResponse)
def atlas(request: Request, state: State) -> HTMLResponse:
    return _page(request, "atlas.html", index=str(state.settings.index))
