"""Every exception forebear raises, in one tree.

Each class also inherits the builtin a caller would naturally catch, so
``except FileNotFoundError`` or ``except ValueError`` keeps working::

    ForebearError                                     exit 1
    ├── InputNotFoundError      (FileNotFoundError)   exit 3  missing path, shard or indexed file
    ├── TensorNotFoundError     (KeyError)            exit 3  a tensor the checkpoint lacks
    ├── UnsupportedFormatError  (ValueError)          exit 4  readable, not by forebear (yet)
    ├── CorruptCheckpointError  (ValueError)          exit 5  bytes contradict their header
    │   └── LimitExceededError                        exit 5  a size over a safety limit
    ├── UnsafeCheckpointError   (ValueError)          exit 6  pickle asks for a disallowed global
    ├── ArchitectureError       (LookupError)         exit 7  tensors cannot be named by role
    │   ├── UnknownArchitectureError                  exit 7  no definition fits
    │   └── DefinitionError                           exit 7  a definition breaks the schema
    ├── TokenizerError          (ValueError)          exit 8  an unreadable vocabulary file
    └── RemoteError             (ConnectionError)     exit 9  a hub or URL that cannot be read
        └── behavior.base.EndpointError               exit 9  an endpoint failed after its retries

Defined beside the code that raises them (the web app maps each to an HTTP status):
``behavior.base.BudgetExhaustedError`` (RuntimeError; the query budget would be
exceeded), ``web.security.PathNotAllowedError`` and ``AccessDeniedError``
(PermissionError; 403, 401), ``web.security.UploadTooLargeError`` (a
LimitExceededError; 413), ``web.security.QueueFullError`` (429) and
``web.jobs.NotCancellableError`` (409).

A message names the file first and ends with the way out, so the CLI can print
``str(error)`` as its one line: ``PATH: what is wrong — what to do``.
"""

from __future__ import annotations

import os

__all__ = [
    "ArchitectureError",
    "CorruptCheckpointError",
    "DefinitionError",
    "ForebearError",
    "InputNotFoundError",
    "LimitExceededError",
    "RemoteError",
    "TensorNotFoundError",
    "TokenizerError",
    "UnknownArchitectureError",
    "UnsafeCheckpointError",
    "UnsupportedFormatError",
]


class ForebearError(Exception):
    """Base of every error forebear raises on purpose."""

    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.message if self.path is None else f"{self.path}: {self.message}"
        return text if not self.hint else f"{text} — {self.hint}"

    def __str__(self) -> str:
        # KeyError and OSError would otherwise quote or decorate the message.
        return self._render()

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.path, self.hint))


def _rebuild(
    cls: type[ForebearError], message: str, path: str | None, hint: str | None
) -> ForebearError:
    return cls(message, path=path, hint=hint)


class InputNotFoundError(ForebearError, FileNotFoundError):
    """A file or folder that should exist does not."""

    exit_code = 3


class TensorNotFoundError(ForebearError, KeyError):
    """A tensor name that the checkpoint does not hold."""

    exit_code = 3


class UnsupportedFormatError(ForebearError, ValueError):
    """A well-formed input that forebear cannot read (yet), with the conversion to use."""

    exit_code = 4


class CorruptCheckpointError(ForebearError, ValueError):
    """Bytes that contradict their own header: truncation, bad offsets, bad lengths."""

    exit_code = 5


class LimitExceededError(CorruptCheckpointError):
    """A declared size beyond a safety limit; refused before anything is allocated."""


class UnsafeCheckpointError(ForebearError, ValueError):
    """A pickle that asks for a global outside the tensor-rebuilding allowlist."""

    exit_code = 6


class ArchitectureError(ForebearError, LookupError):
    """The checkpoint's tensors cannot be named by role."""

    exit_code = 7


class UnknownArchitectureError(ArchitectureError):
    """No architecture definition fits the checkpoint."""


class DefinitionError(ArchitectureError, ValueError):
    """An architecture definition file that breaks the schema."""


class TokenizerError(ForebearError, ValueError):
    """A tokenizer file that cannot be read as a vocabulary."""

    exit_code = 8


class RemoteError(ForebearError, ConnectionError):
    """A hub repository or URL that cannot be read: network, refused token, offline mode."""

    exit_code = 9
