"""Tensor-name templates: ``{layer}``, ``{expert}``, ``{base}`` and ``{any}`` placeholders.

Owns how a template written in a definition becomes a regex that must match a
whole tensor name (``{layer}``/``{expert}`` capture digits, ``{base}`` is one of
the definition's declared prefixes, ``{any}`` — ignore rules only — is any
text), and which placeholders a role's scope demands. Problems come back as
messages; ``schema`` turns them into ``DefinitionError`` naming file and key.
"""

from __future__ import annotations

import re

from forebear.architectures.roles import Scope

__all__ = ["PLACEHOLDER", "compile_template", "placeholder_problem"]

PLACEHOLDER = re.compile(r"\{([a-z]+)\}")
_KNOWN = {"layer", "expert", "base", "any"}


def compile_template(template: str, prefixes: tuple[str, ...]) -> re.Pattern[str] | str:
    """The compiled template (use with ``fullmatch``), or a message saying why it cannot be."""
    pieces: list[str] = []
    last = 0
    for match in PLACEHOLDER.finditer(template):
        pieces.append(re.escape(template[last : match.start()]))
        kind = match.group(1)
        if kind in ("layer", "expert"):
            # Bounded so a hostile name cannot hand int() thousands of digits.
            pieces.append(rf"(?P<{kind}>\d{{1,9}})")
        elif kind == "base":
            # Longest first, so "transformer." is tried before "".
            alternatives = sorted(prefixes, key=len, reverse=True)
            pieces.append("(?:" + "|".join(re.escape(p) for p in alternatives) + ")")
        elif kind == "any":
            pieces.append(".+")
        else:
            return f"unknown placeholder {{{kind}}} in {template!r}"
        last = match.end()
    pieces.append(re.escape(template[last:]))
    try:
        return re.compile("".join(pieces))
    except re.error as exc:  # a placeholder used twice
        return f"template {template!r} does not compile: {exc}"


def placeholder_problem(template: str, scope: Scope, stacked: bool) -> str | None:
    """Why ``template`` does not fit a role of ``scope``, or ``None`` when it does.

    A layer role needs ``{layer}``; an expert role needs ``{layer}`` and
    ``{expert}``, except a stacked tensor whose axis 0 indexes the experts.
    """
    found = set(PLACEHOLDER.findall(template))
    strange = found - _KNOWN
    if strange:
        return f"unknown placeholder {{{sorted(strange)[0]}}} in {template!r}"
    if stacked and scope is not Scope.EXPERT:
        return "stacked = true is only for expert roles"
    if "any" in found:
        return "{any} is only allowed in ignore patterns"
    need = {
        Scope.MODEL: set(),
        Scope.LAYER: {"layer"},
        Scope.EXPERT: {"layer"} if stacked else {"layer", "expert"},
    }[scope]
    if found - {"base"} != need:
        want = ", ".join(f"{{{n}}}" for n in sorted(need)) or "no {layer}/{expert}"
        return f"template {template!r} for a {scope.value}-scoped role needs {want}"
    return None
