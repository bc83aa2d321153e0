"""The only place forebear prints: results to stdout, progress and errors to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TextIO

from rich.console import Console

__all__ = ["Format", "Output"]


class Format(StrEnum):
    text = "text"
    json = "json"


class Output:
    def __init__(self, fmt: Format = Format.text, stream: TextIO | None = None) -> None:
        self.format = fmt
        self._stream = stream or sys.stdout
        # Fixed width when not a terminal keeps piped output and golden files stable.
        self.console = Console(
            file=self._stream,
            width=None if self._stream.isatty() else 100,
            highlight=False,
            soft_wrap=False,
        )

    def emit(
        self, data: dict[str, Any], render_text: Callable[[Console, dict[str, Any]], None]
    ) -> None:
        """Print ``data`` as JSON, or through ``render_text`` for people."""
        if self.format is Format.json:
            self._stream.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        else:
            render_text(self.console, data)

    @staticmethod
    def error(message: str) -> None:
        sys.stderr.write(f"forebear: error: {message}\n")
