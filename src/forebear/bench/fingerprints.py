"""``forebear-fingerprint``: the same-position test between two fingerprints, as a bench method.

Each model is fingerprinted once (held in memory for the run; the time and
bytes of making it are counted on the first pair that needs it), then pairs
are compared without the weights (``compare.sketches``: the verdict, layer map
and ledger from sketches). Score: -log10 p; derived at p < 1e-6 like ``forebear``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from forebear.bench.methods import ForebearPValue, MethodResult, _short, coarse_verdict
from forebear.compare.sketches import compare_sketches
from forebear.errors import ForebearError
from forebear.fingerprint import Fingerprint, fingerprint
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
            "forebear fingerprints: same-position and content-sample matched tests on sketches "
            "in each model's canonical basis, without the weights (each model fingerprinted once)"
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
        found = compare_sketches(a, b)
        seconds = time.perf_counter() - start
        verdict = coarse_verdict(found)
        return MethodResult(self.score(found.log10_p), found.p_value, verdict, seconds,
                            read_a + read_b, verdict_class=found.verdict)  # fmt: skip
