"""The behaviour tier's statistics on scripted clients, then the probe on the mini zoo.

Scripted clients answer each prompt from a hash of (prompt, rule), so agreement
structures are exact and cost nothing: a "derived" suspect copies its parent on a
fixed share of prompts, unrelated models share only a common answer on some prompts.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forebear.behavior.agreement import ControlTest, agreement, discordant
from forebear.behavior.base import BudgetExhaustedError, TokenAnswer
from forebear.behavior.identity import IdentityTest, top_k_total_variation
from forebear.behavior.probe import greedy_token, probe
from forebear.behavior.prompts import ProbeSet, draw_probes
from forebear.behavior.sequential import (
    RateEvidence,
    exact_binomial_log10_p,
    mixture_log10_e,
)
from forebear.errors import ForebearError
from forebear.stats import holm, holm_adjusted

if TYPE_CHECKING:
    from forebear.zoo.build import ZooBuild

TEXT = "\n".join(
    f"def function_{i}(value, other={i}):\n    return value * {i} + other  # line {i}"
    for i in range(300)
)


def _unit(prompt: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


Rule = Callable[[str], str]


def unrelated(name: str, shared: float = 0.3) -> Rule:
    """A model that gives the common answer on a share of prompts and its own otherwise."""

    def rule(p: str) -> str:
        if _unit(p, "common") < shared and _unit(p, name + "/common") < 0.8:
            return "common"
        return f"{name}{int(_unit(p, name) * 3)}"

    return rule


def derived(parent: Rule, name: str, keep: float) -> Rule:
    """A model that copies ``parent`` on a share ``keep`` of prompts."""
    return lambda p: parent(p) if _unit(p, name + "/keep") < keep else unrelated(name)(p)


class Scripted:
    """A ``Client`` answering from a rule; counts queries, may have a budget."""

    def __init__(self, name: str, rule: Rule, *, budget: int | None = None, logprobs: bool = False):
        self._name, self.rule, self.budget, self.logprobs = name, rule, budget, logprobs
        self._queries = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def queries(self) -> int:
        return self._queries

    def next_token(self, prompts: Sequence[str], *, top_k: int = 0) -> list[TokenAnswer]:
        if self.budget is not None and self._queries + len(prompts) > self.budget:
            raise BudgetExhaustedError("over budget", path=self._name)
        self._queries += len(prompts)
        answers = []
        for prompt in prompts:
            token = self.rule(prompt)
            top = {token: -0.5, "other": -1.5} if self.logprobs and top_k else None
            answers.append(TokenAnswer(token, top))
        return answers

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 16,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        return [self.rule(p) for p in prompts]


def probes(count: int = 3000, seed: int = 7) -> ProbeSet:
    return draw_probes(TEXT, count, np.random.default_rng(seed), source="test text", seed=seed)


def clients(rules: Mapping[str, Rule]) -> dict[str, Scripted]:
    return {name: Scripted(name, rule) for name, rule in rules.items()}


# --- the arithmetic ---------------------------------------------------------------------------


@given(
    st.integers(0, 300),
    st.integers(0, 300),
    st.floats(0.05, 0.95),
    st.sampled_from(["greater", "less"]),
)
def test_mixture_e_value_is_a_martingale_at_the_boundary(
    s: int, f: int, q0: float, alternative: str
) -> None:
    ln10 = math.log(10)
    now = mixture_log10_e(s, f, q0, alternative) * ln10  # type: ignore[arg-type]
    one = mixture_log10_e(s + 1, f, q0, alternative) * ln10  # type: ignore[arg-type]
    zero = mixture_log10_e(s, f + 1, q0, alternative) * ln10  # type: ignore[arg-type]
    expected = np.logaddexp(math.log(q0) + one, math.log1p(-q0) + zero)
    if math.isfinite(now):
        assert expected == pytest.approx(now, rel=1e-6, abs=1e-6)


def test_mixture_e_value_starts_at_one_and_grows_with_evidence() -> None:
    assert mixture_log10_e(0, 0, 0.5, "greater") == pytest.approx(0.0, abs=1e-12)
    assert mixture_log10_e(80, 20, 0.5, "greater") > 5 > mixture_log10_e(55, 45, 0.5, "greater")
    assert mixture_log10_e(20, 80, 0.5, "less") > 5
    with pytest.raises(ValueError, match="strictly between"):
        mixture_log10_e(1, 1, 1.0, "greater")


def _sequential_rejections(q: float, alpha: float, runs: int, rng: np.random.Generator) -> float:
    """Share of runs in which a test of q ≤ ½, looking after every batch of 25 outcomes
    for 40 batches, ever rejects at ``alpha``."""
    rejected = 0
    for _ in range(runs):
        evidence = RateEvidence(0.5, "greater")
        for ones in rng.binomial(25, q, size=40):
            evidence = evidence.look(int(ones), 25 - int(ones))
            if evidence.rejects(alpha):
                rejected += 1
                break
    return rejected / runs


def test_sequential_test_keeps_its_level_under_the_null_despite_forty_looks() -> None:
    rng = np.random.default_rng(2024)
    alpha, runs = 0.05, 300
    for q in (0.5, 0.45):  # the boundary and inside the null
        rate = _sequential_rejections(q, alpha, runs, rng)
        assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    # A fixed-sample binomial test looked at 40 times does not keep it (why e-values).
    naive = 0
    for _ in range(runs):
        ones = np.cumsum(rng.binomial(25, 0.5, size=40))
        trials = 25 * np.arange(1, 41)
        looks = zip(ones, trials, strict=True)
        if min(exact_binomial_log10_p(int(o), int(n), 0.5) for o, n in looks) <= -1.3:
            naive += 1
    assert naive / runs > alpha


def test_sequential_test_has_power_on_a_clear_lead() -> None:
    rng = np.random.default_rng(5)
    assert _sequential_rejections(0.7, 0.01, 100, rng) >= 0.95


def test_holm_adjusts_step_down() -> None:
    ps = [0.01, 0.04, 0.03, 0.005]
    adjusted = [10**v for v in holm_adjusted([math.log10(p) for p in ps])]
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([math.log10(p) for p in ps], 0.05) == [True, False, False, True]
    assert holm([], 0.05) == []


def test_discordant_counts_and_agreement_interval() -> None:
    suspect, x, c = ["a", "b", "c", "d"], ["a", "b", "z", "d"], ["a", "y", "c", "q"]
    assert discordant(suspect, x, c) == (2, 1)
    rate = agreement("x", 30, 100)
    assert rate.rate == 0.3 and rate.low < 0.3 < rate.high
    test = ControlTest("c", 0.1).look(30, 5)
    assert (
        test.x_only == 30 and test.control_only == 5 and test.lead == pytest.approx(30 / 35 - 0.5)
    )
    assert test.log10_p < -3 and test.fixed_log10_p < test.log10_p  # fixed is optimistic


def test_identity_test_decides_same_and_different() -> None:
    same = IdentityTest.start("x").look(0, 300, [])
    assert same.verdict(0.01) == "same"
    different = IdentityTest.start("x").look(60, 240, [])
    assert different.verdict(0.01) == "different"
    assert IdentityTest.start("x").look(0, 10, []).verdict(0.01) == "undetermined"
    assert top_k_total_variation({"a": 0.0}, {"b": 0.0}) is None
    assert top_k_total_variation({"a": -0.1, "b": -2.0}, {"a": -0.1, "b": -2.0}) == 0.0


def test_greedy_token_reads_the_top_log_probability() -> None:
    assert greedy_token(TokenAnswer("sampled", {"best": -0.2, "sampled": -1.9})) == "best"
    assert greedy_token(TokenAnswer("only")) == "only"


# --- the probe on scripted clients ------------------------------------------------------------


def _world() -> dict[str, Rule]:
    parent = unrelated("parent")
    return {
        "parent": parent,
        "child": derived(parent, "child", keep=0.6),
        "control1": unrelated("control1"),
        "control2": unrelated("control2"),
        "control3": unrelated("control3"),
    }


def test_probe_finds_a_derivative_and_stops_early() -> None:
    world = _world()
    suspect = Scripted("suspect", world["child"])
    models = clients(world)
    controls = {n: models[n] for n in ("control1", "control2", "control3")}
    result = probe(
        suspect, {"parent": models["parent"]}, controls, budget=3000, batch=50, probes=probes()
    )
    assert result.verdict == "derived" and result.derived == ("parent",)
    assert result.stopped == "decisive" and result.prompts_used < 3000
    assert result.queries["suspect"] == suspect.queries == result.prompts_used
    assert result.candidates[0].decided_at is not None
    assert result.candidates[0].decided_at <= result.prompts_used
    [candidate] = result.candidates
    assert candidate.log10_p <= -2
    assert [t.control for t in candidate.controls] == ["control1", "control2", "control3"]
    assert candidate.identity_verdict == "different"
    data = json.loads(json.dumps(result.to_json()))
    assert data["summary"].startswith("Behavioural evidence (not weight evidence)")
    assert set(data["questions"]) == {"identity", "derivation", "distillation"}
    assert data["candidates"][0]["derivation"]["answers"] == ["derivation", "distillation"]
    assert data["prompts"]["sha256"] == probes().sha256 and data["prompts"]["used"] < 3000


def test_probe_can_stop_at_the_derivation_verdict_without_waiting_for_identity() -> None:
    world = _world()
    models = clients(world)
    suspect = Scripted("suspect", derived(world["parent"], "close", keep=0.93))
    args = (suspect, {"parent": models["parent"]}, {"c": models["control1"]})
    waiting = probe(*args, budget=3000, batch=50, probes=probes())
    quick = probe(*args, budget=3000, batch=50, probes=probes(), wait_for_identity=False)
    assert quick.derived == waiting.derived == ("parent",)
    assert quick.prompts_used == quick.candidates[0].decided_at
    assert quick.prompts_used < waiting.prompts_used


def test_probe_does_not_call_an_unrelated_suspect_derived() -> None:
    world = _world()
    models = clients(world)
    suspect = Scripted("suspect", unrelated("stranger"))
    result = probe(
        suspect,
        {"parent": models["parent"], "child": models["child"]},
        {"control1": models["control1"]},
        budget=3000,
        batch=100,
        probes=probes(),
    )
    assert result.verdict == "none"  # futility: each candidate is kept up with
    assert result.stopped == "decisive" and result.prompts_used < 3000
    assert all(c.verdict == "not_closer" for c in result.candidates)


def test_candidates_control_each_other_and_holm_spans_every_test() -> None:
    world = _world()
    models = clients(world)
    result = probe(
        Scripted("suspect", world["child"]),
        {"parent": models["parent"], "control1": models["control1"]},
        {"control2": models["control2"]},
        budget=2000,
        probes=probes(),
    )
    by_name = {c.name: c for c in result.candidates}
    assert [t.control for t in by_name["parent"].controls] == ["control2", "control1"]
    assert by_name["parent"].verdict == "closer" and by_name["control1"].verdict == "not_closer"
    raw = [t.log10_p for c in result.candidates for t in c.controls]
    adjusted = [a for c in result.candidates for a in c.adjusted_log10_p]
    assert all(a >= r for a, r in zip(adjusted, raw, strict=True))
    assert result.nearest == "parent"


def test_identity_same_for_the_model_itself() -> None:
    world = _world()
    models = clients(world)
    suspect = Scripted("endpoint", world["parent"], logprobs=True)
    models["parent"].logprobs = True
    result = probe(
        suspect,
        {"parent": models["parent"]},
        {"control1": models["control1"]},
        budget=2000,
        top_k=2,
        probes=probes(),
    )
    [candidate] = result.candidates
    assert candidate.identity_verdict == "same" and candidate.verdict == "closer"
    assert candidate.identity.mean_tv == 0.0
    assert result.to_json()["candidates"][0]["identity"]["answers"] == ["identity"]


def test_a_client_budget_stops_the_probe_cleanly() -> None:
    world = _world()
    models = clients(world)
    suspect = Scripted("suspect", unrelated("x", shared=0.31), budget=200)
    result = probe(
        suspect, {"parent": models["parent"]}, {"c": models["control1"]}, batch=100, probes=probes()
    )
    assert result.stopped == "client budget" and result.prompts_used == 200


@pytest.mark.parametrize(
    ("candidates", "controls", "message"),
    [
        ({}, {"c": 1}, "no candidates"),
        ({"a": 1}, {"a": 1}, "both as a candidate and as a control"),
        ({"a": 1}, {}, "has no control"),
    ],
)
def test_probe_refuses_bad_setups(
    candidates: dict[str, int], controls: dict[str, int], message: str
) -> None:
    def make(names: dict[str, int]) -> dict[str, Scripted]:
        return {name: Scripted(name, unrelated(name)) for name in names}

    with pytest.raises(ForebearError, match=message):
        probe(Scripted("s", unrelated("s")), make(candidates), make(controls), probes=probes(10))


def test_probe_sets_are_reproducible_and_hashed() -> None:
    a, b, c = probes(200, 1), probes(200, 1), probes(200, 2)
    assert a.prompts == b.prompts and a.sha256 == b.sha256 != c.sha256
    assert all(p.strip() for p in a.prompts)
    assert any(p not in TEXT for p in a.prompts)  # random-word prompts are there too
    with pytest.raises(ForebearError, match="too short"):
        draw_probes("short", 5, np.random.default_rng(0), source="x")


# --- the mini zoo and the command line --------------------------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from forebear.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def zoo_paths(mini: ZooBuild) -> dict[str, str]:
    names = ("llama-a", "llama-a-ft", "llama-b", "llama-c")
    return {name: str(mini.manifest.model_path(name)) for name in names}


def test_a_fine_tune_is_found_derived_from_its_base_by_behaviour(
    zoo_paths: dict[str, str],
) -> None:
    from forebear.behavior.local import LocalClient

    local = {name: LocalClient(path) for name, path in zoo_paths.items()}
    result = probe(
        local["llama-a-ft"],
        {"llama-a": local["llama-a"]},
        {"llama-b": local["llama-b"], "llama-c": local["llama-c"]},
        budget=600,
        batch=100,
        seed=3,
    )
    assert result.derived == ("llama-a",), result.to_json()
    assert result.queries[local["llama-a-ft"].name] == result.prompts_used <= 600


def test_cli_probe_on_local_folders(
    zoo_paths: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cache = str(tmp_path / "answers.sqlite")
    argv = ["probe", zoo_paths["llama-a-ft"], "--candidates", zoo_paths["llama-a"],
            "--controls", f"{zoo_paths['llama-b']},{zoo_paths['llama-c']}", "--budget", "600",
            "--seed", "3", "--cache", cache, "-q", "-f", "json"]  # fmt: skip
    code, out, err = _run(argv, capsys)
    data = json.loads(out)
    assert code == 3 and err == ""
    assert data["kind"] == "behaviour" and data["derived_from"] == [zoo_paths["llama-a"]]
    code, out, _ = _run(argv[:-2], capsys)  # again, as text, from the cache
    assert code == 3 and out.startswith("Behavioural evidence (not weight evidence):")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["probe", "/nonexistent/model", "--candidates", "/also/missing"], "no such model folder"),
        (["probe", "http://127.0.0.1:9/v1", "--candidates", "x"], "not an endpoint reference"),
        (["probe", "http://127.0.0.1:9/v1#m"], "no candidates"),
        (["probe", "x", "--candidates", "a,a"], "a model is named twice"),
    ],
)
def test_cli_probe_refuses_bad_input_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and message in err


def test_the_behaviour_zoo_profile_gives_every_student_same_data_controls() -> None:
    from forebear.zoo.profiles import check_specs, profile_specs

    specs = {spec.name: spec for spec in check_specs(profile_specs("behaviour"))}
    bases = [s for s in specs.values() if s.kind == "base"]
    assert {s.tokenizer for s in bases} == {"bpe-a"}  # token strings compare
    students = [s for s in specs.values() if s.kind == "distilled"]
    assert len(students) == 4
    for student in students:
        teacher = specs[student.parents[0]]
        same = [b for b in bases if b.data == teacher.data and b.name != teacher.name]
        assert sum(b.family == teacher.family for b in same) >= 2
        assert any(b.family == student.family for b in same)
