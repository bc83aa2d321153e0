"""How bytes become tensors: one ``CheckpointReader`` per format, chosen by magic bytes.

``open_checkpoint`` opens one weights file; ``open_weights`` picks the weights of
a model folder (safetensors first, then PyTorch, then GGUF). The extension of a
file is never trusted: the first bytes decide.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from forebear.errors import UnsupportedFormatError
from forebear.formats.base import BaseReader, CheckpointReader, Span, TensorInfo
from forebear.formats.memory import MemoryReader
from forebear.sources.base import ByteSource, Location

__all__ = [
    "BaseReader",
    "CheckpointReader",
    "MemoryReader",
    "Span",
    "TensorInfo",
    "open_checkpoint",
    "open_weights",
    "sniff_format",
]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def sniff_format(source: ByteSource) -> str:
    """``safetensors``, ``pytorch`` (zip or legacy pickle) or ``gguf``, from the first bytes."""
    head = source.read(0, min(9, source.size))
    if head[:4] in (b"GGUF", b"FUGG"):  # FUGG: a big-endian GGUF, refused by its reader
        return "gguf"
    if head[:4] == b"PK\x03\x04":
        return "pytorch"
    # safetensors before pickle: a header length's low byte may well be 0x80.
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 0:
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol opcode: a legacy torch.save file
        return "pytorch"
    raise UnsupportedFormatError(
        "not a recognised checkpoint (expected safetensors, a PyTorch zip or GGUF)",
        path=source.name,
        hint="convert it to safetensors, or check that the download is complete",
    )


def open_checkpoint(
    source: ByteSource, *, quantization_config: Mapping[str, Any] | None = None
) -> CheckpointReader:
    """A reader for one weights file; takes ownership of ``source``."""
    try:
        kind = sniff_format(source)
    except BaseException:
        source.close()
        raise
    if kind == "gguf":
        from forebear.formats.gguf import GGUFReader

        return GGUFReader(source)
    if kind == "pytorch":
        from forebear.formats.pytorch import PyTorchReader

        return PyTorchReader(source)
    from forebear.formats.quantized import dequantizing
    from forebear.formats.safetensors import SafetensorsReader

    return dequantizing(SafetensorsReader(source), quantization_config)


def open_weights(
    location: Location, *, quantization_config: Mapping[str, Any] | None = None
) -> CheckpointReader:
    """The weights of a model folder: safetensors if any, else PyTorch, else a single GGUF."""
    files = location.list_files()
    if any(f.endswith(".safetensors") or f == "model.safetensors.index.json" for f in files):
        from forebear.formats.quantized import dequantizing
        from forebear.formats.safetensors import open_safetensors_folder

        return dequantizing(open_safetensors_folder(location), quantization_config)
    if any(f.endswith((".bin", ".pt", ".pth")) for f in files):
        from forebear.formats.pytorch import open_pytorch_folder

        return open_pytorch_folder(location)
    ggufs = [f for f in files if f.endswith(".gguf")]
    if len(ggufs) == 1:
        return open_checkpoint(location.open(ggufs[0]))
    if len(ggufs) > 1:
        raise UnsupportedFormatError(
            f"holds {len(ggufs)} GGUF files ({', '.join(ggufs[:4])})",
            path=location.name,
            hint="name one GGUF file instead of the folder",
        )
    raise UnsupportedFormatError(
        "holds no weights (" + ", ".join(f"*{s}" for s in _WEIGHT_SUFFIXES) + ")",
        path=location.name,
        hint="point forebear at a model folder or a weights file",
    )
