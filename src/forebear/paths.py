"""Where forebear keeps what it stores for the user: the index and the range cache.

One root, chosen in this order: ``FOREBEAR_CACHE``, ``$XDG_CACHE_HOME/forebear``,
``~/.cache/forebear``. Each store takes its own flag and environment variable on
top of this (``--index`` / ``FOREBEAR_INDEX``), so a user can move one without the
other. This module only names paths; it creates nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "default_index_path", "default_range_cache"]


def cache_root() -> Path:
    """The folder forebear's caches live under (not created here)."""
    explicit = os.environ.get("FOREBEAR_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "forebear"


def default_index_path() -> Path:
    """``FOREBEAR_INDEX`` when set, else ``index.sqlite`` under the cache root."""
    explicit = os.environ.get("FOREBEAR_INDEX")
    return Path(explicit).expanduser() if explicit else cache_root() / "index.sqlite"


def default_range_cache() -> Path:
    """``FOREBEAR_RANGE_CACHE`` when set, else ``ranges/`` under the cache root."""
    explicit = os.environ.get("FOREBEAR_RANGE_CACHE")
    return Path(explicit).expanduser() if explicit else cache_root() / "ranges"
