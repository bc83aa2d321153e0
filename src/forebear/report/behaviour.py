"""The report of one behaviour probe: ``probe_report(ProbeResult) -> Report``.

Behavioural evidence, labelled so everywhere: the headline starts with it, the finding
names the derivation null (relative to the controls), each table says which of the
three questions (identity, derivation, distillation) its numbers answer, and what the
probe cannot see replaces the weight tier's list.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Unpack

from forebear.report.comparison import plain_json
from forebear.report.model import Bar, Bars, Finding, Report, Segment, Table
from forebear.report.provenance import Making, reproducibility
from forebear.report.words import p_short

if TYPE_CHECKING:
    from forebear.behavior.result import CandidateResult, ProbeResult

__all__ = ["probe_report"]

BEHAVIOUR_ONLY = (
    "behavioural evidence only: this report rests on what the models answer; whether the "
    "weights derive from a candidate is the weight tier's question (forebear compare)"
)
_NULL = (
    "sequential e-values on the prompts where the suspect agrees with exactly one of the "
    "candidate and a control (paired McNemar, anytime-valid: stopping early keeps it valid); "
    "Holm across every candidate × control test"
)


def probe_report(
    result: ProbeResult,
    **made: Unpack[Making],
) -> Report:
    """The report of ``result``; the keywords as ``comparison_report``'s."""
    from forebear.behavior.result import CANNOT_SEE

    settings = result.settings
    return Report(
        kind="probe",
        title=f"Does {result.suspect} behave like a derivative of a candidate?",
        verdict=f"behaviour: {result.verdict}",
        headline=result.summary(),
        finding=_finding(result),
        facts=_facts(result),
        figures=_figures(result),
        tables=(_questions(result), _candidates(result), _controls(result)),
        cannot_see=(*CANNOT_SEE, BEHAVIOUR_ONLY),
        reproducibility=reproducibility(
            seed=settings.seed,
            settings=settings.to_json() | {"prompt_set_sha256": result.probes.sha256},
            **made,
        ),
        result=plain_json(_without_version(result.to_json())),
    )


def _without_version(data: dict[str, Any]) -> dict[str, Any]:
    """The result's JSON less its forebear version: the reproducibility section records
    the versions (and a golden file must not change with each release)."""
    return {key: value for key, value in data.items() if key != "version"}


def _strongest(result: ProbeResult) -> CandidateResult | None:
    return min(result.candidates, key=lambda c: c.log10_p, default=None)


def _finding(result: ProbeResult) -> Finding:
    best = _strongest(result)
    log10_p = None if best is None else best.log10_p
    said = "no candidate tested" if best is None else f"{best.name}: {p_short(best.log10_p)}"
    return Finding(
        log10_p=log10_p,
        p_text=said,
        hypothesis="H0, per candidate X and control C: the suspect agrees with X no more often "
        "than with C (the derivation question; with controls trained on X's data, the "
        "distillation question)",
        null=_NULL,
        threshold=f"closer to X is claimed when every one of X's tests is rejected at "
        f"α = {result.settings.alpha:g} after Holm",
    )


def _facts(result: ProbeResult) -> tuple[str, ...]:
    facts = [
        f"{c.name}: the suspect agrees on {c.agreement.hits} of {c.agreement.prompts} prompts "
        f"({c.agreement.rate:.1%}); derivation: {c.verdict.replace('_', ' ')}; identity: "
        f"{c.identity_verdict}"
        for c in result.candidates
    ]
    facts += [
        f"control {a.model}: agrees on {a.hits} of {a.prompts} prompts ({a.rate:.1%})"
        for a in result.control_agreement
    ]
    nearest = result.nearest
    if nearest is not None:
        facts.append(f"nearest candidate (closed set, by agreement): {nearest}")
    queries = ", ".join(f"{name} {count}" for name, count in result.queries.items())
    facts.append(
        f"{result.prompts_used} prompts used (stopped: {result.stopped}); queries answered by "
        f"each model, cache hits excluded: {queries}"
    )
    return tuple(facts)


def _figures(result: ProbeResult) -> tuple[Bars, ...]:
    rows = [(c.name, c.agreement.rate, "candidate") for c in result.candidates]
    rows += [(a.model, a.rate, "control") for a in result.control_agreement]
    agreement = Bars(
        title="How often the suspect's next token equals each model's",
        value_label="agreement rate",
        categories=("candidate", "control"),
        bars=tuple(
            Bar(name, (Segment(kind, rate),), f"{kind}: {rate:.1%}") for name, rate, kind in rows
        ),
        maximum=1.0,
        note="the same prompts for every model; controls show what unrelated models share",
    )
    alpha = result.settings.alpha
    evidence = Bars(
        title="Evidence per candidate (derivation question, Holm-adjusted)",
        value_label="−log10 p",
        categories=("evidence",),
        bars=tuple(
            Bar(c.name, (Segment("evidence", max(-c.log10_p, 0.0)),), c.verdict.replace("_", " "))
            for c in result.candidates
        ),
        threshold=-math.log10(alpha),
        threshold_label=f"α = {alpha:g}",
        note="the weakest of the candidate's tests against each control",
    )
    return (agreement, evidence)


def _questions(result: ProbeResult) -> Table:
    from forebear.behavior.result import QUESTIONS

    best = _strongest(result)
    derived = ", ".join(result.derived) or "none"
    same = ", ".join(c.name for c in result.candidates if c.identity_verdict == "same") or "none"
    undecided = [c.name for c in result.candidates if c.identity_verdict == "undetermined"]
    same += f" (undetermined: {', '.join(undecided)})" if undecided else ""
    distillation = (
        derived
        if result.settings.same_data_controls
        else "not asked: the controls are not independent models trained on the candidates' data"
    )
    rows = (
        ("identity", QUESTIONS["identity"], f"the same model as: {same}"),
        ("derivation", QUESTIONS["derivation"], f"closer than every control to: {derived}"),
        ("distillation", QUESTIONS["distillation"], distillation),
    )
    note = "" if best is None else f"strongest candidate: {best.name}"
    return Table("Which question each number answers", ("question", "what it asks", "answer"),
                 rows, note)  # fmt: skip


def _candidates(result: ProbeResult) -> Table:
    rows = tuple(
        (
            c.name,
            f"{c.agreement.hits}/{c.agreement.prompts}",
            f"{c.agreement.low:.3f}–{c.agreement.high:.3f}",
            c.verdict.replace("_", " "),
            f"{c.log10_p:.1f}",
            c.identity_verdict,
        )
        for c in result.candidates
    )
    columns = ("candidate", "agreement", "95 % interval", "derivation", "log10 p (Holm)",
               "identity")  # fmt: skip
    return Table("Candidates", columns, rows, "intervals: Clopper–Pearson, fixed-sample")


def _controls(result: ProbeResult) -> Table:
    rows = tuple(
        (c.name, t.control, str(t.x_only), str(t.control_only), f"{adjusted:.1f}")
        for c in result.candidates
        for t, adjusted in zip(c.controls, c.adjusted_log10_p, strict=True)
    )
    columns = ("candidate", "control", "agrees with the candidate only",
               "agrees with the control only", "log10 p (Holm)")  # fmt: skip
    return Table(
        "Each candidate against each control (paired)",
        columns,
        rows,
        "only the prompts where the suspect agrees with exactly one of the two count",
    )
