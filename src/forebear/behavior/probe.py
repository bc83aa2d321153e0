"""``probe``: ask the suspect, the candidates and the controls the same prompts, in
batches, until the evidence is decisive or the budget is spent.

After each batch every open test looks at the new prompts (``behavior.agreement`` for
derivation against each control, ``behavior.identity`` for identity), Holm's procedure
runs over every (candidate, control) test together, and a model is asked further only
while a test that needs it is still open. A candidate is decided when it is closer
than every control (Holm) or when one control provably keeps up with it (futility);
its identity is decided when either identity test rejects. The probe stops when every
candidate is decided on both, at the budget, or when a client's own budget runs out.

``samples`` > 0: the suspect's token is the mode of that many sampled answers (an
endpoint sampling at an unknown temperature without log-probabilities), ``samples``
queries a prompt. ``distribution``: afterwards, each candidate's sampling distribution
is tested against the suspect's on a fixed few prompts (``behavior.distribution``).

Each candidate's controls are the given controls and, unless told otherwise, the
other candidates (Nikolic et al.'s rule: the best candidate must beat the rest). The
tests are valid under this early stopping (anytime-valid e-values); the agreement
intervals are fixed-sample. Candidate and control clients may share a response cache,
so their answers are paid for once. This module owns the loop; it prints nothing
(``progress`` receives one line per batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from forebear.behavior.agreement import ControlTest, agreement, discordant
from forebear.behavior.base import BudgetExhaustedError, Client, TokenAnswer
from forebear.behavior.distribution import (
    DistributionPlan,
    DistributionTest,
    distribution_tests,
    modal_answers,
    sampled_continuations,
    sampling_seeds,
)
from forebear.behavior.identity import (
    IDENTITY_MARGIN,
    IDENTITY_TOLERANCE,
    IdentityTest,
    top_k_total_variation,
)
from forebear.behavior.prompts import ProbeSet, draw_probes, held_out_text
from forebear.behavior.result import CandidateResult, DerivationVerdict, ProbeResult, Settings
from forebear.errors import ForebearError
from forebear.stats import holm_adjusted

__all__ = ["SUSPECT", "default_probes", "greedy_token", "probe"]

SUSPECT = "\x00suspect"  # the suspect's key among the models asked (no model name clashes)
Progress = Callable[[str], None]
Answers = Mapping[str, Sequence[TokenAnswer]]


def default_probes(count: int, seed: int) -> ProbeSet:
    """``count`` prompts from the held-out standard-library text, drawn with ``seed``."""
    source = "Python standard-library files outside both zoo corpora (held out)"
    rng = np.random.default_rng(seed)
    return draw_probes(held_out_text(), count, rng, source=source, seed=seed)


def greedy_token(answer: TokenAnswer) -> str:
    """The most likely next token: the top of the log-probabilities when given (a sampling
    temperature does not move it), else the token the model answered."""
    if answer.logprobs:
        return max(answer.logprobs.items(), key=lambda item: item[1])[0]
    return answer.token


@dataclass(frozen=True)
class _State:
    plan: Mapping[str, tuple[str, ...]]  # candidate -> its controls
    tests: Mapping[tuple[str, str], ControlTest]
    identity: Mapping[str, IdentityTest]
    hits: Mapping[str, tuple[int, int]]  # model -> (agreements with the suspect, prompts)
    asked: int = 0  # prompts the suspect answered
    wait_for_identity: bool = True  # keep asking until each identity test decides
    decided_at: Mapping[str, int] = field(default_factory=dict)  # derivation verdict reached
    identity_at: Mapping[str, int] = field(default_factory=dict)  # identity verdict reached

    def adjusted(self) -> dict[tuple[str, str], float]:
        keys = list(self.tests)
        values = holm_adjusted([self.tests[key].log10_p for key in keys])
        return dict(zip(keys, values, strict=True))

    def verdicts(self, alpha: float) -> dict[str, DerivationVerdict]:
        adjusted, limit = self.adjusted(), float(np.log10(alpha))
        found: dict[str, DerivationVerdict] = {}
        for name, controls in self.plan.items():
            if controls and all(adjusted[(name, c)] <= limit for c in controls):
                found[name] = "closer"
            elif any(self.tests[(name, c)].futile(alpha) for c in controls):
                found[name] = "not_closer"
            else:
                found[name] = "undecided"
        return found

    def needed(self, alpha: float) -> set[str]:
        verdicts = self.verdicts(alpha)
        need = {SUSPECT}
        for name, controls in self.plan.items():
            if verdicts[name] == "undecided":
                need |= {name, *controls}
            if self.wait_for_identity and self.identity[name].verdict(alpha) == "undetermined":
                need.add(name)
        return need

    def look(self, answers: Answers, alpha: float, *, freeze: bool = True) -> _State:
        """The state after one batch; with ``freeze``, decided tests stay as they were."""
        verdicts = self.verdicts(alpha)
        open_now = {n for n, v in verdicts.items() if v == "undecided" or not freeze}
        tokens = {name: [greedy_token(a) for a in got] for name, got in answers.items()}
        suspect = tokens[SUSPECT]
        tests = dict(self.tests)
        for (name, control), test in self.tests.items():
            if name in open_now:
                tests[(name, control)] = test.look(
                    *discordant(suspect, tokens[name], tokens[control])
                )
        identity = dict(self.identity)
        for name, same in self.identity.items():
            if name in tokens and (same.verdict(alpha) == "undetermined" or not freeze):
                identity[name] = _identity_look(
                    same, answers[SUSPECT], answers[name], suspect, tokens[name]
                )
        hits = dict(self.hits)
        for name, got in tokens.items():
            if name != SUSPECT:
                agree = sum(s == x for s, x in zip(suspect, got, strict=True))
                hits[name] = (hits[name][0] + agree, hits[name][1] + len(got))
        after = replace(
            self, tests=tests, identity=identity, hits=hits, asked=self.asked + len(suspect)
        )
        return after.stamped(alpha)

    def stamped(self, alpha: float) -> _State:
        """With the prompt count at which each verdict was first reached recorded."""
        decided = {n: self.asked for n, v in self.verdicts(alpha).items() if v != "undecided"}
        settled = {
            n: self.asked for n, t in self.identity.items() if t.verdict(alpha) != "undetermined"
        }
        return replace(
            self,
            decided_at=decided | dict(self.decided_at),
            identity_at=settled | dict(self.identity_at),
        )

    def decided(self, alpha: float) -> bool:
        if any(v == "undecided" for v in self.verdicts(alpha).values()):
            return False
        return not self.wait_for_identity or all(
            t.verdict(alpha) != "undetermined" for t in self.identity.values()
        )


def _identity_look(
    test: IdentityTest,
    suspect: Sequence[TokenAnswer],
    candidate: Sequence[TokenAnswer],
    suspect_tokens: Sequence[str],
    candidate_tokens: Sequence[str],
) -> IdentityTest:
    differ = sum(s != x for s, x in zip(suspect_tokens, candidate_tokens, strict=True))
    tvs = [
        tv
        for s, x in zip(suspect, candidate, strict=True)
        if s.logprobs and x.logprobs
        and (tv := top_k_total_variation(s.logprobs, x.logprobs)) is not None
    ]  # fmt: skip
    return test.look(differ, len(suspect_tokens) - differ, tvs)


def _plan(
    candidates: Mapping[str, Client], controls: Mapping[str, Client], among: bool
) -> dict[str, tuple[str, ...]]:
    if not candidates:
        raise ForebearError("no candidates to probe against", hint="name at least one candidate")
    if SUSPECT in candidates or SUSPECT in controls or set(candidates) & set(controls):
        raise ForebearError(
            "a model is named both as a candidate and as a control",
            hint="give each model one role (candidates are controls for each other already)",
        )
    plan = {}
    for name in candidates:
        others = [other for other in candidates if other != name] if among else []
        plan[name] = (*controls, *others)
        if not plan[name]:
            raise ForebearError(
                f"candidate {name!r} has no control to be compared with",
                hint="give --controls (independent models), or more than one candidate",
            )
    return plan


@dataclass(frozen=True)
class _Asking:
    """How each model is asked: greedy next tokens (with top-k), the suspect's perhaps
    as the mode of samples under ``modal_seeds``."""

    top_k: int
    modal_seeds: tuple[int, ...] = ()


def _ask(
    clients: Mapping[str, Client], names: set[str], prompts: Sequence[str], asking: _Asking
) -> Answers:
    found: dict[str, Sequence[TokenAnswer]] = {}
    for name in sorted(names):
        if name == SUSPECT and asking.modal_seeds:
            found[name] = modal_answers(clients[name], prompts, asking.modal_seeds)
            continue
        answers = clients[name].next_token(prompts, top_k=asking.top_k)
        if len(answers) != len(prompts):
            raise ForebearError(
                f"{clients[name].name} answered {len(answers)} of {len(prompts)} prompts",
                hint="the client must answer every prompt, in order",
            )
        found[name] = answers
    return found


def _check(budget: int, batch: int, alpha: float, margin: float, samples: int) -> None:
    if budget < 1 or batch < 1:
        raise ForebearError(f"budget and batch must be positive (got {budget}, {batch})")
    if samples < 0:
        raise ForebearError(f"samples cannot be negative (got {samples})")
    if not 0.0 < alpha < 1.0:
        raise ForebearError(f"alpha must lie between 0 and 1 (got {alpha})")
    if not 0.0 < margin < 0.5:
        raise ForebearError(f"the futility margin must lie between 0 and 0.5 (got {margin})")


def probe(
    suspect: Client,
    candidates: Mapping[str, Client],
    controls: Mapping[str, Client] | None = None,
    *,
    budget: int = 2000,
    batch: int = 100,
    alpha: float = 0.01,
    margin: float = 0.1,
    tolerance: float = IDENTITY_TOLERANCE,
    identity_margin: float = IDENTITY_MARGIN,
    top_k: int = 0,
    seed: int = 0,
    probes: ProbeSet | None = None,
    same_data_controls: bool = False,
    candidates_as_controls: bool = True,
    early_stop: bool = True,
    wait_for_identity: bool = True,
    samples: int = 0,
    distribution: bool = False,
    distribution_plan: DistributionPlan | None = None,
    progress: Progress | None = None,
) -> ProbeResult:
    """Probe ``suspect`` against ``candidates`` (see the module docstring). ``budget``:
    the most prompts asked of any model; ``probes`` (default: drawn with ``seed`` from
    held-out text). ``same_data_controls`` says the controls are independent models
    trained on the candidates' data, so the derivation test also answers distillation;
    ``early_stop=False`` asks all ``budget`` prompts (for benchmarks of the evidence);
    ``wait_for_identity=False`` stops once derivation is decided (identity as it stands);
    ``samples``: the suspect's token is the mode of that many samples; ``distribution``:
    the distribution test per candidate, sampled as ``distribution_plan`` says."""
    _check(budget, batch, alpha, margin, samples)
    controls = dict(controls or {})
    plan = _plan(candidates, controls, candidates_as_controls)
    probes = probes if probes is not None else default_probes(budget, seed)
    clients: dict[str, Client] = {SUSPECT: suspect, **candidates, **controls}
    before = {name: client.queries for name, client in clients.items()}
    state = _State(
        plan,
        {(x, c): ControlTest(c, margin) for x, cs in plan.items() for c in cs},
        {x: IdentityTest.start(x, tolerance, identity_margin) for x in plan},
        {name: (0, 0) for name in clients if name != SUSPECT},
        wait_for_identity=wait_for_identity,
    )
    asking = _Asking(top_k, sampling_seeds(seed, samples, 1) if samples else ())
    state, stopped = _run(
        state, clients, probes.prompts[:budget], batch, alpha, asking, early_stop, progress
    )
    sampling = (distribution_plan or DistributionPlan()) if distribution else None
    tests, spent = _distributions(clients, list(state.plan), probes, sampling, seed)
    settings = Settings(
        budget, batch, alpha, margin, tolerance, identity_margin, top_k, seed,
        same_data_controls, candidates_as_controls, samples, distribution,
    )  # fmt: skip
    queries = {_label(n, clients): c.queries - before[n] for n, c in clients.items()}
    return _result(state, clients, probes, queries, stopped if spent else "client budget",
                   settings, tests)  # fmt: skip


def _distributions(
    clients: Mapping[str, Client],
    names: Sequence[str],
    probes: ProbeSet,
    plan: DistributionPlan | None,
    seed: int,
) -> tuple[dict[str, tuple[DistributionTest, ...]], bool]:
    """Each candidate's distribution tests (none without a plan), and whether every one
    ran (False: a client's budget ran out first)."""
    found: dict[str, tuple[DistributionTest, ...]] = {}
    if plan is None:
        return found, True
    prompts = probes.prompts[: plan.prompts]
    seeds = sampling_seeds(seed, 2 * plan.continuations, 2)
    mine, theirs = seeds[: plan.continuations], seeds[plan.continuations :]
    rng = np.random.default_rng([seed, 3])
    try:
        suspect = sampled_continuations(
            clients[SUSPECT], prompts, mine, max_tokens=plan.max_tokens,
            temperature=plan.temperature,
        )  # fmt: skip
        for name in names:
            found[name] = distribution_tests(
                suspect, clients[name], prompts, plan, rng, seeds=theirs, seed=seed
            )
    except BudgetExhaustedError:
        return found, False
    return found, True


def _run(
    state: _State,
    clients: Mapping[str, Client],
    prompts: Sequence[str],
    batch: int,
    alpha: float,
    asking: _Asking,
    early_stop: bool,
    progress: Progress | None,
) -> tuple[_State, str]:
    """Ask batch after batch; the final state and why it stopped."""
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        try:
            needed = state.needed(alpha) if early_stop else set(clients)
            answers = _ask(clients, needed, chunk, asking)
        except BudgetExhaustedError:
            return state, "client budget"
        state = state.look(answers, alpha, freeze=early_stop)
        if progress is not None:
            progress(_line(state, alpha))
        if early_stop and state.decided(alpha):
            return state, "decisive"
    return state, "budget"


def _label(name: str, clients: Mapping[str, Client]) -> str:
    return clients[name].name if name == SUSPECT else name


def _line(state: _State, alpha: float) -> str:
    verdicts = state.verdicts(alpha)
    words = ", ".join(f"{name} {verdict}" for name, verdict in verdicts.items())
    return f"{state.asked} prompts: {words}"


def _result(
    state: _State,
    clients: Mapping[str, Client],
    probes: ProbeSet,
    queries: Mapping[str, int],
    stopped: str,
    settings: Settings,
    distributions: Mapping[str, tuple[DistributionTest, ...]],
) -> ProbeResult:
    alpha = settings.alpha
    verdicts, adjusted = state.verdicts(alpha), state.adjusted()
    found = []
    for name, controls in state.plan.items():
        test = state.identity[name]
        found.append(
            CandidateResult(
                name,
                agreement(name, *state.hits[name]),
                tuple(state.tests[(name, c)] for c in controls),
                tuple(adjusted[(name, c)] for c in controls),
                verdicts[name],
                test,
                test.verdict(alpha),
                state.decided_at.get(name),
                state.identity_at.get(name),
                settings.samples,
                distributions.get(name, ()),
            )
        )
    others = [n for n in clients if n != SUSPECT and n not in state.plan]
    return ProbeResult(
        clients[SUSPECT].name,
        tuple(found),
        tuple(agreement(n, *state.hits[n]) for n in others),
        probes,
        state.asked,
        queries,
        stopped,
        settings,
    )
