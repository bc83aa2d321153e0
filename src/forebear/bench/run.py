"""Run methods over a zoo manifest's pairs and aggregate the metrics per method and relation.

``run_benchmark(manifest, methods)`` calls every method on every pair (in the
manifest's order), records each ``MethodResult``, and summarises:

- per relation (every relation of the related pairs, plus ``all related``):
  AUROC of that relation's pairs against **all** independent pairs, TPR at
  FPR ≤ 1 % and ≤ 0.1 %, and how many the method calls derived;
- false positives among independent pairs at the method's own threshold (and
  how many it gave a "derived" verdict);
- calibration of the p-values of independent pairs (p-value methods only);
- top-1 parent attribution: for each derived model, whether its true base (the
  root of its weight ancestry) scores highest among all bases;
- behaviour-only pairs (distillation) apart: weight methods are expected not
  to detect them, and their rate is reported as it is;
- cost: median and max seconds per pair, bytes read, peak RSS of this process.

A pair the method could not score (``score is None``) counts as "no evidence"
(``-inf``) in ranking metrics, so failing never helps a method find derived
pairs; how many there were is reported. A method that scored nothing gets no
metrics at all (None), not chance-level numbers. This module computes; it
neither prints nor writes files (see ``report``).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from forebear.bench.methods import Kind, Method, MethodResult
from forebear.bench.metrics import (
    Calibration,
    FalsePositives,
    TopOne,
    TprAtFpr,
    auroc,
    calibration,
    false_positives,
    top1_parent,
    tpr_at_fpr,
)
from forebear.zoo.manifest import Label, Manifest

__all__ = [
    "ALL_RELATED",
    "BenchmarkResult",
    "MethodSummary",
    "PairScore",
    "RelationMetrics",
    "describe_environment",
    "run_benchmark",
]

ALL_RELATED = "all related"
FPR_LEVELS = (0.01, 0.001)
_PACKAGES = ("forebear", "numpy", "scipy", "safetensors", "gguf", "torch", "transformers")
Progress = Callable[[str, int, int], None]  # (method name, pairs done, pairs in all)


@dataclass(frozen=True)
class PairScore:
    a: str
    b: str
    label: Label
    relation: str
    result: MethodResult


@dataclass(frozen=True)
class RelationMetrics:
    """One relation's positives against all independent pairs (negatives)."""

    relation: str
    n_pairs: int
    n_unscored: int  # pairs without a score, ranked as -inf
    n_negative: int
    auroc: float | None  # None: nothing scored, or no negatives
    tpr: tuple[TprAtFpr, ...]  # at FPR ≤ each of FPR_LEVELS
    detected: int  # pairs with score >= the method's threshold
    detection_rate: float


@dataclass(frozen=True)
class MethodSummary:
    method: str
    description: str
    kind: Kind
    threshold: float
    n_pairs: int
    n_unscored: int
    errors: tuple[str, ...]  # distinct error messages, first few
    relations: tuple[RelationMetrics, ...]
    behaviour_only: RelationMetrics | None
    false_positives: FalsePositives | None
    derived_verdicts_on_independent: int
    calibration: Calibration | None
    attribution: TopOne | None
    median_seconds: float | None
    max_seconds: float | None
    total_seconds: float
    bytes_read: int | None  # None when the method does not know
    # Peak RSS of this process only (VmHWM): "method" scope when it could be reset before the
    # method ran, else "process" (since start). An external tool's own memory is not in it:
    # a child's ru_maxrss survives fork+exec and would report the parent's size instead.
    peak_rss_mb: float | None
    peak_rss_scope: str


@dataclass(frozen=True)
class BenchmarkResult:
    profile: str
    manifest: str | None  # the manifest's folder
    started_at: str  # ISO 8601, UTC
    environment: Mapping[str, Any]
    summaries: tuple[MethodSummary, ...]
    pairs: Mapping[str, tuple[PairScore, ...]]  # method name -> every pair's result


# ---------------------------------------------------------------- environment


def _rusage_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """VmHWM from /proc/self/status; the rusage maximum where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return _rusage_mb()


def _memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_environment() -> dict[str, Any]:
    """Machine and package versions (read from metadata: nothing heavy is imported)."""
    versions: dict[str, str | None] = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "memory_total_mb": _memory_total_mb(),
        "python": platform.python_version(),
        "packages": versions,
    }


# ---------------------------------------------------------------- aggregation


def _ranked(pairs: Sequence[PairScore]) -> list[float]:
    return [-math.inf if p.result.score is None else p.result.score for p in pairs]


def _relation_metrics(
    relation: str, positives: Sequence[PairScore], negatives: Sequence[PairScore], threshold: float
) -> RelationMetrics:
    scored = [p for p in (*positives, *negatives) if p.result.score is not None]
    pos, neg = _ranked(positives), _ranked(negatives)
    usable = bool(scored) and bool(pos) and bool(neg)
    detected = sum(1 for score in pos if score >= threshold)
    return RelationMetrics(
        relation=relation,
        n_pairs=len(positives),
        n_unscored=sum(1 for p in positives if p.result.score is None),
        n_negative=len(negatives),
        auroc=auroc(pos, neg) if usable else None,
        tpr=tuple(tpr_at_fpr(pos, neg, level) for level in FPR_LEVELS) if usable else (),
        detected=detected,
        detection_rate=detected / len(pos) if pos else 0.0,
    )


def _weight_roots(manifest: Manifest, name: str) -> set[str]:
    """The bases ``name`` descends from through weight (``derived``) edges."""
    roots, frontier, seen = set(), [name], {name}
    while frontier:
        current = frontier.pop()
        entry = manifest.models[current]
        if entry.kind == "base":
            roots.add(current)
        elif entry.kind == "derived":
            for parent in entry.parents:
                if parent not in seen:
                    seen.add(parent)
                    frontier.append(parent)
    return roots


def _attribution(manifest: Manifest, pairs: Sequence[PairScore]) -> TopOne | None:
    if all(p.result.score is None for p in pairs):
        return None
    bases = set(manifest.bases())
    truth: dict[str, set[str]] = {}
    for name, entry in manifest.models.items():
        roots = _weight_roots(manifest, name) & bases if entry.kind == "derived" else set()
        if roots:
            truth[name] = roots
    scores: dict[tuple[str, str], float] = {}
    for pair in pairs:
        score = pair.result.score
        if score is None:
            continue
        for derived, candidate in ((pair.a, pair.b), (pair.b, pair.a)):
            if derived in truth and candidate in bases:
                scores[(derived, candidate)] = score
    return top1_parent(scores, dict(truth.items()))


def _lineage(manifest: Manifest, name: str) -> str:
    """The bases a model descends from through weights, or the model itself (a base, a
    distilled student): models of one lineage share their pairs' fate."""
    return "+".join(sorted(_weight_roots(manifest, name))) or name


def _calibration(
    method: Method, independent: Sequence[PairScore], manifest: Manifest
) -> Calibration | None:
    if method.kind != "p_value":
        return None
    scored = [p for p in independent if p.result.p_value is not None]
    if not scored:
        return None
    groups = [tuple(sorted((_lineage(manifest, p.a), _lineage(manifest, p.b)))) for p in scored]
    return calibration([p.result.p_value for p in scored], groups=groups)  # type: ignore[misc]


def _relations(
    related: Sequence[PairScore], independent: Sequence[PairScore], threshold: float
) -> tuple[RelationMetrics, ...]:
    names = sorted({p.relation for p in related})
    rows = [
        _relation_metrics(name, [p for p in related if p.relation == name], independent, threshold)
        for name in names
    ]
    if related:
        rows.append(_relation_metrics(ALL_RELATED, related, independent, threshold))
    return tuple(rows)


def _summarise(
    manifest: Manifest, method: Method, pairs: Sequence[PairScore], cost: Mapping[str, Any]
) -> MethodSummary:
    by_label = {
        label: [p for p in pairs if p.label == label]
        for label in ("related", "independent", "behaviour_only")
    }
    independent = by_label["independent"]
    any_scored = any(p.result.score is not None for p in pairs)
    seconds = [p.result.seconds for p in pairs]
    reads = [p.result.bytes_read for p in pairs]
    behaviour = by_label["behaviour_only"]
    return MethodSummary(
        method=method.name,
        description=method.description,
        kind=method.kind,
        threshold=method.threshold,
        n_pairs=len(pairs),
        n_unscored=sum(1 for p in pairs if p.result.score is None),
        errors=tuple(dict.fromkeys(p.result.error for p in pairs if p.result.error))[:5],
        relations=_relations(by_label["related"], independent, method.threshold),
        behaviour_only=(
            _relation_metrics("behaviour_only", behaviour, independent, method.threshold)
            if behaviour
            else None
        ),
        false_positives=(
            false_positives(_ranked(independent), method.threshold) if any_scored else None
        ),
        derived_verdicts_on_independent=sum(
            1 for p in independent if p.result.verdict == "derived"
        ),
        calibration=_calibration(method, independent, manifest),
        attribution=_attribution(manifest, pairs),
        median_seconds=statistics.median(seconds) if seconds else None,
        max_seconds=max(seconds, default=None),
        total_seconds=float(cost["total_seconds"]),
        bytes_read=None if any(r is None for r in reads) else sum(r for r in reads if r),
        peak_rss_mb=cost["peak_rss_mb"],
        peak_rss_scope=cost["peak_rss_scope"],
    )


# ---------------------------------------------------------------- the run


def _compare(method: Method, path_a: Path, path_b: Path) -> MethodResult:
    """``method.compare``; an exception becomes an ``unavailable`` result, not a dead run.

    The benchmark is a harness around code it does not own: one pair that
    breaks a method is a result about that method, and the other pairs still
    deserve scoring.
    """
    start = time.perf_counter()
    try:
        return method.compare(path_a, path_b)
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        return MethodResult(None, None, "unavailable", time.perf_counter() - start, None, message)


def _run_method(
    manifest: Manifest, method: Method, progress: Progress | None
) -> tuple[tuple[PairScore, ...], dict[str, Any]]:
    reset = _reset_peak_rss()
    start = time.perf_counter()
    scored = []
    for done, pair in enumerate(manifest.pairs, start=1):
        result = _compare(method, manifest.model_path(pair.a), manifest.model_path(pair.b))
        scored.append(PairScore(pair.a, pair.b, pair.label, pair.relation, result))
        if progress is not None:
            progress(method.name, done, len(manifest.pairs))
    cost = {
        "total_seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_scope": "method" if reset else "process",
    }
    return tuple(scored), cost


def run_benchmark(
    manifest: Manifest, methods: Sequence[Method], *, progress: Progress | None = None
) -> BenchmarkResult:
    """Score every manifest pair with every method; ``progress`` hears of each finished pair."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    pairs: dict[str, tuple[PairScore, ...]] = {}
    summaries = []
    for method in methods:
        if method.name in pairs:
            raise ValueError(f"two methods are named {method.name!r}")
        scored, cost = _run_method(manifest, method, progress)
        pairs[method.name] = scored
        summaries.append(_summarise(manifest, method, scored, cost))
    return BenchmarkResult(
        profile=manifest.profile,
        manifest=None if manifest.root is None else str(manifest.root),
        started_at=started,
        environment=describe_environment(),
        summaries=tuple(summaries),
        pairs=pairs,
    )
