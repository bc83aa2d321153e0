"""Is B derived from A? ``compare(a, b)`` and the ``Comparison`` it returns."""

from forebear.compare.pipeline import Settings, compare
from forebear.compare.result import REPORTING_LOG10_P, Comparison

__all__ = ["REPORTING_LOG10_P", "Comparison", "Settings", "compare"]
