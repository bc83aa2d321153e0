"""Statistical tests of weight evidence: frozen results, p-values carried as log10."""

from forebear.stats.tests import (
    NullKind,
    TestResult,
    assignment_test,
    bonferroni,
    fisher,
    log10_normal_sf,
    order_statistic,
)

__all__ = [
    "NullKind",
    "TestResult",
    "assignment_test",
    "bonferroni",
    "fisher",
    "log10_normal_sf",
    "order_statistic",
]
