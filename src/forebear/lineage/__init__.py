"""Lineage: merges decomposed into their parents, and lineage trees over many models."""

from forebear.lineage.decompose import Decomposition, MergeFit, decompose

__all__ = ["Decomposition", "MergeFit", "decompose"]
