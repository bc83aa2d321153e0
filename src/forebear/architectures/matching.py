"""Match tensor names against a definition's templates, and check required roles.

Owns the name-to-pattern step shared by detection and resolution. Every match
is a full match of a compiled template (``{layer}`` and ``{expert}`` become
``\\d+`` groups); nothing here searches for substrings. A definition's patterns
are combined into one alternation per naming so a checkpoint with a hundred
thousand expert tensors is matched in one regex pass per name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from forebear.architectures.roles import Role, Scope
from forebear.architectures.schema import Definition, Pattern
from forebear.architectures.templates import PLACEHOLDER

__all__ = [
    "MAX_CHECKED_EXPERTS",
    "MAX_CHECKED_LAYERS",
    "Match",
    "MatchResult",
    "RoleKey",
    "match_names",
    "missing_roles",
]

RoleKey = tuple[Role, int | None, int | None]  # role, layer, expert

# Counts beyond these are not checked one by one: a hostile config or tensor name could
# otherwise declare 10**12 layers and make coverage loop for ever. Real models stay far below.
MAX_CHECKED_LAYERS = 4096
MAX_CHECKED_EXPERTS = 4096


@dataclass(frozen=True)
class Match:
    name: str
    pattern: Pattern
    layer: int | None
    expert: int | None


@dataclass(frozen=True)
class MatchResult:
    matches: tuple[Match, ...]
    unknown: tuple[str, ...]  # no pattern and no ignore rule matched
    ignored: tuple[str, ...]  # matched an ignore rule (buffers, vision towers)


def _leads(definition: Definition, patterns: tuple[Pattern, ...]) -> tuple[str, ...]:
    """The literal text every matching name must start with (a cheap necessary condition)."""
    leads: set[str] = set()
    for pattern in patterns:
        head = PLACEHOLDER.split(pattern.template, maxsplit=1)[0]
        if pattern.template.startswith("{base}"):
            rest = PLACEHOLDER.split(pattern.template[len("{base}") :], maxsplit=1)[0]
            leads.update(prefix + rest for prefix in definition.base_prefixes)
        else:
            leads.add(head)
    return tuple(sorted(leads))


@functools.cache
def _combined(
    definition: Definition, naming: str
) -> tuple[re.Pattern[str], tuple[Pattern, ...], tuple[str, ...]]:
    patterns = definition.patterns_for(naming)
    alternatives = []
    for index, pattern in enumerate(patterns):
        # Group names must be unique across alternatives; the templates compiled to these two.
        source = pattern.regex.pattern.replace("(?P<layer>", f"(?P<layer_{index}>")
        source = source.replace("(?P<expert>", f"(?P<expert_{index}>")
        alternatives.append(f"(?P<p{index}>{source})")
    combined = re.compile("|".join(alternatives) or r"(?!)")
    return combined, patterns, _leads(definition, patterns)


def _index(match: re.Match[str], group: str) -> int | None:
    value = match.groupdict().get(group)
    return None if value is None else int(value)


def match_names(definition: Definition, naming: str, names: Iterable[str]) -> MatchResult:
    """Full-match every name against the definition's ``naming`` ("hf"/"gguf") templates."""
    combined, patterns, leads = _combined(definition, naming)
    matches: list[Match] = []
    unknown: list[str] = []
    ignored: list[str] = []
    for name in names:
        found = combined.fullmatch(name) if name.startswith(leads) else None
        if found is not None and found.lastgroup is not None:
            index = int(found.lastgroup[1:])
            layer = _index(found, f"layer_{index}")
            expert = _index(found, f"expert_{index}")
            matches.append(Match(name, patterns[index], layer, expert))
        elif any(rule.fullmatch(name) for rule in definition.ignore):
            ignored.append(name)
        else:
            unknown.append(name)
    return MatchResult(tuple(matches), tuple(unknown), tuple(ignored))


def _layer_missing(
    definition: Definition, held: Set[tuple[Role, int | None]], experts: int | None
) -> list[str]:
    """Required roles one layer lacks, given the (role, expert) pairs it holds."""
    present = {role for role, _ in held}
    is_moe = Role.MOE_ROUTER in present or any(role.scope is Scope.EXPERT for role in present)
    required = definition.required
    needed = required.layer + (required.moe if is_moe else required.dense)
    missing: list[str] = []
    for role in needed:
        if role.scope is not Scope.EXPERT or experts is None:
            if role not in present:
                missing.append(role.role_name)
            continue
        checked = range(min(experts, MAX_CHECKED_EXPERTS))
        missing += [f"{role.role_name}[{e}]" for e in checked if (role, e) not in held]
    for group in required.one_of:
        if not any(role in present for role in group):
            missing.append(" or ".join(role.role_name for role in group))
    return missing


def missing_roles(
    definition: Definition,
    found: Set[RoleKey],
    layers: int | None,
    experts: int | None = None,
) -> Mapping[int | None, tuple[str, ...]]:
    """Required roles absent from ``found``, keyed by layer (``None`` for model-level roles).

    ``layers``/``experts`` are the counts the checkpoint declares; when unknown,
    the layers seen in ``found`` are checked and any one expert satisfies a role.
    """
    out: dict[int | None, tuple[str, ...]] = {}
    model = [r.role_name for r in definition.required.model if (r, None, None) not in found]
    if model:
        out[None] = tuple(model)
    by_layer: dict[int, set[tuple[Role, int | None]]] = {}
    for role, layer, expert in found:
        if layer is not None:
            by_layer.setdefault(layer, set()).add((role, expert))
    declared = range(min(layers, MAX_CHECKED_LAYERS)) if layers is not None else range(0)
    for layer in sorted(set(declared) | set(by_layer)):
        missing = _layer_missing(definition, by_layer.get(layer, set()), experts)
        if missing:
            out[layer] = tuple(missing)
    return out
