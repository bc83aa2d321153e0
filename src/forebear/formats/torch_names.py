"""What a ``torch.save`` pickle yields, as inert records, and the rule that names its tensors.

``forebear.formats.unpickle`` turns ``data.pkl`` into an object tree whose
tensors are ``TensorRecord`` values (a view on a ``StorageRef``, typed by a
``TorchDType``); this module defines those records and ``name_tensors``, which
gives each tensor in the tree its name.

Naming rule (``name_tensors``): when the top-level dict holds a tensor
directly it is the state dict, and its tensor entries keep their own keys
(nested containers inside it are ignored). Otherwise (``{"state_dict": {...}}``,
``{"model": ..., "optimizer": ...}``) nested dicts are walked and the path of
keys is joined with ``.``. Integer keys are written in decimal; other key types
and tensors inside lists are skipped. Small scalar leaves (numbers, short
strings, booleans, ``None``) are kept as metadata.

This module owns the records and the naming; it reads no bytes. The pickle
allowlist belongs to ``forebear.formats.unpickle``, and the zip archive and the
tensor bytes to ``forebear.formats.pytorch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn, TypeGuard

from forebear.errors import LimitExceededError, UnsupportedFormatError

__all__ = ["Leaf", "StorageRef", "TensorRecord", "TorchDType", "name_tensors"]

Leaf = int | float | str | bool | None

_MAX_DEPTH = 32
_MAX_LEAVES = 1024
_MAX_LEAF_CHARS = 1024


@dataclass(frozen=True)
class TorchDType:
    """A torch dtype or typed storage class: its torch name and forebear's dtype name.

    ``forebear`` is None for types forebear does not decode (complex, quantised).
    ``untyped`` marks ``torch.storage.UntypedStorage``, whose element count is in bytes.
    """

    torch_name: str
    forebear: str | None
    untyped: bool = False


@dataclass(frozen=True)
class StorageRef:
    """One storage record of the zip, as the pickle declares it."""

    key: str
    kind: TorchDType
    nbytes: int  # the size the pickle declares; the zip entry must hold at least this


@dataclass(frozen=True)
class TensorRecord:
    """A tensor as a view on a storage; offset and strides count elements of ``dtype``."""

    storage: StorageRef
    dtype: TorchDType
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _key(key: object) -> str | None:
    if isinstance(key, str):
        return key
    if type(key) is int:
        return str(key)
    return None


def _is_leaf(value: object) -> TypeGuard[Leaf]:
    if isinstance(value, str):
        return len(value) <= _MAX_LEAF_CHARS
    return value is None or isinstance(value, int | float | bool)


class _Namer:
    def __init__(self, path: str, max_tensors: int, max_visits: int) -> None:
        self.path = path
        self.max_tensors = max_tensors
        self.max_visits = max_visits
        self.visits = 0
        self.tensors: dict[str, TensorRecord] = {}
        self.leaves: dict[str, Leaf] = {}

    def add(self, name: str, value: object) -> None:
        if isinstance(value, TensorRecord):
            if name in self.tensors:
                raise UnsupportedFormatError(
                    f"two tensors in data.pkl are both named {name!r}",
                    path=self.path,
                    hint="the checkpoint's keys collide once nested dicts are joined with '.'",
                )
            if len(self.tensors) >= self.max_tensors:
                self._over(f"data.pkl names more than {self.max_tensors} tensors")
            self.tensors[name] = value
        elif _is_leaf(value) and len(self.leaves) < _MAX_LEAVES:
            self.leaves[name] = value

    def walk(self, tree: dict[Any, Any], prefix: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            self._over(f"data.pkl nests dicts deeper than {_MAX_DEPTH} levels (or in a cycle)")
        for raw_key, value in tree.items():
            self.visits += 1
            if self.visits > self.max_visits:
                self._over(f"data.pkl's nested dicts hold more than {self.max_visits} entries")
            key = _key(raw_key)
            if key is None:
                continue
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                self.walk(value, f"{name}.", depth + 1)
            else:
                self.add(name, value)

    def _over(self, message: str) -> NoReturn:
        raise LimitExceededError(
            message, path=self.path, hint="raise max_entries if this is a genuine checkpoint"
        )


def name_tensors(
    root: object, *, path: str, max_tensors: int, max_visits: int
) -> tuple[dict[str, TensorRecord], dict[str, Leaf]]:
    """Name the tensors of an unpickled tree by the rule in the module docstring.

    Returns the tensors and the small scalar leaves, each under its joined name.
    """
    if not isinstance(root, dict):
        raise UnsupportedFormatError(
            f"data.pkl holds a {type(root).__name__} at the top level, not a dict of tensors",
            path=path,
            hint="save a state dict (model.state_dict()) instead",
        )
    namer = _Namer(path, max_tensors, max_visits)
    if any(isinstance(value, TensorRecord) for value in root.values()):
        for raw_key, value in root.items():
            key = _key(raw_key)
            if key is not None and not isinstance(value, dict):
                namer.add(key, value)
    else:
        namer.walk(root, "", 0)
    return namer.tensors, namer.leaves
