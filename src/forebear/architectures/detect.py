"""Decide which architecture definition fits a checkpoint.

Owns the order of evidence: config.json ``model_type``, then its
``architectures``, then GGUF ``general.architecture``, then tensor names (the
definition whose templates match the most names and whose required roles are
all present). Where several definitions claim the same label (llama.cpp writes
Mistral as "llama"), the tensor names choose among them. It does not read
tensor data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from forebear.architectures.matching import match_names, missing_roles
from forebear.architectures.schema import Definition, definitions
from forebear.errors import UnknownArchitectureError

__all__ = ["detect", "name_evidence"]

_GUIDE = "docs/adding-an-architecture.md"
_SHOWN_NAMES = 8


def name_evidence(definition: Definition, names: Sequence[str]) -> tuple[int, int]:
    """(names the definition explains, templates it needed for that naming).

    The count is -1 when the definition's required roles are not all present.
    """
    best = (-1, 0)
    for naming in ("hf", "gguf"):
        result = match_names(definition, naming, names)
        if not result.matches:
            continue
        # A fused tensor supplies every part it holds.
        found = {(part, m.layer, m.expert) for m in result.matches for part in m.pattern.parts}
        if not missing_roles(definition, found, None) and len(result.matches) > best[0]:
            best = (len(result.matches), len(definition.patterns_for(naming)))
    return best


def _rank(candidates: Iterable[Definition], names: Sequence[str]) -> list[Definition]:
    """Candidates that explain the names, best first.

    Ties go to the definition with fewer templates (the tighter fit: plain qwen2
    rather than qwen2_moe for a dense checkpoint), then to the higher priority.
    """
    scored = [(name_evidence(d, names), d) for d in candidates]
    fitting = [(score, d) for score, d in scored if score[0] > 0]
    fitting.sort(key=lambda item: (-item[0][0], item[0][1], -item[1].priority, item[1].family))
    return [d for _, d in fitting]


def _choose(candidates: list[Definition], names: Sequence[str]) -> Definition | None:
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    ranked = _rank(candidates, names)
    if ranked:
        return ranked[0]
    return max(candidates, key=lambda d: (d.priority, d.family))


def _label_candidates(
    known: tuple[Definition, ...],
    config: Mapping[str, Any] | None,
    gguf_metadata: Mapping[str, Any] | None,
) -> list[Definition]:
    if config:
        model_type = config.get("model_type")
        by_type = [d for d in known if model_type in d.hf_model_types]
        if by_type:
            return by_type
        archs = config.get("architectures")
        if isinstance(archs, list):
            by_arch = [d for d in known if any(a in d.hf_architectures for a in archs)]
            if by_arch:
                return by_arch
    if gguf_metadata:
        arch = gguf_metadata.get("general.architecture")
        return [d for d in known if arch in d.gguf_architectures]
    return []


def _unknown(
    names: Sequence[str],
    config: Mapping[str, Any] | None,
    gguf_metadata: Mapping[str, Any] | None,
) -> UnknownArchitectureError:
    seen = []
    if config:
        seen.append(f"model_type={config.get('model_type')!r}")
        seen.append(f"architectures={config.get('architectures')!r}")
    if gguf_metadata:
        seen.append(f"general.architecture={gguf_metadata.get('general.architecture')!r}")
    shown = ", ".join(list(names)[:_SHOWN_NAMES]) or "none"
    more = f" (+{len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else ""
    found = "; ".join(seen) if seen else "no config.json or GGUF metadata"
    return UnknownArchitectureError(
        f"no architecture definition fits: {found}; tensors: {shown}{more}",
        hint=f"add a definition file as described in {_GUIDE}",
    )


def detect(
    tensor_names: Iterable[str],
    config: Mapping[str, Any] | None = None,
    gguf_metadata: Mapping[str, Any] | None = None,
) -> Definition:
    """The definition that fits; ``UnknownArchitectureError`` listing what was seen otherwise.

    An unrecognised ``model_type`` falls through to tensor-name evidence, so a
    renamed fine-tune of a known layout still resolves.
    """
    names = list(tensor_names)
    known = definitions()
    chosen = _choose(_label_candidates(known, config, gguf_metadata), names)
    if chosen is None:
        ranked = _rank(known, names)
        chosen = ranked[0] if ranked else None
    if chosen is None:
        raise _unknown(names, config, gguf_metadata)
    return chosen
