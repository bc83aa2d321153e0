"""``scan``: one model against the reference index — what does it come from?

Retrieval ranks every indexed model by its retrieval vector's cosine with the
query's (``Index.candidates``: a structural filter, then exact or ANN search);
the top ``top`` candidates are then *tested*, fingerprint against fingerprint
(``compare.sketches``: the same verdict classes as weights, p-value against
independent initialisation), and, with ``weights=True``, by the full
comparison of the weights where the candidate's source can be opened. The best
relative is the derived verdict with the strongest evidence; none derived is
"no indexed relative". Retrieval scores rank, they never decide.

The model card's claims are then checked against that evidence: a card that
says "from scratch" while the weights share initialisation with an indexed
model is contradicted; a declared ``base_model`` that is indexed is tested
directly and is contradicted when the weights call it independent; a derived
relative the card does not declare is reported. This module owns the scan and
the checks; the index owns storage and retrieval.

When the evidence splits across two derived relatives that the query lies
between (``lineage.merging``'s screen: ``d(A, Q) + d(Q, B) < 1.4 · d(A, B)``, the
query's foot between 5 % and 95 % of the way), the verdict says **merge** of the
two, with weights from the distances; with ``weights=True`` and both reachable,
``lineage.decompose`` decides instead (a fit that is no merge drops the claim).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

from forebear.compare.result import Comparison
from forebear.compare.sketches import compare_sketches
from forebear.fingerprint import Fingerprint, fingerprint, load_fingerprint
from forebear.fingerprint.io import is_fingerprint_file
from forebear.fingerprint.vector import retrieval_vector
from forebear.index.card import CardClaims, read_card
from forebear.index.record import IndexRecord
from forebear.index.store import Index
from forebear.lineage.decompose import MIN_WEIGHT
from forebear.lineage.merging import BETWEEN
from forebear.model import open_model

__all__ = ["CardCheck", "ScanMatch", "ScanResult", "scan"]

CheckStatus = Literal["contradicted", "consistent", "unverifiable", "undeclared"]


MERGE_CANDIDATES = 4  # derived relatives, strongest first, tried in pairs as a merge's parents


@dataclass(frozen=True)
class ScanMatch:
    """One tested candidate: its retrieval score and the comparisons that tested it."""

    record: IndexRecord
    score: float  # retrieval cosine (ranks, never decides)
    sketches: Comparison  # candidate (A) against the query (B), from fingerprints
    weights: Comparison | None = None  # the full comparison, when asked and reachable
    weights_error: str | None = None
    fingerprint: Fingerprint | None = field(default=None, repr=False, compare=False)

    @property
    def decisive(self) -> Comparison:
        return self.weights if self.weights is not None else self.sketches


@dataclass(frozen=True)
class CardCheck:
    claim: str  # what the card says, in words
    status: CheckStatus
    evidence: str


@dataclass(frozen=True)
class ScanMerge:
    """The query as a merge of two indexed relatives."""

    parents: tuple[str, str]
    weights: tuple[float, float]  # from the distances, or the decomposition's when it ran
    between: float  # (d(A, Q) + d(Q, B)) / d(A, B): 1 on the line between them
    decomposition: Mapping[str, Any] | None = None  # ``Decomposition.to_json()``, when run


@dataclass(frozen=True)
class ScanResult:
    query: str
    indexed: int  # records in the index
    retrieved: int  # candidates that passed the structural filter and were ranked
    matches: tuple[ScanMatch, ...]  # the tested ones, best first
    best: ScanMatch | None  # the strongest derived verdict; None: no indexed relative
    card: CardClaims | None
    checks: tuple[CardCheck, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    merge: ScanMerge | None = None

    @property
    def verdict(self) -> str:
        if self.best is None:
            return "no indexed relative"
        if self.merge is not None:
            (a, b), (wa, wb) = self.merge.parents, self.merge.weights
            return f"merge of {a} ({wa:.2f}) and {b} ({wb:.2f})"
        return f"{self.best.decisive.verdict} of {self.best.record.label}"

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "verdict": self.verdict,
            "best": None if self.best is None else _match_json(self.best),
            "indexed": self.indexed,
            "retrieved": self.retrieved,
            "matches": [_match_json(m) for m in self.matches],
            "card": None if self.card is None else self.card.to_json(),
            "checks": [vars(check) for check in self.checks],
            "merge": None if self.merge is None else {
                "parents": list(self.merge.parents), "weights": list(self.merge.weights),
                "between": self.merge.between, "decomposition": self.merge.decomposition},
            "seconds": self.seconds,
        }  # fmt: skip


def _match_json(match: ScanMatch) -> dict[str, Any]:
    decisive = match.decisive
    return {
        "ref": match.record.label,
        "family": match.record.family,
        "retrieval_score": match.score,
        "verdict": decisive.verdict,
        "log10_p": decisive.log10_p,
        "derived": decisive.derived,
        "tested_on": "weights" if match.weights is not None else "fingerprints",
        "sketches": {"verdict": match.sketches.verdict, "log10_p": match.sketches.log10_p},
        "weights_error": match.weights_error,
        "declared_base_models": list(match.record.card.base_models),
    }


def scan(
    model: str | os.PathLike[str] | Fingerprint,
    index: Index,
    *,
    top: int = 5,
    retrieve: int = 50,
    weights: bool = False,
    revision: str | None = None,
    token: str | None = None,
    dims: int = 256,
    units: int = 64,
    content_units: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScanResult:
    """Scan ``model`` (a model reference, a fingerprint file or a ``Fingerprint``) against
    ``index``; see the module docstring. ``dims`` and ``units`` must be those the index's
    records were made with (``forebear index add``'s defaults are these). ``progress``
    receives a line per step (fingerprint, retrieval, each candidate tested)."""
    say = progress or (lambda message: None)
    started = time.perf_counter()
    say("fingerprinting the query")
    query, card, name = _query(model, revision, token, dims, units, content_units)
    made = time.perf_counter()
    hidden = query.meta["structure"].get("hidden")
    say(f"ranking {len(index)} indexed models")
    found = index.candidates(retrieval_vector(query), k=retrieve,
                             min_hidden=hidden if isinstance(hidden, int) else None,
                             exclude=(name,))  # fmt: skip
    ranked = time.perf_counter()
    matches = []
    for count, candidate in enumerate(found[:top], start=1):
        say(f"testing {count}/{min(top, len(found))}: {candidate.record.label}")
        matches.append(_test(index, candidate.record, candidate.score, query, name, weights))
    matches.sort(key=lambda m: (not m.decisive.derived, m.decisive.log10_p, -m.score))
    best = matches[0] if matches and matches[0].decisive.derived else None
    checks = _check_card(card, best, matches, index, query, name)
    merge = _merge(matches, name if weights else None)
    return ScanResult(
        query=name, indexed=len(index), retrieved=len(found), matches=tuple(matches), best=best,
        card=card, checks=tuple(checks),
        seconds={"fingerprint": made - started, "retrieval": ranked - made,
                 "tests": time.perf_counter() - ranked}, merge=merge,
    )  # fmt: skip


def _merge(matches: list[ScanMatch], query: str | None) -> ScanMerge | None:
    """The two derived relatives the query lies between, if any (see the module docstring);
    ``query``: the model to decompose on their weights (None: distances only)."""
    derived = [m for m in matches if m.decisive.derived][:MERGE_CANDIDATES]
    for a, b in combinations(derived, 2):
        assert a.fingerprint is not None and b.fingerprint is not None
        da, db = a.decisive.change, b.decisive.change
        apart = compare_sketches(a.fingerprint, b.fingerprint).change
        if da is None or db is None or not apart or max(da, db) >= apart:
            continue
        between = (da + db) / apart
        t = (da**2 - db**2 + apart**2) / (2 * apart**2)  # the query's foot, from a toward b
        if between >= BETWEEN or not MIN_WEIGHT <= t <= 1 - MIN_WEIGHT:
            continue
        found = ScanMerge((a.record.label, b.record.label), (1 - t, t), between)
        if query is None or a.weights is None or b.weights is None:
            return found
        return _decomposed(found, query, (a.record.ref, b.record.ref))
    return None


def _decomposed(found: ScanMerge, query: str, parents: tuple[str, str]) -> ScanMerge | None:
    from forebear.lineage import decompose

    with open_model(query) as model, open_model(parents[0]) as first, \
            open_model(parents[1]) as second:  # fmt: skip
        result = decompose(model, [first, second])
    if result.verdict not in ("exact merge", "merge, then changed") or result.best is None:
        return None
    weights = (result.best.weights[0], result.best.weights[1])
    return ScanMerge(found.parents, weights, found.between, result.to_json())


def _query(model: str | os.PathLike[str] | Fingerprint, revision: str | None, token: str | None,
           dims: int, units: int, content_units: int | None
           ) -> tuple[Fingerprint, CardClaims | None, str]:  # fmt: skip
    if isinstance(model, Fingerprint):
        return model, None, str(model.meta.get("source"))
    if is_fingerprint_file(model):
        found = load_fingerprint(model)
        return found, None, str(found.meta.get("source") or model)
    with open_model(model, revision=revision, token=token) as opened:
        name = opened.name
        found = fingerprint(opened, dims=dims, units=units, content_units=content_units,
                            source=name)  # fmt: skip
        card = read_card(opened.location) if opened.location is not None else None
    return found, card, name


def _test(index: Index, record: IndexRecord, score: float, query: Fingerprint, name: str,
          weights: bool) -> ScanMatch:  # fmt: skip
    candidate = index.load_fingerprint(record)
    sketched = compare_sketches(candidate, query, names=(record.label, name))
    if not weights:
        return ScanMatch(record, score, sketched, fingerprint=candidate)
    from forebear.compare import compare
    from forebear.errors import ForebearError

    try:
        full = compare(record.ref, name)
    except ForebearError as error:
        return ScanMatch(record, score, sketched, None, str(error), candidate)
    return ScanMatch(record, score, sketched, full, fingerprint=candidate)


def _check_card(card: CardClaims | None, best: ScanMatch | None, matches: list[ScanMatch],
                index: Index, query: Fingerprint, name: str) -> list[CardCheck]:  # fmt: skip
    if card is None:
        return []
    checks = []
    if card.from_scratch:
        claim = f"trained from scratch ({card.evidence!r})"
        if best is not None:
            evidence = _said(best)
            checks.append(CardCheck(claim, "contradicted", evidence))
        else:
            checks.append(CardCheck(claim, "consistent",
                                    "no indexed model shares its initialisation"))  # fmt: skip
    declared = set(card.base_models)
    for base in card.base_models:
        record = index.get(base)
        if record is None:
            checks.append(CardCheck(f"base model {base}", "unverifiable", "not in the index"))
            continue
        tested = compare_sketches(index.load_fingerprint(record), query, names=(base, name))
        status: CheckStatus = "consistent" if tested.derived else "contradicted"
        if tested.verdict == "inconclusive":
            status = "unverifiable"
        checks.append(CardCheck(f"base model {base}", status,
                                f"{tested.verdict} (log10 p = {tested.log10_p:.1f})"))  # fmt: skip
    for match in matches:
        if match.decisive.derived and match.record.ref not in declared and declared:
            checks.append(CardCheck(f"declared bases: {', '.join(sorted(declared))}",
                                    "undeclared", _said(match)))  # fmt: skip
    return checks


def _said(match: ScanMatch) -> str:
    decisive, tested = match.decisive, "weights" if match.weights else "fingerprints"
    return (f"{decisive.verdict} of {match.record.label} "
            f"(log10 p = {decisive.log10_p:.1f}, from {tested})")  # fmt: skip
