"""What one ``forebear serve`` is allowed to do: where it listens, which paths it may read,
where it writes, which model endpoints a probe may ask, and its bounds (jobs, uploads).

``WebSettings`` is plain data, checked once by ``WebSettings.check`` before a server
starts: a non-loopback address without a token is refused. This module owns the
settings and that check; ``security`` applies them to each request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path

from forebear.errors import ForebearError

__all__ = ["LOOPBACK_NAMES", "WebSettings", "is_loopback"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MIB = 1 << 20


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) reaches this machine only."""
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebSettings:
    """One server's configuration. ``roots`` are the folders jobs may read models from;
    ``state`` holds what the server writes itself (reports, uploads) unless set apart."""

    roots: tuple[Path, ...]
    index: Path  # the index browsed, scanned and drawn as the atlas
    state: Path  # uploads/ lives here, and reports/ unless ``reports`` is given
    reports_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_jobs: int = 2  # running at once
    max_pending: int = 8  # waiting beyond those; more is refused (429)
    max_upload_mb: float = 64.0
    progress_lines: int = 50  # progress messages kept per job
    history: int = 200  # finished jobs kept in memory
    allowed_hosts: tuple[str, ...] = field(default=())  # Host headers accepted; () = derived
    endpoints: tuple[str, ...] = field(default=())  # hosts a probe may ask, beyond loopback

    @property
    def reports(self) -> Path:
        return self.reports_dir if self.reports_dir is not None else self.state / "reports"

    @property
    def uploads(self) -> Path:
        return self.state / "uploads"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host headers the app answers: the loopback names on loopback (a DNS-rebinding
        page cannot reach the API), any host when a token guards a public address."""
        if self.allowed_hosts:
            return self.allowed_hosts
        return LOOPBACK_NAMES if is_loopback(self.host) else ("*",)

    def check(self) -> WebSettings:
        """Refuse settings a server must not start with; returns them unchanged."""
        if not is_loopback(self.host) and not self.token:
            raise ForebearError(
                f"--host {self.host}: a non-loopback address needs a token",
                hint="pass --token or set FOREBEAR_TOKEN, or bind to 127.0.0.1",
            )
        if self.max_jobs < 1 or self.max_pending < 0:
            raise ForebearError(
                f"--max-jobs {self.max_jobs}: at least one job must be able to run",
                hint="pass --max-jobs 1 or more",
            )
        if self.max_upload_mb <= 0:
            raise ForebearError(f"--max-upload-mb {self.max_upload_mb}: must be positive",
                                hint="pass a size in MiB, e.g. --max-upload-mb 64")  # fmt: skip
        if not self.roots:
            raise ForebearError("no --root given", hint="name at least one folder with --root")
        return self

    def prepared(self) -> WebSettings:
        """The settings with roots resolved and the server's own folders created."""
        for folder in (self.reports, self.uploads):
            folder.mkdir(parents=True, exist_ok=True)
        roots = tuple(dict.fromkeys(root.resolve() for root in self.roots))
        return replace(self, roots=roots)
