"""Load and validate architecture definition files (``definitions/*.toml``).

Owns the schema: which keys a definition may hold, what their values mean, and
the compiled ``Definition`` the rest of the package uses. It does not decide
which definition fits a checkpoint (``detect.py``) or read tensors
(``resolve.py``). Unknown keys are errors, so a typo never silently drops a
tensor pattern. The file format is documented in docs/adding-an-architecture.md.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forebear.architectures.roles import Axis, Role, Scope
from forebear.architectures.templates import compile_template, placeholder_problem
from forebear.errors import DefinitionError

__all__ = [
    "DEFINITIONS_DIR",
    "DIM_FIELDS",
    "Definition",
    "DimSource",
    "Pattern",
    "Requirements",
    "definitions",
    "load_definition",
]

DEFINITIONS_DIR = Path(__file__).parent / "definitions"
HINT = "fix the key named here; the format is in docs/adding-an-architecture.md"

# The dimensions a definition may map to config keys (the fields of ``Dims``).
DIM_FIELDS = (
    "hidden",
    "intermediate",
    "layers",
    "heads",
    "kv_heads",
    "head_dim",
    "v_head_dim",
    "vocab",
    "positions",
    "token_types",
    "experts",
    "experts_per_token",
    "shared_experts",
    "moe_intermediate",
    "shared_intermediate",
    "q_lora_rank",
    "kv_lora_rank",
    "rope_head_dim",
)

_TOP_KEYS = {
    "family",
    "description",
    "hf_model_types",
    "hf_architectures",
    "gguf_architectures",
    "hf_config_section",
    "base_prefixes",
    "tie_word_embeddings",
    "gguf_qk_permuted",
    "gguf_norm_offset",
    "norm_scale_offset",
    "priority",
    "dims",
    "required",
    "hf",
    "hf_fused",
    "gguf",
    "gguf_fused",
    "ignore",
}
_PATTERN_KEYS = {"name", "transposed", "stacked"}
_FUSED_KEYS = {"name", "parts", "axis", "groups", "transposed", "stacked"}
_REQUIRED_KEYS = {"model", "layer", "dense", "moe", "one_of"}


@dataclass(frozen=True)
class DimSource:
    """One way to read a dimension from config: a key, or the sum/product of keys."""

    keys: tuple[str, ...]
    combine: str  # "key", "sum" or "product"


@dataclass(frozen=True)
class Pattern:
    """A tensor-name template and how the tensor it names holds its role(s).

    ``parts`` has one role for a plain tensor and several for a fused one, cut
    along canonical ``axis`` (0 = rows) in that order; with ``groups`` the cut
    repeats inside each of that many groups (GPT-NeoX interleaves q, k, v per
    head). ``stacked`` means axis 0 of the stored tensor indexes experts.
    """

    template: str
    regex: re.Pattern[str]
    naming: str  # "hf" or "gguf"
    parts: tuple[Role, ...]
    transposed: bool = False
    stacked: bool = False
    axis: int = 0
    groups: Axis | None = None

    @property
    def scope(self) -> Scope:
        return self.parts[0].scope

    @property
    def fused(self) -> bool:
        return len(self.parts) > 1 or self.groups is not None


@dataclass(frozen=True)
class Requirements:
    """Roles a complete checkpoint must hold.

    ``layer`` roles every layer needs; ``dense`` roles a layer without experts
    needs; ``moe`` roles a layer with experts needs (expert-scoped ones for
    every expert); ``one_of`` groups of which each layer needs at least one.
    """

    model: tuple[Role, ...] = ()
    layer: tuple[Role, ...] = ()
    dense: tuple[Role, ...] = ()
    moe: tuple[Role, ...] = ()
    one_of: tuple[tuple[Role, ...], ...] = ()


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: each is loaded once
class Definition:
    family: str
    path: Path
    description: str
    hf_model_types: tuple[str, ...]
    hf_architectures: tuple[str, ...]
    gguf_architectures: tuple[str, ...]
    hf_config_section: str | None
    base_prefixes: tuple[str, ...]  # what {base} may stand for in HF templates
    tie_word_embeddings: bool  # what a config that omits the key means
    gguf_qk_permuted: bool  # informational: llama.cpp reorders q/k rows for its rope
    gguf_norm_offset: float  # llama.cpp stores gemma norm scales as offset + weight; undone on read
    norm_scale_offset: float  # the effective norm scale is offset + stored weight (gemma: 1)
    priority: int  # breaks ties between definitions with identical tensor names
    dims: Mapping[str, Mapping[str, tuple[DimSource, ...]]]  # naming -> field -> sources
    required: Requirements
    patterns: tuple[Pattern, ...]
    ignore: tuple[re.Pattern[str], ...]

    def patterns_for(self, naming: str) -> tuple[Pattern, ...]:
        return tuple(p for p in self.patterns if p.naming == naming)


class _Context:
    """Carries the file path so every error names it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> DefinitionError:
        return DefinitionError(f"key {key!r}: {problem}", path=self.path, hint=HINT)

    def check_keys(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(f"{where}{key}", f"unknown key (allowed: {known})")

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of strings")
        return tuple(value)

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def role(self, name: Any, key: str) -> Role:
        try:
            return Role.from_name(name)
        except (KeyError, TypeError):
            pass
        raise self.error(key, f"{name!r} is not a role (see forebear.architectures.Role)")


def _compile(template: str, prefixes: tuple[str, ...], ctx: _Context, key: str) -> re.Pattern[str]:
    compiled = compile_template(template, prefixes)
    if isinstance(compiled, str):
        raise ctx.error(key, compiled)
    return compiled


def _pattern(
    raw: Any,
    parts: tuple[Role, ...],
    naming: str,
    prefixes: tuple[str, ...],
    ctx: _Context,
    key: str,
) -> Pattern:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ctx.error(key, "must be a name, a {name = ...} table, or a list of them")
    ctx.check_keys(raw, _PATTERN_KEYS, f"{key}.")
    stacked = ctx.flag(raw.get("stacked", False), f"{key}.stacked")
    problem = placeholder_problem(raw["name"], parts[0].scope, stacked)
    if problem:
        raise ctx.error(key, problem)
    return Pattern(
        template=raw["name"],
        regex=_compile(raw["name"], prefixes, ctx, key),
        naming=naming,
        parts=parts,
        transposed=ctx.flag(raw.get("transposed", False), f"{key}.transposed"),
        stacked=stacked,
    )


def _role_patterns(
    table: Any, naming: str, prefixes: tuple[str, ...], ctx: _Context
) -> list[Pattern]:
    if not isinstance(table, dict):
        raise ctx.error(naming, "must be a table of role = name(s)")
    patterns = []
    for role_name, raw in table.items():
        key = f"{naming}.{role_name}"
        role = ctx.role(role_name, key)
        for item in raw if isinstance(raw, list) else [raw]:
            patterns.append(_pattern(item, (role,), naming, prefixes, ctx, key))
    return patterns


def _fused_patterns(
    table: Any, naming: str, prefixes: tuple[str, ...], ctx: _Context
) -> list[Pattern]:
    if not isinstance(table, list):
        raise ctx.error(f"{naming}_fused", "must be an array of tables ([[...]])")
    patterns = []
    for index, raw in enumerate(table):
        key = f"{naming}_fused[{index}]"
        if not isinstance(raw, dict):
            raise ctx.error(key, "must be a table")
        ctx.check_keys(raw, _FUSED_KEYS, f"{key}.")
        parts = tuple(
            ctx.role(p, f"{key}.parts") for p in ctx.strings(raw.get("parts"), f"{key}.parts")
        )
        if len(parts) < 2 and "groups" not in raw:
            raise ctx.error(f"{key}.parts", "a fused tensor needs at least two parts")
        if len({p.scope for p in parts}) != 1:
            raise ctx.error(f"{key}.parts", "parts must share one scope")
        axis = {"rows": 0, "cols": 1}.get(raw.get("axis", "rows"))
        if axis is None or any(axis >= len(p.axes) for p in parts):
            raise ctx.error(f"{key}.axis", "must be 'rows' or 'cols' and exist in every part")
        groups = raw.get("groups")
        if groups is not None and groups not in {a.value for a in Axis}:
            raise ctx.error(f"{key}.groups", f"{groups!r} is not an axis name")
        plain = _pattern(
            {k: v for k, v in raw.items() if k in _PATTERN_KEYS}, parts, naming, prefixes, ctx, key
        )
        patterns.append(
            Pattern(
                template=plain.template,
                regex=plain.regex,
                naming=naming,
                parts=parts,
                transposed=plain.transposed,
                stacked=plain.stacked,
                axis=axis,
                groups=None if groups is None else Axis(groups),
            )
        )
    return patterns


def _dim_sources(table: Any, ctx: _Context, key: str) -> dict[str, tuple[DimSource, ...]]:
    if not isinstance(table, dict):
        raise ctx.error(key, "must be a table of dimension = [config keys]")
    out: dict[str, tuple[DimSource, ...]] = {}
    for dim, raw in table.items():
        if dim not in DIM_FIELDS:
            raise ctx.error(f"{key}.{dim}", f"unknown dimension (allowed: {', '.join(DIM_FIELDS)})")
        sources = []
        for item in raw if isinstance(raw, list) else [raw]:
            if isinstance(item, str):
                sources.append(DimSource((item,), "key"))
            elif (
                isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("sum", "product")
            ):
                combine, keys = next(iter(item.items()))
                sources.append(DimSource(ctx.strings(keys, f"{key}.{dim}.{combine}"), combine))
            else:
                raise ctx.error(
                    f"{key}.{dim}", "each source is a key, {sum = [...]} or {product = [...]}"
                )
        out[dim] = tuple(sources)
    return out


def _requirements(table: Any, ctx: _Context) -> Requirements:
    if not isinstance(table, dict):
        raise ctx.error("required", "must be a table")
    ctx.check_keys(table, _REQUIRED_KEYS, "required.")

    def roles(name: str) -> tuple[Role, ...]:
        return tuple(
            ctx.role(r, f"required.{name}")
            for r in ctx.strings(table.get(name, []), f"required.{name}")
        )

    groups = table.get("one_of", [])
    if not isinstance(groups, list):
        raise ctx.error("required.one_of", "must be a list of lists of roles")
    one_of = tuple(
        tuple(ctx.role(r, "required.one_of") for r in ctx.strings(g, "required.one_of"))
        for g in groups
    )
    return Requirements(roles("model"), roles("layer"), roles("dense"), roles("moe"), one_of)


def _check_unique(patterns: list[Pattern], ctx: _Context) -> None:
    seen: dict[tuple[str, str], tuple[Role, ...]] = {}
    for pattern in patterns:
        key = (pattern.naming, pattern.template)
        if key in seen:
            raise ctx.error(
                f"{pattern.naming}.{pattern.parts[0].role_name}",
                f"template {pattern.template!r} is already claimed by {seen[key][0].role_name}",
            )
        seen[key] = pattern.parts


def _text(raw: Mapping[str, Any], key: str, ctx: _Context, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ctx.error(key, "must be a string")
    return value


def load_definition(path: Path) -> Definition:
    """Parse and validate one definition file; ``DefinitionError`` names the file and key."""
    ctx = _Context(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DefinitionError(f"cannot be read as TOML: {exc}", path=path, hint=HINT) from None
    ctx.check_keys(raw, _TOP_KEYS, "")
    prefixes = ctx.strings(raw.get("base_prefixes", [""]), "base_prefixes")
    patterns = _role_patterns(raw.get("hf", {}), "hf", prefixes, ctx)
    patterns += _fused_patterns(raw.get("hf_fused", []), "hf", prefixes, ctx)
    patterns += _role_patterns(raw.get("gguf", {}), "gguf", (), ctx)
    patterns += _fused_patterns(raw.get("gguf_fused", []), "gguf", (), ctx)
    _check_unique(patterns, ctx)
    dims = raw.get("dims", {})
    if not isinstance(dims, dict):
        raise ctx.error("dims", "must be a table with hf and gguf sub-tables")
    ctx.check_keys(dims, {"hf", "gguf"}, "dims.")
    section = raw.get("hf_config_section")
    offset = raw.get("gguf_norm_offset", 0.0)
    scale_offset = raw.get("norm_scale_offset", 0.0)
    priority = raw.get("priority", 0)
    for key, value in (("gguf_norm_offset", offset), ("norm_scale_offset", scale_offset)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ctx.error(key, "must be a number")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ctx.error("priority", "must be an integer")
    return Definition(
        family=_text(raw, "family", ctx),
        path=path,
        description=_text(raw, "description", ctx, ""),
        hf_model_types=ctx.strings(raw.get("hf_model_types", []), "hf_model_types"),
        hf_architectures=ctx.strings(raw.get("hf_architectures", []), "hf_architectures"),
        gguf_architectures=ctx.strings(raw.get("gguf_architectures", []), "gguf_architectures"),
        hf_config_section=None if section is None else _text(raw, "hf_config_section", ctx),
        base_prefixes=prefixes,
        tie_word_embeddings=ctx.flag(raw.get("tie_word_embeddings", False), "tie_word_embeddings"),
        gguf_qk_permuted=ctx.flag(raw.get("gguf_qk_permuted", False), "gguf_qk_permuted"),
        gguf_norm_offset=float(offset),
        norm_scale_offset=float(scale_offset),
        priority=priority,
        dims={
            naming: _dim_sources(dims.get(naming, {}), ctx, f"dims.{naming}")
            for naming in ("hf", "gguf")
        },
        required=_requirements(raw.get("required", {}), ctx),
        patterns=tuple(patterns),
        ignore=tuple(
            _compile(t, prefixes, ctx, "ignore")
            for t in ctx.strings(raw.get("ignore", []), "ignore")
        ),
    )


@functools.cache
def definitions(directory: Path = DEFINITIONS_DIR) -> tuple[Definition, ...]:
    """Every definition in ``directory``, loaded once; family names must be unique."""
    loaded = tuple(load_definition(p) for p in sorted(directory.glob("*.toml")))
    seen: dict[str, Path] = {}
    for definition in loaded:
        if definition.family in seen:
            raise DefinitionError(
                f"key 'family': {definition.family!r} is also defined in {seen[definition.family]}",
                path=definition.path,
                hint=HINT,
            )
        seen[definition.family] = definition.path
    return loaded
