"""What ``forebear inspect`` reports about one model, as plain JSON-ready data.

Reads headers, config and tokenizer files only: no tensor data is touched, so a
summary of a 15 GB checkpoint costs what its headers cost.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from forebear.architectures.roles import Role
from forebear.model import Model

__all__ = ["summarize"]

_MAX_LISTED = 50


def _role_order(name: str) -> int:
    try:
        return _ROLE_ORDER[Role.from_name(name)]
    except KeyError:
        return len(_ROLE_ORDER)


_ROLE_ORDER = {role: i for i, role in enumerate(Role)}


def summarize(model: Model) -> dict[str, Any]:
    reader = model.reader
    tensors = reader.tensors()
    resolved = model.resolved
    dims = resolved.dims
    coverage = resolved.coverage
    vocabulary = model.vocabulary
    dtype_params: Counter[str] = Counter()
    for info in tensors.values():
        dtype_params[info.dtype] += info.numel
    unknown = list(coverage.unknown)
    missing = [
        f"{role}" if layer is None else f"layer {layer}: {role}"
        for layer, roles in sorted(
            coverage.missing.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)
        )
        for role in roles
    ]
    return {
        "model": model.name,
        "format": reader.format,
        "family": resolved.family,
        "files": [file.where for file in model.weight_files],
        "bytes_on_disk": model.bytes_on_disk,
        "parameters": sum(info.numel for info in tensors.values()),
        "tensors": len(tensors),
        "dtypes": dict(dtype_params.most_common()),
        "dimensions": dataclasses.asdict(dims),
        "tied_head": resolved.tied_head,
        "vocabulary": None
        if vocabulary is None
        else {"size": len(vocabulary), "kind": vocabulary.kind, "source": vocabulary.source},
        "roles": {
            "found": {
                name: coverage.found[name] for name in sorted(coverage.found, key=_role_order)
            },
            "missing": missing[:_MAX_LISTED],
            "missing_count": len(missing),
            "unknown": unknown[:_MAX_LISTED],
            "unknown_count": len(unknown),
            "ignored_count": len(coverage.ignored),
            "mismatches": list(coverage.mismatches)[:_MAX_LISTED],
            "duplicates": list(coverage.duplicates)[:_MAX_LISTED],
        },
    }
