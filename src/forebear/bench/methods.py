"""Provenance methods as the benchmark sees them: two model paths in, one ``MethodResult`` out.

A ``Method`` has a ``name``, a ``kind`` (``"p_value"`` methods report a p-value
and score ``-log10 p``; ``"score"`` methods report a bare score), its own
reporting ``threshold`` on the score, and ``compare(path_a, path_b)``. Scores
always mean "higher = more evidence of derivation"; a pair is called derived
when ``score >= threshold``.

Adapters here:

- ``CosineBaseline``: a deliberately trivial baseline (mean |cosine| of
  same-role weight matrices, no symmetry alignment). It is **not** forebear's
  test; it is the floor any real method must beat.
- ``ExternalCommand``: any other tool's CLI, run once per pair, its JSON output
  parsed. A tool that is not installed is reported ``unavailable`` for every
  pair; nothing it does can crash the benchmark.

``METHODS`` maps registry names to factories; forebear's own comparison joins
it when ``forebear compare`` exists. This module owns the adapters; the
metrics live in ``metrics`` and the run loop in ``run``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload, runtime_checkable

import numpy as np

from forebear.architectures.resolve import entry_shape
from forebear.errors import ForebearError
from forebear.formats.base import Array
from forebear.model import Model, open_model

if TYPE_CHECKING:
    from forebear.compare.result import Comparison

__all__ = [
    "METHODS",
    "CosineBaseline",
    "ExternalCommand",
    "ForebearCompare",
    "ForebearPValue",
    "Kind",
    "Method",
    "MethodResult",
    "Verdict",
    "modeldna",
]

Kind = Literal["p_value", "score"]
Verdict = Literal["derived", "independent", "inconclusive", "unavailable"]
VERDICTS: tuple[Verdict, ...] = ("derived", "independent", "inconclusive", "unavailable")
# Elements per float64 chunk when accumulating dot products of large tensors.
_CHUNK = 1 << 20
_MAX_MESSAGE = 300


@dataclass(frozen=True)
class MethodResult:
    """One method's answer on one pair.

    ``score``: higher = more evidence of derivation (p-value methods: -log10 p,
    ``inf`` for p = 0); None when the method gave no score. ``verdict``:
    ``inconclusive`` = it ran but could not decide; ``unavailable`` = it did not
    run or failed (``error`` says why). ``bytes_read``: weight bytes the method
    read, None when unknown (external tools). ``verdict_class``: the tool's own,
    finer verdict (forebear's "derived: light fine-tune", ...) when it has one.
    """

    score: float | None
    p_value: float | None
    verdict: Verdict
    seconds: float
    bytes_read: int | None
    error: str | None = None
    verdict_class: str | None = None


@runtime_checkable
class Method(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Kind: ...

    @property
    def threshold(self) -> float:
        """Scores at or above this are the method's own "derived" call."""
        ...

    @property
    def description(self) -> str: ...

    def compare(self, path_a: Path, path_b: Path) -> MethodResult: ...


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


# ---------------------------------------------------------------- cosine baseline


def _abs_cosine(x: Array, y: Array) -> float | None:
    """|cos| of two flattened arrays in float64 chunks; None if either is all zeros."""
    fx, fy = x.reshape(-1), y.reshape(-1)
    dot = nx = ny = 0.0
    for start in range(0, fx.size, _CHUNK):
        cx = fx[start : start + _CHUNK].astype(np.float64)
        cy = fy[start : start + _CHUNK].astype(np.float64)
        dot += float(cx @ cy)
        nx += float(cx @ cx)
        ny += float(cy @ cy)
    if nx == 0.0 or ny == 0.0 or not math.isfinite(dot * nx * ny):
        return None
    return abs(dot) / math.sqrt(nx * ny)


@dataclass(frozen=True)
class CosineBaseline:
    """Baseline: mean |cosine| of same-role tensors, no symmetry alignment, not forebear's test.

    Every role instance (role, layer, expert) present in both models with equal
    shape and at least two dimensions is read from both and compared as one
    flat vector. 1-D tensors (norm gains, biases) are left out: unrelated
    models of one architecture share them (all-ones at initialisation, similar
    after training), which is the per-matrix-statistic false positive the
    design warns about. A permuted or rotated copy defeats this baseline; that
    is the point of having it.
    """

    threshold: float = 0.5
    name: str = "baseline-cosine"
    description: str = (
        "baseline: mean |cosine| of same-role tensors, no symmetry alignment, not forebear's test"
    )

    @property
    def kind(self) -> Kind:
        return "score"

    def compare(self, path_a: Path, path_b: Path) -> MethodResult:
        start = time.perf_counter()
        try:
            with open_model(path_a) as model_a, open_model(path_b) as model_b:
                cosines, bytes_read = self._cosines(model_a, model_b)
        except ForebearError as error:
            return MethodResult(
                None, None, "unavailable", time.perf_counter() - start, None, _short(str(error))
            )
        seconds = time.perf_counter() - start
        if not cosines:
            return MethodResult(None, None, "inconclusive", seconds, bytes_read)
        score = float(np.mean(cosines))
        verdict: Verdict = "derived" if score >= self.threshold else "independent"
        return MethodResult(score, None, verdict, seconds, bytes_read)

    @staticmethod
    def _cosines(model_a: Model, model_b: Model) -> tuple[list[float], int]:
        resolved_a, resolved_b = model_a.resolved, model_b.resolved
        infos_a, infos_b = model_a.reader.tensors(), model_b.reader.tensors()
        entries_b = {entry.key: entry for entry in resolved_b.entries}
        cosines: list[float] = []
        bytes_read = 0
        for entry_a in resolved_a.entries:
            entry_b = entries_b.get(entry_a.key)
            if entry_b is None:
                continue
            info_a, info_b = infos_a[entry_a.tensor], infos_b[entry_b.tensor]
            shape = entry_shape(entry_a, info_a.shape)
            if len(shape) < 2 or shape != entry_shape(entry_b, info_b.shape):
                continue
            role, layer, expert = entry_a.key
            cosine = _abs_cosine(
                resolved_a.read(role, layer, expert), resolved_b.read(role, layer, expert)
            )
            bytes_read += resolved_a.stored_bytes(role, layer, expert)
            bytes_read += resolved_b.stored_bytes(role, layer, expert)
            if cosine is not None:
                cosines.append(cosine)
        return cosines, bytes_read


# ---------------------------------------------------------------- external command

_PLACEHOLDER = re.compile(r"\{([ab])\}")


class _OutputError(Exception):
    """The tool ran but its output is not what the adapter was told to expect."""


def _field(data: Any, path: str) -> Any:
    """``data["a"]["b"][0]`` for ``path = "a.b.0"``."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise _OutputError(f"no field {path!r} in the JSON output")
    return current


@overload
def _number(data: Any, path: str) -> float: ...
@overload
def _number(data: Any, path: str, *, null_ok: bool) -> float | None: ...
def _number(data: Any, path: str, *, null_ok: bool = False) -> float | None:
    value = _field(data, path)
    if value is None and null_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _OutputError(f"field {path!r} is {value!r}, not a number")
    number = float(value)
    if math.isnan(number):
        raise _OutputError(f"field {path!r} is NaN")
    return number


@dataclass(frozen=True)
class ExternalCommand:
    """Another tool's CLI, run once per pair: ``argv`` with ``{a}`` and ``{b}`` filled in.

    Its stdout must be JSON. ``score_field`` / ``p_value_field`` /
    ``verdict_field`` are dotted paths into it (``"result.score"``,
    ``"layers.0.p"``). With only a p-value the score is -log10 p. The verdict is
    the tool's own (mapped through ``verdict_map``; an unmapped word is
    ``inconclusive``) when ``verdict_field`` is given, else ``score >=
    threshold``. A missing executable, a non-zero exit, a timeout or
    unparseable output make that pair ``unavailable`` with the reason in
    ``error``; bytes read are unknown.
    """

    name: str
    argv: Sequence[str]
    threshold: float
    score_field: str | None = None
    p_value_field: str | None = None
    verdict_field: str | None = None
    verdict_map: Mapping[str, Verdict] = field(
        default_factory=lambda: {verdict: verdict for verdict in VERDICTS}
    )
    timeout_s: float = 600.0
    description: str = "external command"
    bytes_read_field: str | None = None  # where the tool reports the bytes it read, if it does

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))  # frozen means frozen: no shared list
        if not self.argv:
            raise ValueError("ExternalCommand needs a command line")
        if self.score_field is None and self.p_value_field is None:
            raise ValueError("ExternalCommand needs a score_field or a p_value_field")

    @property
    def kind(self) -> Kind:
        return "p_value" if self.p_value_field is not None else "score"

    def command_line(self, path_a: Path, path_b: Path) -> list[str]:
        values = {"a": str(path_a), "b": str(path_b)}
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in self.argv]

    def compare(self, path_a: Path, path_b: Path) -> MethodResult:
        start = time.perf_counter()

        def failed(message: str) -> MethodResult:
            return MethodResult(
                None, None, "unavailable", time.perf_counter() - start, None, _short(message)
            )

        if shutil.which(self.argv[0]) is None:
            return failed(f"{self.argv[0]!r} is not installed (not found on PATH)")
        try:
            done = subprocess.run(
                self.command_line(path_a, path_b),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return failed(f"timed out after {self.timeout_s:g} s")
        except OSError as error:
            return failed(f"could not run {self.argv[0]!r}: {error}")
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no stderr"]
            return failed(f"exit status {done.returncode}: {tail[0]}")
        try:
            return self._parse(done.stdout, seconds)
        except _OutputError as error:
            return failed(str(error))

    def _parse(self, stdout: str, seconds: float) -> MethodResult:
        try:
            data = json.loads(stdout)
        except (json.JSONDecodeError, RecursionError):
            raise _OutputError("output is not JSON") from None
        # A null score is the tool declining to score (e.g. shapes it cannot compare); with
        # the tool's own verdict that is an answer without a score, otherwise a failure.
        declined = self.verdict_field is not None
        p_value = None
        if self.p_value_field is not None:
            p_value = _number(data, self.p_value_field, null_ok=declined)
        if p_value is not None and not 0.0 <= p_value <= 1.0:
            raise _OutputError(f"p-value {p_value} lies outside [0, 1]")
        score: float | None
        if self.score_field is not None:
            score = _number(data, self.score_field, null_ok=declined)
        elif p_value is not None:
            score = math.inf if p_value == 0.0 else -math.log10(p_value)
        else:
            score = None
        if self.verdict_field is not None:
            said = str(_field(data, self.verdict_field)).strip().lower()
            verdict: Verdict = self.verdict_map.get(said, "inconclusive")
        else:
            assert score is not None  # without a verdict field a null score raised above
            verdict = "derived" if score >= self.threshold else "independent"
        bytes_read = None
        if self.bytes_read_field is not None:
            counted = _number(data, self.bytes_read_field, null_ok=True)
            # No comparison reads nothing: a zero is a tool not counting (modelDNA on local
            # folders), so it is reported unknown rather than as a free comparison.
            bytes_read = int(counted) if counted is not None and counted > 0 else None
        return MethodResult(score, p_value, verdict, seconds, bytes_read)


# ---------------------------------------------------------------- modelDNA

# modelDNA 0.1's verdict classes (``modeldna.verdict.VerdictClass``), as the benchmark counts them.
_MODELDNA_VERDICTS: Mapping[str, Verdict] = {
    "exact_copy": "derived",
    "quantized_copy": "derived",
    "fine_tune": "derived",
    "same_lineage": "derived",
    "likely_merge": "derived",
    "same_family_unresolved": "inconclusive",
    "insufficient": "inconclusive",
    "no_match": "independent",
}


def modeldna() -> ExternalCommand:
    """modelDNA (PyPI ``modeldna``) through ``modeldna compare SUSPECT CANDIDATE --json``.

    The score is its calibrated probability that the suspect descends from the
    candidate (null when it finds the structures incomparable), its own call
    the verdict class; 0.90 is the top of its abstention band. ``modeldna`` must
    be on PATH (``make bench`` installs it in a venv of its own); otherwise every
    pair is ``unavailable``.
    """
    return ExternalCommand(
        name="modeldna",
        argv=("modeldna", "compare", "{b}", "{a}", "--json"),
        threshold=0.90,
        score_field="verdict.probability",
        verdict_field="verdict.verdict",
        verdict_map=_MODELDNA_VERDICTS,
        bytes_read_field="bytes_read",
        description="modelDNA 0.1 (PyPI), `modeldna compare --json`: calibrated probability",
    )


# ---------------------------------------------------------------- forebear's own


class ForebearPValue:
    """What forebear's p-value methods share: score -log10 p, derived at p < 1e-6 (the
    comparison's reporting threshold)."""

    @property
    def kind(self) -> Kind:
        return "p_value"

    @property
    def threshold(self) -> float:
        from forebear.compare import REPORTING_LOG10_P

        return -REPORTING_LOG10_P

    @staticmethod
    def score(log10_p: float) -> float:
        return math.inf if log10_p == -math.inf else -log10_p


def coarse_verdict(found: Comparison) -> Verdict:
    """A forebear ``Comparison``'s class as the benchmark counts it."""
    if found.derived:
        return "derived"
    return "inconclusive" if found.verdict == "inconclusive" else "independent"


@dataclass(frozen=True)
class ForebearCompare(ForebearPValue):
    """``forebear.compare``."""

    fast: bool = False

    @property
    def name(self) -> str:
        return "forebear-fast" if self.fast else "forebear"

    @property
    def description(self) -> str:
        if self.fast:
            return "forebear compare --fast: same-position unit test on sampled rows"
        return "forebear compare: same-position (exact) and matched-unit (approximate) tests"

    def compare(self, path_a: Path, path_b: Path) -> MethodResult:
        from forebear.compare import compare

        start = time.perf_counter()
        try:
            found = compare(path_a, path_b, fast=self.fast)
        except ForebearError as error:
            return MethodResult(
                None, None, "unavailable", time.perf_counter() - start, None, _short(str(error))
            )
        verdict = coarse_verdict(found)
        return MethodResult(
            self.score(found.log10_p), found.p_value, verdict, time.perf_counter() - start,
            found.bytes_read, verdict_class=found.verdict,
        )  # fmt: skip


def _fingerprint_method() -> Method:
    from forebear.bench.fingerprints import FingerprintMethod

    return FingerprintMethod()


# Registry of methods the CLI can name.
METHODS: dict[str, Callable[[], Method]] = {
    "forebear": ForebearCompare,
    "forebear-fast": lambda: ForebearCompare(fast=True),
    "forebear-fingerprint": _fingerprint_method,
    "baseline-cosine": CosineBaseline,
    "modeldna": modeldna,
}
