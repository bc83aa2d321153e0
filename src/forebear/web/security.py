"""What a request may touch: model paths confined to the configured roots, the token, and
the upload limit.

``confine`` turns what a client typed into what a job may open: a hub id
``org/name[@revision]`` passes through (the library resolves it), a local path
must resolve — symlinks followed — inside one of the roots, and anything else
(URLs, ``~``) is refused. ``confine_probed`` does the same for a model a behaviour
probe asks: a local model folder under the roots, or an endpoint
``http(s)://host[:port]/v1#model`` whose host is loopback or on the ``--endpoint``
allow-list (the server's own key is added by the job, never taken from a request).
``token_ok`` compares in constant time. The errors
here are ``ForebearError``\\ s that the app maps to HTTP statuses; this module
decides nothing about responses.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from pathlib import Path

from forebear.behavior.references import parse_endpoint
from forebear.errors import ForebearError, InputNotFoundError, LimitExceededError
from forebear.web.settings import is_loopback

__all__ = [
    "AccessDeniedError",
    "PathNotAllowedError",
    "QueueFullError",
    "UploadTooLargeError",
    "confine",
    "confine_probed",
    "token_ok",
]

# org/name[@revision] as the hub spells them: no leading dot, no "..", no scheme.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?")


class PathNotAllowedError(ForebearError, PermissionError):
    """A local path outside every configured root (HTTP 403)."""


class AccessDeniedError(ForebearError, PermissionError):
    """A request without the server's token, or with another (HTTP 401)."""


class UploadTooLargeError(LimitExceededError):
    """An upload over ``--max-upload-mb`` (HTTP 413)."""


class QueueFullError(ForebearError):
    """Every job slot and every waiting place is taken (HTTP 429)."""


def token_ok(given: str | None, expected: str | None) -> bool:
    """True when no token is configured, or ``given`` is it (constant-time comparison)."""
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def confine(raw: str, roots: Sequence[Path]) -> str:
    """The model reference a job may open: a hub id unchanged, or a local path resolved
    inside ``roots`` (relative paths are tried against each root in turn)."""
    text = raw.strip()
    if not text:
        raise ForebearError("empty model reference", hint="give a local path or org/name")
    if "://" in text or text.startswith("~"):
        raise PathNotAllowedError(
            f"{text}: only local paths under the roots and hub ids are accepted",
            hint=_allowed(roots),
        )
    path = Path(text)
    tried = [path] if path.is_absolute() else [root / text for root in roots]
    if not path.is_absolute() and _HUB_ID.fullmatch(text) and ".." not in text:
        if not _local_match(text, roots):
            return text  # a hub id: nothing local by that name
        tried.append(path)  # where the library would look first: the working directory
    for candidate in tried:
        resolved = candidate.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            raise PathNotAllowedError(f"{text}: outside the allowed roots", hint=_allowed(roots))
        if resolved.exists():
            return str(resolved)
    raise InputNotFoundError(f"{text}: no such file or folder under the roots",
                             hint=_allowed(roots))  # fmt: skip


def confine_probed(raw: str, roots: Sequence[Path], endpoints: Sequence[str]) -> str:
    """The model reference a probe job may ask: an allowed endpoint reference unchanged, or
    a local model folder resolved inside ``roots``."""
    text = raw.strip()
    endpoint = parse_endpoint(text)
    if endpoint is None:
        confined = confine(text, roots)
        if not Path(confined).is_dir():
            raise ForebearError(f"{text}: not a local model folder",
                                hint="a probe asks model folders under the roots, or "
                                "endpoints http://host:port/v1#model")  # fmt: skip
        return confined
    port = "" if endpoint.port is None else f":{endpoint.port}"
    allowed = {entry.lower().strip("[]") for entry in endpoints}
    if is_loopback(endpoint.host) or {endpoint.host, endpoint.host + port} & allowed:
        return text
    raise PathNotAllowedError(
        f"{text}: endpoint host {endpoint.host} is not allowed",
        hint="a probe may ask loopback endpoints and the hosts the server was started "
        f"with --endpoint; to allow this one: forebear serve --endpoint {endpoint.host}",
    )


def _local_match(text: str, roots: Sequence[Path]) -> bool:
    """Whether a hub-id-shaped ``text`` also names something local (in a root, or relative
    to the working directory, which the library tries before the hub)."""
    ref = text.split("@", 1)[0]
    top = ref.split("/", 1)[0]
    near = [Path(text), Path(ref), *(root / part for root in roots for part in (text, ref, top))]
    return any(candidate.exists() or candidate.is_symlink() for candidate in near)


def _allowed(roots: Sequence[Path]) -> str:
    return "allowed roots: " + ", ".join(str(root) for root in roots)
