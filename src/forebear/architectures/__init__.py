"""Architectures as data: roles, definitions, detection and resolution of tensors into roles.

Owns what forebear knows about model families. The knowledge itself lives in
``definitions/*.toml`` (one file per family, validated by ``schema``); the code
here only applies it. Tokenizer vocabularies are ``vocabulary`` (separate).
"""

from forebear.architectures.detect import detect
from forebear.architectures.dims import Dims
from forebear.architectures.resolve import Coverage, Cut, Entry, ResolvedModel, resolve
from forebear.architectures.roles import Axis, Role, Scope
from forebear.architectures.schema import Definition, definitions, load_definition

__all__ = [
    "Axis",
    "Coverage",
    "Cut",
    "Definition",
    "Dims",
    "Entry",
    "ResolvedModel",
    "Role",
    "Scope",
    "definitions",
    "detect",
    "load_definition",
    "resolve",
]
