"""The web app: ``create_app(settings)`` builds the FastAPI application of ``forebear serve``.

It wires the pieces and the rules every request passes: the Host check
(loopback names only on loopback, against DNS rebinding), the token (bearer
header, or a cookie set by opening any page once with ``?token=``), the body
size limit, security headers (a strict Content-Security-Policy: the pages run
only the app's own scripts), and one JSON error shape, ``{"error", "hint"}``,
for every ``ForebearError``, validation error and HTTP error — never a
traceback. Swagger UI and ReDoc are off (they load from a CDN); the schema is
served at ``/openapi.json``. Routes live in ``api`` and ``pages``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from forebear import __version__
from forebear.errors import CorruptCheckpointError, ForebearError, InputNotFoundError
from forebear.web.atlas import Atlas
from forebear.web.jobs import JobQueue, NotCancellableError
from forebear.web.security import (
    AccessDeniedError,
    PathNotAllowedError,
    QueueFullError,
    UploadTooLargeError,
    token_ok,
)
from forebear.web.settings import WebSettings
from forebear.web.uploads import check_declared_size

__all__ = ["WebState", "create_app"]

HERE = Path(__file__).parent
COOKIE = "forebear_token"
OPEN_PATHS = ("/api/health", "/static/")  # served without the token
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Status per error class, most specific first.
_STATUS: tuple[tuple[type[ForebearError], int], ...] = (
    (AccessDeniedError, 401),
    (PathNotAllowedError, 403),
    (InputNotFoundError, 404),
    (UploadTooLargeError, 413),
    (NotCancellableError, 409),
    (QueueFullError, 429),
    (CorruptCheckpointError, 422),
    (ForebearError, 400),
)


@dataclass
class WebState:
    """What the routes share: the settings, the job queue and the atlas cache."""

    settings: WebSettings
    jobs: JobQueue
    atlas: Atlas


def create_app(settings: WebSettings) -> FastAPI:
    """The application for ``settings`` (checked, folders created); jobs stop with it."""
    settings = settings.check().prepared()
    jobs = JobQueue(settings.max_jobs, settings.max_pending, keep=settings.progress_lines,
                    history=settings.history)  # fmt: skip
    state = WebState(settings=settings, jobs=jobs, atlas=Atlas(settings.index))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.jobs.shutdown()

    app = FastAPI(title="forebear", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description=_DESCRIPTION)  # fmt: skip
    app.state.forebear = state
    _install_errors(app)
    app.middleware("http")(_guard(settings))
    from forebear.web.api import router as api_router
    from forebear.web.pages import router as pages_router

    app.include_router(api_router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


_DESCRIPTION = (
    "Model provenance from weights: run `forebear compare` and `forebear scan` as jobs, read "
    "their reports, browse the index and its lineage atlas; and from behaviour: `forebear "
    "probe` as a job (behavioural evidence, labelled apart). Mirrors the CLI; every error is "
    '`{"error": "...", "hint": "..."}`.'
)

Handler = Callable[[Request], Awaitable[Response]]


def _guard(settings: WebSettings) -> Callable[[Request, Handler], Awaitable[Response]]:
    """The token and body-size checks, and the security headers on every response."""

    async def guard(request: Request, call_next: Handler) -> Response:
        path = request.url.path
        host = _host_name(request.headers.get("host", ""))
        if not _host_ok(host, settings.hosts):
            return error_response(ForebearError(
                f"Host {host or '(none)'!r} is not served here (against DNS rebinding)",
                hint=f"open the app by one of these names: {', '.join(settings.hosts)}",
            ))  # fmt: skip
        offered = request.query_params.get("token")
        if settings.token and not path.startswith(OPEN_PATHS):
            given = _bearer(request) or request.cookies.get(COOKIE) or offered
            if not token_ok(given, settings.token):
                return error_response(AccessDeniedError(
                    f"{path}: missing or wrong token",
                    hint="send 'Authorization: Bearer TOKEN', or open /?token=TOKEN once",
                ))  # fmt: skip
            if offered and request.method == "GET" and not path.startswith("/api/"):
                return _token_cookie(request, offered)
        try:
            check_declared_size(request.headers.get("content-length"), settings.max_upload_bytes)
        except UploadTooLargeError as error:
            return error_response(error)
        response = await call_next(request)
        _secure_headers(response)
        return response

    return guard


def _host_name(header: str) -> str:
    """The host of a Host header, without the port ("[::1]:8000" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.split(":", 1)[0]


def _host_ok(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether the Host header names a host this server answers ("*" and "*.suffix" match
    as in Starlette's TrustedHostMiddleware, which this replaces to keep the JSON errors)."""
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def _token_cookie(request: Request, token: str) -> Response:
    """Remember the token in a cookie and drop it from the address bar (and history)."""
    response = RedirectResponse(str(request.url.remove_query_params("token")), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip
    _secure_headers(response)
    return response


def _secure_headers(response: Response) -> None:
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")


def error_response(error: ForebearError) -> JSONResponse:
    """The one JSON error shape, with the status of the error's class."""
    status = next(code for cls, code in _STATUS if isinstance(error, cls))
    headers = {"Retry-After": "5"} if status == 429 else None
    body = {"error": str(error), "hint": error.hint}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    async def forebear_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ForebearError)
        return error_response(error)

    async def invalid(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
                    for e in error.errors()]  # fmt: skip
        return JSONResponse({"error": "invalid request: " + "; ".join(problems),
                             "hint": "see /openapi.json for the request shape"},
                            status_code=422)  # fmt: skip

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return JSONResponse({"error": f"{request.url.path}: {error.detail}", "hint": None},
                            status_code=error.status_code, headers=error.headers)  # fmt: skip

    app.add_exception_handler(ForebearError, forebear_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
