"""Statistical tests: frozen results, p-values carried as log10, and their combinations
(Fisher, Bonferroni, Holm, order statistics) shared by the weight and behaviour tiers."""

from forebear.stats.tests import (
    NullKind,
    TestResult,
    assignment_test,
    bonferroni,
    fisher,
    holm,
    holm_adjusted,
    log10_normal_sf,
    order_statistic,
)

__all__ = [
    "NullKind",
    "TestResult",
    "assignment_test",
    "bonferroni",
    "fisher",
    "holm",
    "holm_adjusted",
    "log10_normal_sf",
    "order_statistic",
]
