"""Symmetries and shape changes solved before any comparison; every map returned as data."""

from forebear.align.layers import LayerMap, align_layers
from forebear.align.residual import ResidualAlignment, align_residual
from forebear.align.units import strip_shared, unit_cosines

__all__ = [
    "LayerMap",
    "ResidualAlignment",
    "align_layers",
    "align_residual",
    "strip_shared",
    "unit_cosines",
]
