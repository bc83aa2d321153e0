"""What names a model to probe: a local model folder, or an OpenAI-compatible endpoint
written ``http(s)://host[:port]/v1#model-name``.

``parse_endpoint`` reads an endpoint reference (``None`` for anything else) and
``open_client`` turns a reference into a ``Client``. Which references a caller may
use — the web app's roots and endpoint allow-list — is the caller's decision; the
API key travels only into the client, never into a name or a report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from forebear.behavior.base import Client
from forebear.behavior.cache import ResponseCache
from forebear.errors import ForebearError

__all__ = ["ENDPOINT_HINT", "Endpoint", "open_client", "parse_endpoint"]

ENDPOINT_HINT = "write an endpoint as http://host:port/v1#model-name"


@dataclass(frozen=True)
class Endpoint:
    """An endpoint reference, split: ``base`` (``…/v1``), the ``model`` and the host."""

    base: str
    model: str
    host: str  # lower case, without brackets
    port: int | None


def parse_endpoint(reference: str) -> Endpoint | None:
    """The endpoint ``reference`` names; ``None`` when it is not an http(s) URL."""
    if not reference.startswith(("http://", "https://")):
        return None
    base, _, model = reference.partition("#")
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or not model or not parts.hostname:
        raise ForebearError(f"not an endpoint reference: {reference!r}", hint=ENDPOINT_HINT)
    if parts.username is not None or parts.password is not None or parts.query:
        raise ForebearError(
            f"not an endpoint reference: {reference!r} (credentials or a query in the URL)",
            hint=f"{ENDPOINT_HINT}; the key goes in FOREBEAR_API_KEY",
        )
    return Endpoint(base, model, parts.hostname.lower(), port)


def open_client(
    reference: str, *, cache: ResponseCache | None, api_key: str | None, budget: int
) -> Client:
    """A client for a local model folder or an ``http(s)://…/v1#model`` endpoint."""
    endpoint = parse_endpoint(reference)
    if endpoint is not None:
        from forebear.behavior.http import OpenAIClient

        return OpenAIClient(
            endpoint.base, endpoint.model, api_key=api_key, cache=cache, budget=budget
        )
    if not Path(reference).is_dir():
        raise ForebearError(
            "no such model folder",
            path=reference,
            hint=f"give a local model folder, or {ENDPOINT_HINT}",
        )
    from forebear.behavior.local import LocalClient

    return LocalClient(reference, cache=cache, budget=budget)
