"""Identity from sampled answers: the modal token and the two-sample distribution tests.

Scripted samplers draw from a categorical distribution per prompt (seeded by the call's
seed and the prompt), so the permutation tests' level and power are checked by Monte
Carlo at no model cost; a tiny llama served at a temperature checks the modal token.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from forebear.behavior.base import TokenAnswer
from forebear.behavior.distribution import (
    DistributionPlan,
    kernel_matrix,
    likelihood_test,
    mmd_test,
    modal_answers,
    modal_token,
    sampling_seeds,
)
from forebear.behavior.probe import probe
from test_behavior_probe import Scripted, clients, probes, unrelated

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", " ", "(", ")")


def _draw(prompt: str, seed: int | None, weights: Sequence[float], length: int = 4) -> str:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    return "".join(WORDS[i] for i in rng.choice(len(weights), size=length, p=weights))


class Sampler(Scripted):
    """A scripted client whose ``generate`` samples words from fixed weights."""

    def __init__(self, name: str, weights: Sequence[float]) -> None:
        super().__init__(name, unrelated(name))
        self.weights = np.asarray(weights) / np.sum(weights)

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 16,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        self._queries += len(prompts)
        return [_draw(p, seed, self.weights, max(1, max_tokens // 2)) for p in prompts]


FLAT = [1, 1, 1, 1, 1, 1, 1, 1]
TILTED = [6, 1, 1, 1, 1, 1, 1, 1]


def _samples(weights: Sequence[float], prompts: Sequence[str], seeds: range) -> list[list[str]]:
    return [[_draw(p, s, np.asarray(weights) / sum(weights)) for s in seeds] for p in prompts]


def _rejections(other: Sequence[float], runs: int, alpha: float) -> tuple[float, float]:
    """Share of runs each test rejects (x from FLAT, y from ``other``); 16 prompts × 4."""
    rng = np.random.default_rng(11)
    mmd = lik = 0
    weights = np.asarray(FLAT) / sum(FLAT)
    for run in range(runs):
        prompts = [f"prompt {run} {i}" for i in range(16)]
        x = _samples(FLAT, prompts, range(0, 4))
        y = _samples(other, prompts, range(4, 8))
        mmd += mmd_test(x, y, rng, permutations=199).p_value <= alpha
        score = {w: math.log(p) for w, p in zip(WORDS, weights, strict=True)}
        fx = [[sum(score.get(c, 0.0) for c in s) for s in row] for row in x]
        fy = [[sum(score.get(c, 0.0) for c in s) for s in row] for row in y]
        lik += likelihood_test(fx, fy, rng, permutations=199).p_value <= alpha
    return mmd / runs, lik / runs


def test_the_permutation_tests_keep_their_level_under_the_null() -> None:
    alpha, runs = 0.1, 150
    mmd, lik = _rejections(FLAT, runs, alpha)
    slack = 3 * math.sqrt(alpha * (1 - alpha) / runs)
    assert mmd <= alpha + slack and lik <= alpha + slack


def test_the_permutation_tests_have_power_on_different_distributions() -> None:
    mmd, lik = _rejections(TILTED, 30, 0.05)
    assert mmd >= 0.8 and lik >= 0.8


def test_p_values_follow_the_permutation_convention() -> None:
    rng = np.random.default_rng(0)
    same = [["aaa", "aaa"] for _ in range(5)]
    test = mmd_test(same, same, rng, permutations=99)
    assert test.p_value == 1.0 and test.statistic == pytest.approx(0.0)  # all ties
    apart = mmd_test([["aaaa", "aaab"]] * 6, [["zzzz", "zzzy"]] * 6, rng, permutations=999)
    assert apart.p_value <= 0.01  # a split as extreme in all 6 prompts: (1/3)^6 of splits
    assert apart.null_kind == "empirical" and "same sampling distribution" in apart.null
    with pytest.raises(ValueError, match="m ≥ 2"):
        mmd_test([["a"]], [["b"]], rng)


def test_the_spectrum_kernel_is_a_cosine() -> None:
    gram = kernel_matrix(["abc", "abc", "xyz", ""])
    assert np.allclose(np.diag(gram), 1.0) and gram[0, 1] == pytest.approx(1.0)
    assert 0.0 <= gram[0, 2] < 0.5 and np.allclose(gram, gram.T)
    assert np.linalg.eigvalsh(gram).min() > -1e-9


def test_the_modal_token_breaks_ties_by_the_first_drawn() -> None:
    assert modal_token(["b", "a", "a", "b", "c"]) == ("b", 2)
    assert modal_token(["x"]) == ("x", 1)
    seeds = sampling_seeds(3, 6, 1)
    assert len(set(seeds)) == 6 and seeds == sampling_seeds(3, 6, 1) != sampling_seeds(3, 6, 2)


def test_probe_with_samples_and_distribution_on_scripted_samplers() -> None:
    models = clients({"control": unrelated("control")})
    suspect = Sampler("suspect", FLAT)
    plan = DistributionPlan(prompts=16, continuations=4, permutations=199)
    result = probe(
        suspect,
        {"same": Sampler("same", FLAT), "tilted": Sampler("tilted", [9, 1, 1, 1, 1, 1, 1, 1])},
        {"control": models["control"]},
        budget=100, batch=50, probes=probes(200), samples=3, distribution=True,
        distribution_plan=plan, wait_for_identity=False,
    )  # fmt: skip
    by_name = {c.name: c for c in result.candidates}
    assert by_name["tilted"].distribution[0].p_value <= 0.01
    assert by_name["same"].distribution[0].p_value > 0.01
    assert suspect.queries == 3 * result.prompts_used + plan.queries
    data = json.loads(json.dumps(result.to_json()))
    assert data["settings"]["samples"] == 3 and data["settings"]["distribution"] is True
    [mmd] = data["candidates"][0]["distribution"]
    assert mmd["answers"] == ["identity"] and mmd["continuations_per_side"] == 4
    assert data["candidates"][0]["identity"]["samples_per_prompt"] == 3


def test_the_json_is_unchanged_when_the_options_are_off() -> None:
    models = clients({"a": unrelated("a"), "b": unrelated("b")})
    result = probe(Scripted("s", unrelated("s")), models, budget=100, probes=probes(100))
    data = result.to_json()
    assert "samples" not in data["settings"] and "distribution" not in data["settings"]
    assert all("distribution" not in c for c in data["candidates"])
    assert "samples_per_prompt" not in data["candidates"][0]["identity"]


# --- a tiny llama served at a temperature ----------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A peaked tiny llama served plainly and at T 0.7; another llama's folder."""
    pytest.importorskip("torch")
    from behavior_models import tiny_llama
    from forebear.behavior.server import Served, serve_models

    root = tmp_path_factory.mktemp("tiny")
    folder = tiny_llama(root / "llama", seed=1, init=1.0)
    other = tiny_llama(root / "other", seed=2, init=1.0)
    variants = {"plain": Served(folder), "hot": Served(folder, temperature=0.7, seed=5)}
    with serve_models(variants) as url:
        yield url, str(folder), str(other)


def test_the_modal_token_recovers_the_greedy_token_at_a_temperature(
    served: tuple[str, str, str],
) -> None:
    from forebear.behavior.http import OpenAIClient
    from forebear.behavior.local import LocalClient

    url, folder, _ = served
    prompts = list(probes(40, 3).prompts)
    greedy = [a.token for a in LocalClient(folder).next_token(prompts)]
    hot = OpenAIClient(url, "hot")
    single = [a.token for a in hot.next_token(prompts)]
    modal = [a.token for a in modal_answers(hot, prompts, sampling_seeds(0, 7, 1))]
    hits = sum(m == g for m, g in zip(modal, greedy, strict=True))
    assert hits > sum(s == g for s, g in zip(single, greedy, strict=True))
    assert hits >= 0.9 * len(prompts)
    assert all(isinstance(a, TokenAnswer) for a in modal_answers(hot, prompts[:2], [1, 2]))


def test_cli_samples_and_distribution(
    served: tuple[str, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from forebear.cli import main

    url, folder, other = served
    argv = ["probe", f"{url}#hot", "--candidates", f"{folder},{other}", "--budget", "20",
            "--samples", "5", "--distribution", "--cache", str(tmp_path / "a.sqlite"),
            "-q", "-f", "json"]  # fmt: skip
    code = main(argv)
    data = json.loads(capsys.readouterr().out)
    assert code in (0, 3, 4)
    assert data["settings"]["samples"] == 5 and data["settings"]["distribution"] is True
    local = next(c for c in data["candidates"] if c["name"] == folder)
    assert [t["method"].split()[0] for t in local["distribution"]] == ["two-sample", "difference"]
    assert local["identity"]["samples_per_prompt"] == 5
