"""The zoo's ground truth: which model came from which, and every pair to score.

A manifest is JSON (``manifest.json`` at the zoo's root)::

    {"schema": "forebear.zoo.manifest/1", "profile": "mini",
     "created_with": {"forebear": "0.1.0", "torch": "2.13.0", ...},
     "models": {"llama-a": {"path": "models/llama-a", "family": "llama", "kind": "base",
                            "parents": [], "transformation": null, "params": {},
                            "seed": 1, "data": "corpus-a", "tokenizer": "bpe-a"}, ...},
     "pairs": [{"a": "llama-a", "b": "llama-a-ft", "label": "related",
                "relation": "light_finetune", "path": ["llama-a", "llama-a-ft"]}, ...]}

``kind`` is ``base`` (independently initialised), ``derived`` (made from its
parents' weights) or ``distilled`` (fresh initialisation trained on a teacher's
outputs: related in behaviour, independent in weights). Pairs are derived from
the tree by ``derive_pairs``, never written by hand:

- ``related``: one model is an ancestor of the other through ``derived`` edges, or
  both descend from one base (siblings, cousins); ``relation`` is the
  transformation of the last edge into ``b`` for a parent→child pair, else
  ``ancestor``/``sibling``; ``path`` runs through the tree from ``a`` to ``b``.
- ``independent``: no common base through weight edges, and no distillation edge.
- ``behaviour_only``: linked only through a distillation edge.

This module owns the format and its validation; it builds nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from forebear.errors import CorruptCheckpointError, InputNotFoundError

__all__ = [
    "SCHEMA",
    "Manifest",
    "ModelEntry",
    "Pair",
    "derive_pairs",
    "load_manifest",
]

SCHEMA = "forebear.zoo.manifest/1"
Kind = Literal["base", "derived", "distilled"]
Label = Literal["related", "independent", "behaviour_only"]
_KINDS = ("base", "derived", "distilled")
_HINT = "rebuild the zoo with `forebear zoo build`"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: str  # relative to the manifest's folder
    family: str
    kind: Kind
    parents: tuple[str, ...] = ()
    transformation: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    data: str | None = None
    tokenizer: str | None = None


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    label: Label
    relation: str
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    profile: str
    models: Mapping[str, ModelEntry]
    pairs: tuple[Pair, ...]
    created_with: Mapping[str, str] = field(default_factory=dict)
    root: Path | None = None  # the folder model paths are relative to

    def model_path(self, name: str) -> Path:
        entry = self.models[name]
        return (self.root or Path(".")) / entry.path

    def bases(self) -> list[str]:
        return [name for name, entry in self.models.items() if entry.kind == "base"]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "profile": self.profile,
            "created_with": dict(self.created_with),
            "models": {
                name: {k: v for k, v in asdict(entry).items() if k != "name"}
                | {"parents": list(entry.parents), "params": dict(entry.params)}
                for name, entry in self.models.items()
            },
            "pairs": [asdict(pair) | {"path": list(pair.path)} for pair in self.pairs],
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _weight_parents(models: Mapping[str, ModelEntry], name: str) -> tuple[str, ...]:
    entry = models[name]
    return entry.parents if entry.kind == "derived" else ()


def _ancestry(models: Mapping[str, ModelEntry], name: str) -> dict[str, list[str]]:
    """Every weight ancestor of ``name`` (itself included), with its path down to ``name``."""
    paths: dict[str, list[str]] = {name: [name]}
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for parent in _weight_parents(models, current):
            if parent not in paths:
                paths[parent] = [parent, *paths[current]]
                frontier.append(parent)
    return paths


def _distillation_linked(models: Mapping[str, ModelEntry], a: str, b: str) -> bool:
    def teachers(name: str) -> set[str]:
        found: set[str] = set()
        for node in _ancestry(models, name):
            if models[node].kind == "distilled":
                found.update(models[node].parents)
        return found

    return bool(teachers(a) & (set(_ancestry(models, b)) | {b})) or bool(
        teachers(b) & (set(_ancestry(models, a)) | {a})
    )


def _related(models: Mapping[str, ModelEntry], a: str, b: str) -> Pair | None:
    up_a, up_b = _ancestry(models, a), _ancestry(models, b)
    if a in up_b:
        path = up_b[a]
        relation = models[b].transformation if len(path) == 2 else "ancestor"
        return Pair(a, b, "related", relation or "derived", tuple(path))
    if b in up_a:
        path = up_a[b]
        relation = models[a].transformation if len(path) == 2 else "ancestor"
        return Pair(a, b, "related", relation or "derived", tuple(reversed(path)))
    common = set(up_a) & set(up_b)
    if not common:
        return None
    # The nearest common ancestor gives the shortest path a → ancestor → b.
    nearest = min(common, key=lambda n: (len(up_a[n]) + len(up_b[n]), n))
    path = [*reversed(up_a[nearest]), *up_b[nearest][1:]]
    return Pair(a, b, "related", "sibling", tuple(path))


def derive_pairs(models: Mapping[str, ModelEntry]) -> tuple[Pair, ...]:
    """Every unordered pair of models (a before b in insertion order), labelled from the tree."""
    pairs = []
    for a, b in combinations(models, 2):
        pair = _related(models, a, b)
        if pair is None:
            label: Label = "behaviour_only" if _distillation_linked(models, a, b) else "independent"
            pair = Pair(a, b, label, "distillation" if label == "behaviour_only" else "none")
        pairs.append(pair)
    return tuple(pairs)


def _fail(where: str, message: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(message, path=where, hint=_HINT)


def _entry(name: str, raw: Any, where: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise _fail(where, f"model {name!r} is not an object")
    required = {"path": str, "family": str, "kind": str}
    for key, kind in required.items():
        if not isinstance(raw.get(key), kind):
            raise _fail(where, f"model {name!r} has no {key} string")
    if raw["kind"] not in _KINDS:
        raise _fail(where, f"model {name!r} has kind {raw['kind']!r}, not one of {_KINDS}")
    parents = raw.get("parents", [])
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise _fail(where, f"model {name!r}: parents must be a list of names")
    allowed = {f for f in ModelEntry.__dataclass_fields__ if f != "name"}
    unknown = set(raw) - allowed
    if unknown:
        raise _fail(where, f"model {name!r} has unknown keys {sorted(unknown)}")
    return ModelEntry(name=name, **{**raw, "parents": tuple(parents)})


def _check_tree(models: Mapping[str, ModelEntry], where: str) -> None:
    for name, entry in models.items():
        if entry.kind == "base" and entry.parents:
            raise _fail(where, f"base model {name!r} lists parents")
        if entry.kind != "base" and not entry.parents:
            raise _fail(where, f"{entry.kind} model {name!r} lists no parents")
        for parent in entry.parents:
            if parent not in models:
                raise _fail(where, f"model {name!r} names unknown parent {parent!r}")
    _check_acyclic(models, where)


def _check_acyclic(models: Mapping[str, ModelEntry], where: str) -> None:
    """Depth-first search over parent edges; a node met again on the current path is a cycle."""
    done: set[str] = set()
    for root in models:
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(models[root].parents))]
        on_path = {root}
        while stack:
            node, parents = stack[-1]
            parent = next(parents, None)
            if parent is None:
                stack.pop()
                on_path.discard(node)
                done.add(node)
            elif parent in on_path:
                raise _fail(where, f"model {parent!r} is its own ancestor")
            elif parent not in done:
                on_path.add(parent)
                stack.append((parent, iter(models[parent].parents)))


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest; pairs are checked against the tree they claim to come from."""
    target = Path(path)
    if target.is_dir():
        target = target / "manifest.json"
    if not target.is_file():
        raise InputNotFoundError("no zoo manifest here", path=target, hint=_HINT)
    where = str(target)
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(where, f"is not valid JSON ({error})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise _fail(where, f"is not a {SCHEMA} manifest")
    if not isinstance(raw.get("models"), dict) or not isinstance(raw.get("pairs"), list):
        raise _fail(where, "needs a models object and a pairs list")
    models = {name: _entry(name, entry, where) for name, entry in raw["models"].items()}
    _check_tree(models, where)
    expected = {(p.a, p.b): p for p in derive_pairs(models)}
    pairs = []
    for item in raw["pairs"]:
        if not isinstance(item, dict) or (item.get("a"), item.get("b")) not in expected:
            raise _fail(where, f"pair {item!r} is not a pair of its models")
        truth = expected[(item["a"], item["b"])]
        if item.get("label") != truth.label or item.get("relation") != truth.relation:
            raise _fail(where, f"pair {item['a']}/{item['b']} contradicts the model tree")
        pairs.append(truth)
    return Manifest(
        profile=str(raw.get("profile", "")),
        models=models,
        pairs=tuple(pairs),
        created_with=dict(raw.get("created_with", {})),
        root=target.parent,
    )
