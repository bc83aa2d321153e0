"""Metadata priors for lineage direction, kept apart from the weights' evidence.

A priors file (JSON or YAML) says what each model's metadata claims::

    models:
      org/child: {released: 2024-03-01, base_model: [org/parent], quantized: false}

Keys are the names given to ``forebear tree`` (or their last path component).
Log-odds that ``u`` is ``v``'s parent: ±3 by release order (alone, P 0.95), ±4 when one declares
the other its base, ±3 toward the model flagged quantised being the child.
Declared bases that form a cycle (A names B, B names A) are ignored, with a
warning; so are names no model carries.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; safe_load only

from forebear.errors import ForebearError

__all__ = ["Priors", "load_priors"]

RELEASE_LOG_ODDS = 3.0
DECLARED_LOG_ODDS = 4.0
QUANTIZED_LOG_ODDS = 3.0
MAX_PRIORS_BYTES = 16 << 20
_HINT = (
    "a priors file maps models: {name: {released: YYYY-MM-DD, base_model: [...], quantized: bool}}"
)


@dataclass(frozen=True)
class Claim:
    released: dt.date | None
    bases: tuple[str, ...]
    quantized: bool | None


@dataclass(frozen=True)
class Priors:
    claims: Mapping[str, Claim]
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, models: Mapping[str, Any], source: str | Path = "<priors>") -> Priors:
        """Priors from ``{name: {released, base_model, quantized}}``, checked like a file."""
        claims = {str(name): _claim(Path(source), str(name), v) for name, v in models.items()}
        return _without_cycles(claims)

    def merged(self, other: Priors | None) -> Priors:
        """These claims with ``other``'s added (``other`` wins for a model both name)."""
        if other is None:
            return self
        return Priors({**self.claims, **other.claims}, self.warnings + other.warnings)

    def claim(self, name: str) -> Claim | None:
        return self.claims.get(name) or self.claims.get(Path(name).name)

    def declares(self, child: str, base: str) -> bool:
        """Whether ``child``'s metadata names ``base`` among its base models: the name as
        given, or the last component of either (a card's ``org/model`` names a local
        ``…/model`` folder)."""
        claim = self.claim(child)
        if claim is None:
            return False
        named = {name for declared in claim.bases for name in _names(declared)}
        return bool(_names(base) & named)

    def log_odds(self, u: str, v: str) -> float:
        """Log-odds from metadata that ``u`` is ``v``'s parent (0: no claim either way)."""
        cu, cv = self.claim(u), self.claim(v)
        if cu is None and cv is None:
            return 0.0
        total = 0.0
        if cu is not None and cv is not None:
            total += _order(cu.released, cv.released, RELEASE_LOG_ODDS)
            if cu.quantized is not None and cv.quantized is not None:
                total += _order(cu.quantized, cv.quantized, QUANTIZED_LOG_ODDS)
        if self.declares(v, u):
            total += DECLARED_LOG_ODDS
        if self.declares(u, v):
            total -= DECLARED_LOG_ODDS
        return total


def _order(first: Any, second: Any, odds: float) -> float:
    """``odds`` when ``first < second``, ``-odds`` when greater, 0 when equal or unknown."""
    if first is None or second is None or first == second:
        return 0.0
    return odds if first < second else -odds


def _names(name: str) -> set[str]:
    return {name, Path(name).name}


def load_priors(path: str | Path) -> Priors:
    """Read and check a priors file; one-line errors name the file."""
    source = Path(path)
    try:
        if source.stat().st_size > MAX_PRIORS_BYTES:
            raise ForebearError(f"{source}: priors file over {MAX_PRIORS_BYTES >> 20} MiB",
                                hint=_HINT)  # fmt: skip
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ForebearError(
            f"{source}: cannot read the priors file ({error})", hint=_HINT
        ) from None
    try:
        raw = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError):
        raise ForebearError(f"{source}: not valid JSON or YAML", hint=_HINT) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ForebearError(f"{source}: no 'models' mapping", hint=_HINT)
    return Priors.from_mapping(raw["models"], source)


def _claim(source: Path, name: str, value: Any) -> Claim:
    if not isinstance(value, dict):
        raise ForebearError(f"{source}: the entry for {name!r} is not a mapping", hint=_HINT)
    released = value.get("released")
    if isinstance(released, str):
        try:
            released = dt.date.fromisoformat(released)
        except ValueError:
            raise ForebearError(f"{source}: {name!r} released {released!r} is not a date",
                                hint=_HINT) from None  # fmt: skip
    if released is not None and not isinstance(released, dt.date):
        raise ForebearError(f"{source}: {name!r} released is not a date", hint=_HINT)
    bases = value.get("base_model", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ForebearError(f"{source}: {name!r} base_model is not a name or list", hint=_HINT)
    quantized = value.get("quantized")
    if quantized is not None and not isinstance(quantized, bool):
        raise ForebearError(f"{source}: {name!r} quantized is not true or false", hint=_HINT)
    return Claim(released, tuple(bases), quantized)


def _without_cycles(claims: Mapping[str, Claim]) -> Priors:
    """Drop declared bases that lie on a cycle of declarations, and say so."""
    edges = {name: set(claim.bases) for name, claim in claims.items()}
    cyclic = {name for name in edges if _reaches(name, name, edges)}
    if not cyclic:
        return Priors(dict(claims))
    kept = {
        name: Claim(
            c.released,
            tuple(b for b in c.bases if b not in cyclic or name not in cyclic),
            c.quantized,
        )
        for name, c in claims.items()
    }
    warning = (f"declared base models form a cycle among {', '.join(sorted(cyclic))}: "
               "those declarations are ignored")  # fmt: skip
    return Priors(kept, (warning,))


def _reaches(start: str, goal: str, edges: Mapping[str, set[str]]) -> bool:
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return False
