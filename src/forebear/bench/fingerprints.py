"""``forebear-fingerprint``: the same-position test between two fingerprints, as a bench method.

Each model is fingerprinted once (held in memory for the run; the time and
bytes of making it are counted on the first pair that needs it), then pairs
are compared without the weights. Score: -log10 p; derived at p < 1e-6 like
``forebear``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from forebear.bench.methods import ForebearPValue, MethodResult, Verdict, _short
from forebear.compare.result import INCONCLUSIVE_LOG10_P, REPORTING_LOG10_P
from forebear.errors import ForebearError
from forebear.fingerprint import Fingerprint, compare_fingerprints, fingerprint
from forebear.model import open_model

__all__ = ["FingerprintMethod"]


@dataclass
class FingerprintMethod(ForebearPValue):
    dims: int = 256
    units: int = 64
    _made: dict[Path, Fingerprint] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return "forebear-fingerprint"

    @property
    def description(self) -> str:
        return (
            "forebear fingerprints: same-position test on sketches in each model's canonical "
            "basis, without the weights (each model fingerprinted once)"
        )

    def _fingerprint(self, path: Path) -> tuple[Fingerprint, int]:
        if path in self._made:
            return self._made[path], 0
        with open_model(path) as model:
            found = fingerprint(model, dims=self.dims, units=self.units)
        self._made[path] = found
        return found, int(found.meta["bytes_read"])

    def compare(self, path_a: Path, path_b: Path) -> MethodResult:
        start = time.perf_counter()
        try:
            (a, read_a), (b, read_b) = self._fingerprint(path_a), self._fingerprint(path_b)
        except ForebearError as error:
            return MethodResult(
                None, None, "unavailable", time.perf_counter() - start, None, _short(str(error))
            )
        evidence = compare_fingerprints(a, b)
        seconds = time.perf_counter() - start
        if evidence.reason is not None:
            return MethodResult(0.0, 1.0, "inconclusive", seconds, read_a + read_b,
                                _short(evidence.reason))  # fmt: skip
        verdict: Verdict = (
            "derived" if evidence.log10_p <= REPORTING_LOG10_P
            else "inconclusive" if evidence.log10_p <= INCONCLUSIVE_LOG10_P
            else "independent"
        )  # fmt: skip
        return MethodResult(self.score(evidence.log10_p), 10.0**evidence.log10_p, verdict,
                            seconds, read_a + read_b)  # fmt: skip
