"""What ``forebear inspect`` reports about one model, as plain JSON-ready data.

Reads headers, config and tokenizer files only: no tensor data is touched, so a
summary of a 15 GB checkpoint costs what its headers cost.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from forebear.model import Model

__all__ = ["summarize"]

_MAX_LISTED = 50


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
    missing = [str(item) for item in coverage.missing]
    return {
        "model": model.name,
        "format": reader.format,
        "family": resolved.family,
        "files": [str(path) for path in model.weight_files],
        "bytes_on_disk": model.bytes_on_disk,
        "parameters": sum(info.numel for info in tensors.values()),
        "tensors": len(tensors),
        "dtypes": dict(dtype_params.most_common()),
        "dimensions": dims.as_dict(),
        "tied_head": resolved.tied_head,
        "vocabulary": None
        if vocabulary is None
        else {"size": len(vocabulary), "kind": vocabulary.kind, "source": vocabulary.source},
        "roles": {
            "found": dict(coverage.found),
            "missing": missing[:_MAX_LISTED],
            "missing_count": len(missing),
            "unknown": unknown[:_MAX_LISTED],
            "unknown_count": len(unknown),
        },
    }
