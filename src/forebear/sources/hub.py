"""Hugging Face hub repositories as ``RemoteLocation``: ``open_hub("org/name", "rev")``.

The repository is listed once through huggingface_hub (``HfApi.model_info`` with
file metadata: every file's size and its LFS sha256 or git blob id), and the
revision asked for — a branch, a tag or a commit — is pinned to the commit sha
the hub reports, so every file is then read at that one commit through
``{endpoint}/{repo}/resolve/{sha}/{path}``. The endpoint is the argument, else
``HF_ENDPOINT`` (read when called, not when huggingface_hub was imported), else
huggingface_hub's default. The token is the argument, else huggingface_hub's own
(``HF_TOKEN``, or the one ``hf auth login`` stored).

This module owns hub references and the hub's errors; reading is ``remote``'s.
"""

from __future__ import annotations

import os
import re

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils._headers import build_hf_headers

from forebear import __version__
from forebear.errors import ForebearError, InputNotFoundError, RemoteError
from forebear.sources.http import Http, Probe, RetryPolicy, Transient, check_online
from forebear.sources.remote import RemoteLocation, cache_root

__all__ = ["TOKEN_HINT", "hub_endpoint", "open_hub", "parse_hub_ref"]

TOKEN_HINT = "pass --token or set HF_TOKEN (a token with read access to it)"
_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^\s@]+))?$")


def parse_hub_ref(ref: str) -> tuple[str, str | None] | None:
    """``org/name`` or ``org/name@revision`` as (repo id, revision), else None."""
    found = _REF.match(ref)
    if found is None or found["repo"].endswith((".", "-")) or ".." in found["repo"]:
        return None
    return found["repo"], found["revision"]


def hub_endpoint(endpoint: str | None = None) -> str:
    """The argument, else ``HF_ENDPOINT`` as set now, else huggingface_hub's endpoint."""
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return chosen.rstrip("/")


def open_hub(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> RemoteLocation:
    """The repository at ``revision`` (default: its main branch), pinned to a commit."""
    shown = repo_id if revision is None else f"{repo_id}@{revision}"
    check_online(shown)
    base = hub_endpoint(endpoint)
    headers = build_hf_headers(token=token, library_name="forebear", library_version=__version__)
    http = Http(base, headers, retry or RetryPolicy(), TOKEN_HINT)
    api = HfApi(endpoint=base, token=token, library_name="forebear", library_version=__version__)

    def listing() -> ModelInfo:
        http.count(requests=1)
        try:
            return api.model_info(
                repo_id, revision=revision, files_metadata=True, timeout=http.retry.timeout
            )
        except (HfHubHTTPError, OfflineModeIsEnabled, httpx2.TransportError) as error:
            raise _hub_error(error, shown, revision, base, "authorization" in headers) from None

    info = http.retrying(shown, "listing the repository", listing)
    sha = info.sha or revision or "main"
    files = {
        sibling.rfilename: Probe(
            sibling.lfs.size if sibling.lfs else sibling.size,
            sibling.lfs.sha256 if sibling.lfs else sibling.blob_id,
        )
        for sibling in info.siblings or ()
    }
    return RemoteLocation(
        f"{repo_id}@{sha[:12]}" if info.sha else shown,
        f"{base}/{repo_id}/resolve/{sha}/",
        http,
        files=files,
        revision=info.sha,
        cache=cache_root(cache_dir),
        identity=f"hub:{base}/{repo_id}",
    )


def _hub_error(
    error: Exception, shown: str, revision: str | None, endpoint: str, sent_token: bool
) -> ForebearError | Transient:
    """The forebear error for a failed listing, or ``Transient`` when it may pass."""
    if isinstance(error, OfflineModeIsEnabled):
        return RemoteError(
            "offline mode is on (HF_HUB_OFFLINE), so it cannot be fetched",
            path=shown,
            hint="unset HF_HUB_OFFLINE, or give a local copy",
        )
    if isinstance(error, httpx2.TransportError):
        return Transient(f"{type(error).__name__}: {error}")
    assert isinstance(error, HfHubHTTPError)
    status = error.response.status_code if error.response is not None else 0
    if isinstance(error, GatedRepoError):
        return RemoteError(
            "is a gated repository",
            path=shown,
            hint=f"accept its conditions on the hub, then {TOKEN_HINT}",
        )
    if isinstance(error, RevisionNotFoundError):
        return InputNotFoundError(
            f"no revision {revision!r} in this repository",
            path=shown,
            hint="check the branch, tag or commit sha",
        )
    if status in (408, 429) or status >= 500:
        return Transient(f"HTTP {status}")
    if status in (401, 403):
        refused = "the token was refused" if sent_token else "no token was sent"
        return RemoteError(
            f"{endpoint} refused access ({refused}): the repository is private, "
            "gated or does not exist",
            path=shown,
            hint=TOKEN_HINT,
        )
    if isinstance(error, RepositoryNotFoundError) or status == 404:
        return InputNotFoundError(
            f"no such model repository on {endpoint}",
            path=shown,
            hint=f"check the id (org/name); if it is private, {TOKEN_HINT}",
        )
    return RemoteError(
        f"the hub answered HTTP {status}",
        path=shown,
        hint="check the endpoint (HF_ENDPOINT) and try again",
    )
