"""Synthetic checkpoints for the benchmarks: a bf16 safetensors header for given shapes."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np


def bf16_header(shapes: dict[str, tuple[int, ...]]) -> tuple[bytes, dict[str, int]]:
    """The safetensors header (length prefix included) of ``shapes`` stored as BF16 in
    order, and each tensor's offset in the data section."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offsets: dict[str, int] = {}
    offset = 0
    for name, shape in shapes.items():
        length = int(np.prod(shape)) * 2
        header[name] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + length],
        }
        offsets[name] = offset
        offset += length
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob, offsets
