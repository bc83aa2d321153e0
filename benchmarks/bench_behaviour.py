"""The behaviour benchmark: ``forebear.behavior.probe`` on the behaviour zoo.

The zoo (``forebear zoo build --profile behaviour``) holds four teachers, per teacher a
distilled student and two independent models of the same data, all on one tokenizer,
and light fine-tunes of two teachers. Four measurements:

a. Distillation: for each teacher T, every suspect trained on T's data that is not T —
   its student (positive) and each independent model of the same data (negative: T's
   own independents, the other same-data teacher, its independents and its student).
   Controls: the independent same-data models of T's corpus, less the suspect itself.
   AUROC and TPR at FPR ≤ 1 % of the evidence (−log10 p, all prompts asked) and of the
   agreement margin over the best control; the verdicts at α = 0.01 with early stopping.
b. Derivation from behaviour alone: each fine-tune and each student against the four
   teachers (closed set, the candidates control each other): is the true teacher the one
   found?
c. Identity behind an endpoint: each teacher served on loopback plainly, behind a system
   prompt and at temperature 0.7, probed against the teachers and students as
   candidates, with greedy tokens only and with top-5 log-probabilities, and at
   temperature 0.7 with the suspect's token the mode of 5 samples: closed-set
   identification (nearest candidate) and the identity test's verdicts. How often the
   modal token of 1, 5, 9 samples at T 0.7 is the greedy one. The distribution tests
   (MMD and candidate likelihood, 32 prompts × 4 continuations of 8 tokens a side):
   rejection rates for the same model at the same temperature (calibration), at T 1.0
   against 0.7, behind a system prompt, a distilled student, and other teachers.
d. Prompts per verdict with early stopping, median and max.

Writes benchmarks/results/behaviour.json and behaviour.md. Usage:
    python benchmarks/bench_behaviour.py [--zoo benchmarks/.work/zoo-behaviour]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from forebear.behavior.base import Client
from forebear.behavior.cache import ResponseCache
from forebear.behavior.distribution import (
    DistributionPlan,
    likelihood_test,
    mmd_test,
    modal_token,
    sampled_continuations,
)
from forebear.behavior.http import OpenAIClient
from forebear.behavior.local import LocalClient, LocalModel
from forebear.behavior.probe import default_probes, probe
from forebear.behavior.prompts import ProbeSet
from forebear.behavior.result import ProbeResult
from forebear.behavior.server import Served, serve_models
from forebear.bench.metrics import auroc, tpr_at_fpr
from forebear.zoo.manifest import load_manifest

ROOT = Path(__file__).resolve().parent
ALPHA = 0.01
BUDGET = 1000
SYSTEM_PROMPT = "# You are a careful assistant. Answer in the style of the Python docs.\n"


class Zoo:
    """The zoo's models, each loaded once, as clients sharing one response cache."""

    def __init__(self, root: Path, cache: ResponseCache) -> None:
        self.manifest = load_manifest(root)
        self.models = self.manifest.models
        self.cache = cache
        self._loaded: dict[str, LocalModel] = {}

    def model(self, name: str) -> LocalModel:
        if name not in self._loaded:
            self._loaded[name] = LocalModel(self.manifest.model_path(name))
        return self._loaded[name]

    def client(self, name: str) -> LocalClient:
        return LocalClient(self.model(name), cache=self.cache)

    def clients(self, names: list[str]) -> dict[str, Client]:
        return {name: self.client(name) for name in names}

    def teachers(self) -> list[str]:
        return sorted(n for n in self.models if n.startswith("teacher") and n.count("-") == 1)

    def data(self, name: str) -> str:
        return str(self.models[name].data)


def _margin(result: ProbeResult) -> float:
    [candidate] = result.candidates
    rates = {a.model: a.rate for a in result.control_agreement}
    return candidate.agreement.rate - max(rates.values())


def distillation(zoo: Zoo, probes: ProbeSet) -> dict[str, Any]:
    rows = []
    for teacher in zoo.teachers():
        corpus = zoo.data(teacher)
        same = [n for n in zoo.models if n != teacher and zoo.data(n) == corpus]
        pool = [n for n in same if zoo.models[n].kind == "base"]
        suspects = [n for n in same if zoo.models[n].kind in ("base", "distilled")]
        for suspect in suspects:
            controls = zoo.clients([n for n in pool if n != suspect])
            common = dict(budget=BUDGET, batch=50, alpha=ALPHA, probes=probes,
                          same_data_controls=True)  # fmt: skip
            args = (zoo.client(suspect), {teacher: zoo.client(teacher)}, controls)
            fixed = probe(*args, early_stop=False, **common)  # type: ignore[arg-type]
            early = probe(*args, wait_for_identity=False, **common)  # type: ignore[arg-type]
            rows.append({
                "teacher": teacher, "suspect": suspect,
                "positive": suspect == f"{teacher}-student",
                "controls": sorted(controls),
                "score_log10_p": -fixed.candidates[0].log10_p,
                "score_margin": _margin(fixed),
                "verdict": early.candidates[0].verdict,
                "prompts": early.prompts_used, "stopped": early.stopped,
            })  # fmt: skip
            print(f"bench_behaviour: distillation {teacher} <- {suspect}: {rows[-1]}", flush=True)
    return {"rows": rows, **_rates(rows)}


def confound(zoo: Zoo, probes: ProbeSet) -> dict[str, Any]:
    """Ablation: an independent same-data model of the teacher's architecture as suspect,
    with every control of that architecture left out. How often is it called closer?"""
    rows = []
    for teacher in zoo.teachers():
        family = zoo.models[teacher].family
        same = [n for n in zoo.models if n != teacher and zoo.data(n) == zoo.data(teacher)]
        pool = [n for n in same if zoo.models[n].kind == "base"]
        for suspect in [n for n in pool if zoo.models[n].family == family]:
            controls = zoo.clients([n for n in pool if zoo.models[n].family != family])
            result = probe(zoo.client(suspect), {teacher: zoo.client(teacher)}, controls,
                           budget=BUDGET, batch=50, alpha=ALPHA, probes=probes,
                           wait_for_identity=False)  # fmt: skip
            rows.append({"teacher": teacher, "suspect": suspect, "family": family,
                         "verdict": result.candidates[0].verdict,
                         "log10_p": result.candidates[0].log10_p})  # fmt: skip
    called = sum(r["verdict"] == "closer" for r in rows)
    return {"rows": rows, "called_closer": called, "n": len(rows)}


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for score in ("score_log10_p", "score_margin"):
        pos = [r[score] for r in rows if r["positive"]]
        neg = [r[score] for r in rows if not r["positive"]]
        at = tpr_at_fpr(pos, neg, 0.01)
        found[score] = {"auroc": auroc(pos, neg), "tpr_at_fpr_1pct": at.tpr, "fpr": at.fpr,
                        "n_positive": at.n_positive, "n_negative": at.n_negative,
                        "below_resolution": at.below_resolution}  # fmt: skip
    positives = [r for r in rows if r["positive"]]
    negatives = [r for r in rows if not r["positive"]]
    found["verdict_tpr"] = sum(r["verdict"] == "closer" for r in positives) / len(positives)
    found["verdict_fpr"] = sum(r["verdict"] == "closer" for r in negatives) / len(negatives)
    return found


def derivation(zoo: Zoo, probes: ProbeSet) -> dict[str, Any]:
    teachers = zoo.teachers()
    suspects = [n for n in zoo.models if zoo.models[n].parents]
    rows: list[dict[str, Any]] = []
    for suspect in suspects:
        truth = zoo.models[suspect].parents[0]
        result = probe(zoo.client(suspect), zoo.clients(teachers), budget=BUDGET, batch=50,
                       alpha=ALPHA, probes=probes, wait_for_identity=False)  # fmt: skip
        rows.append({
            "suspect": suspect, "kind": zoo.models[suspect].kind, "truth": truth,
            "derived_from": list(result.derived), "nearest": result.nearest,
            "correct": result.derived == (truth,), "prompts": result.prompts_used,
            "stopped": result.stopped,
        })  # fmt: skip
        print(f"bench_behaviour: derivation {suspect}: {rows[-1]}", flush=True)
    by_kind = {
        kind: sum(r["correct"] for r in rows if r["kind"] == kind)
        / max(1, sum(r["kind"] == kind for r in rows))
        for kind in ("derived", "distilled")
    }
    return {"rows": rows, "correct_rate": by_kind}


CONDITIONS: Mapping[str, dict[str, Any]] = {
    "plain": {},
    "system prompt": {"system_prompt": SYSTEM_PROMPT},
    "temperature 0.7": {"temperature": 0.7, "seed": 11},
}


def identity(zoo: Zoo, probes: ProbeSet) -> dict[str, Any]:
    teachers = zoo.teachers()
    candidates = [*teachers, *(f"{t}-student" for t in teachers)]
    served = {
        f"{t}|{c}": Served(zoo.model(t), **o) for t in teachers for c, o in CONDITIONS.items()
    }
    rows = []
    with serve_models(served) as url:
        for name in served:
            teacher, condition = name.split("|")
            modal = ((0, MODAL),) if condition == "temperature 0.7" else ()
            for top_k, samples in ((0, 0), (5, 0), *modal):
                endpoint = OpenAIClient(url, name, cache=zoo.cache)
                result = probe(endpoint, zoo.clients(candidates), budget=BUDGET, batch=50,
                               alpha=ALPHA, top_k=top_k, probes=probes,
                               samples=samples)  # fmt: skip
                row = _identity_row(result, teacher, condition, top_k)
                rows.append(row | {"samples": samples, "suspect_queries": endpoint.queries})
                print(f"bench_behaviour: identity {name} top-{top_k} s{samples}: {rows[-1]}")
    return {"rows": rows, "summary": _identity_summary(rows)}


MODAL = 5  # samples per prompt for the modal-token identity


def modal_agreement(zoo: Zoo, probes: ProbeSet, count: int = 500) -> dict[str, Any]:
    """How often the modal token of k samples at T 0.7 is the greedy token, and how often
    two independent modes of 5 agree (per teacher, ``count`` prompts)."""
    prompts, rows = probes.prompts[:count], []
    for teacher in zoo.teachers():
        greedy = [a.token for a in zoo.client(teacher).next_token(prompts)]
        hot = LocalClient(zoo.model(teacher), temperature=0.7)
        draws = [hot.generate(prompts, max_tokens=1, temperature=0.0, seed=s) for s in range(10)]
        per = list(zip(*draws, strict=True))
        row: dict[str, Any] = {"teacher": teacher, "prompts": count}
        for k in (1, 5, 9):
            modes = [modal_token(d[:k])[0] for d in per]
            row[f"modal_{k}_is_greedy"] = statistics.mean(
                a == b for a, b in zip(modes, greedy, strict=True)
            )
        halves = [(modal_token(d[:5])[0], modal_token(d[5:])[0]) for d in per]
        row["modal_5_self_agreement"] = statistics.mean(a == b for a, b in halves)
        row["modal_5_tied"] = statistics.mean(modal_token(d[:5])[1] <= 2 for d in per)
        rows.append(row)
        print(f"bench_behaviour: modal {row}", flush=True)
    keys = [k for k in rows[0] if k not in ("teacher", "prompts")]
    return {"rows": rows, "mean": {k: statistics.mean(r[k] for r in rows) for k in keys}}


PLAN = DistributionPlan(prompts=32, continuations=4, max_tokens=8, temperature=0.7)
CAL_BLOCKS, POWER_BLOCKS = 8, 3  # 32-prompt tests per teacher: calibration, power


def _draw(client: LocalClient, prompts: list[str], first: int) -> list[tuple[str, ...]]:
    seeds = range(first, first + PLAN.continuations)
    return sampled_continuations(client, prompts, list(seeds), max_tokens=PLAN.max_tokens,
                                 temperature=PLAN.temperature)  # fmt: skip


def distribution(zoo: Zoo, probes: ProbeSet) -> dict[str, Any]:
    """Rejection rates of the two distribution tests (candidate: the teacher at T 0.7)."""
    teachers, size = zoo.teachers(), PLAN.prompts
    prompts = list(probes.prompts[: size * CAL_BLOCKS])
    short = prompts[: size * POWER_BLOCKS]
    own = {t: _draw(zoo.client(t), prompts, 100) for t in teachers}  # the candidate's side
    same = {t: _draw(zoo.client(t), prompts, 200) for t in teachers}
    tests: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for t in teachers:
        model = zoo.model(t)
        variants = {
            "same model, same temperature": same[t],
            "same model, T 1.0 vs 0.7": _draw(LocalClient(model, temperature=1.0), short, 300),
            "same model, system prompt": _draw(
                LocalClient(model, system_prompt=SYSTEM_PROMPT), short, 400),
            "distilled student": _draw(zoo.client(f"{t}-student"), short, 500),
            **{f"other teacher|{o}": same[o] for o in teachers if o != t},
        }  # fmt: skip
        scorer = LocalClient(model)
        for label, drawn in variants.items():
            tests += _tests(label.split("|")[0], t, drawn, own[t][: len(drawn)],
                            prompts[: len(drawn)], scorer, rng)  # fmt: skip
        print(f"bench_behaviour: distribution {t} done", flush=True)
    return {"plan": vars(PLAN) | {"queries_per_side": PLAN.queries}, "tests": tests,
            "summary": _distribution_summary(tests)}  # fmt: skip


def _tests(
    label: str, teacher: str, x: list[tuple[str, ...]], y: list[tuple[str, ...]],
    prompts: list[str], scorer: LocalClient, rng: np.random.Generator,
) -> list[dict[str, Any]]:  # fmt: skip
    m, size, found = PLAN.continuations, PLAN.prompts, []
    flat = [p for p in prompts for _ in range(m)]
    fx, fy = (np.reshape(scorer.score(flat, [s for row in side for s in row],
                                      temperature=PLAN.temperature), (-1, m))
              for side in (x, y))  # fmt: skip
    for start in range(0, len(x), size):
        block = slice(start, start + size)
        mmd = mmd_test(x[block], y[block], rng, permutations=PLAN.permutations)
        lik = likelihood_test(fx[block].tolist(), fy[block].tolist(), rng,
                              permutations=PLAN.permutations)  # fmt: skip
        found.append({"condition": label, "teacher": teacher, "p_mmd": mmd.p_value,
                      "p_likelihood": lik.p_value})  # fmt: skip
    return found


def _distribution_summary(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for condition in dict.fromkeys(t["condition"] for t in tests):
        group = [t for t in tests if t["condition"] == condition]
        row: dict[str, Any] = {"condition": condition, "n": len(group)}
        for test in ("mmd", "likelihood"):
            ps = [t[f"p_{test}"] for t in group]
            for level in (0.01, 0.05):
                row[f"{test}_reject_{level}"] = statistics.mean(p <= level for p in ps)
            row[f"{test}_mean_p"] = statistics.mean(ps)
        found.append(row)
    return found


def _identity_row(result: ProbeResult, teacher: str, condition: str, top_k: int) -> dict[str, Any]:
    by_name = {c.name: c for c in result.candidates}
    own = by_name[teacher]
    others = [c for c in result.candidates if c.name != teacher]
    return {
        "teacher": teacher, "condition": condition, "top_k": top_k,
        "nearest": result.nearest, "nearest_correct": result.nearest == teacher,
        "self_agreement": own.agreement.rate, "identity_verdict": own.identity_verdict,
        "others_different": all(c.identity_verdict == "different" for c in others),
        "mean_top_k_tv": own.identity.mean_tv, "prompts_used": result.prompts_used,
        "prompts": own.identity_decided_at or result.prompts_used,
        "stopped": "decisive" if own.identity_decided_at else result.stopped,
    }  # fmt: skip


def _identity_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    kinds = dict.fromkeys((r["condition"], r["top_k"], r["samples"]) for r in rows)
    for condition, top_k, samples in kinds:
        group = [r for r in rows if (r["condition"], r["top_k"], r["samples"]) ==
                 (condition, top_k, samples)]  # fmt: skip
        if group:
            found.append({
                "condition": condition, "top_k": top_k, "samples": samples, "n": len(group),
                "suspect_queries_median": statistics.median(r["suspect_queries"] for r in group),
                "closed_set_accuracy": statistics.mean(r["nearest_correct"] for r in group),
                "identity_same": statistics.mean(r["identity_verdict"] == "same" for r in group),
                "identity_different": statistics.mean(
                    r["identity_verdict"] == "different" for r in group),
                "others_different": statistics.mean(r["others_different"] for r in group),
                "self_agreement_min": min(r["self_agreement"] for r in group),
                "self_agreement_mean": statistics.mean(r["self_agreement"] for r in group),
            })  # fmt: skip
    return found


def queries(data: Mapping[str, Any]) -> dict[str, Any]:
    found = {}
    identity = data["identity"]["rows"]
    parts = {
        "distillation": data["distillation"]["rows"], "derivation": data["derivation"]["rows"],
        "identity": [r for r in identity if not r["samples"]],
        f"identity, modal of {MODAL}": [r for r in identity if r["samples"]],
    }  # fmt: skip
    for part, rows in parts.items():
        prompts = [r["prompts"] for r in rows]
        decisive = [r["prompts"] for r in rows if r["stopped"] == "decisive"]
        found[part] = {
            "median": statistics.median(prompts), "max": max(prompts), "probes": len(rows),
            "decisive": len(decisive), "budget": BUDGET,
        }  # fmt: skip
        if rows and "suspect_queries" in rows[0]:
            found[part]["suspect_queries_median"] = statistics.median(
                r["suspect_queries"] for r in rows)  # fmt: skip
    return found


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(data: Mapping[str, Any]) -> str:
    d = data["distillation"]
    lines = [
        "# Behaviour tier (black-box): forebear probe on the behaviour zoo",
        "",
        f"{data['started']}; {data['seconds']:.0f} s on {data['machine']}. Behavioural evidence, "
        "reported apart from the weight evidence. α = 0.01; at most "
        f"{BUDGET} prompts per probe (seeded, from held-out standard-library text).",
        "",
        "## (a) Distilled students vs independent models of the same data",
        "",
        "Suspects: every model trained on the teacher's corpus; positive = the teacher's distilled "
        "student. Controls: the independent same-data models, less the suspect.",
        "",
        "| score | AUROC | TPR at FPR ≤ 1 % | positives | negatives |",
        "|---|---|---|---|---|",
    ]
    for score, label in (("score_log10_p", "−log10 p (all prompts)"),
                         ("score_margin", "agreement margin over best control")):  # fmt: skip
        r = d[score]
        lines.append(f"| {label} | {_f(r['auroc'])} | {_f(r['tpr_at_fpr_1pct'], 2)} | "
                     f"{r['n_positive']} | {r['n_negative']} |")  # fmt: skip
    n_neg = d["score_log10_p"]["n_negative"]
    lines += [
        "",
        f"With {n_neg} negatives the smallest non-zero FPR is {1 / n_neg:.1%}: FPR ≤ 1 % here "
        "means no negative above the threshold (coarse).",
        f"Verdicts with early stopping: TPR {_f(d['verdict_tpr'], 2)}, "
        f"FPR {_f(d['verdict_fpr'], 2)} ({n_neg} negatives).",
        "",
        f"Ablation, controls without the suspect's architecture: "
        f"{data['confound']['called_closer']} of {data['confound']['n']} independent same-data "
        "models of the teacher's architecture are called closer to it (the null is about the "
        "controls: an architecture the controls lack counts as evidence).",
        "",
        "## (b) Derivatives identified from behaviour alone (closed set: the four teachers)",
        "",
        "| suspect | kind | true parent | found | nearest | prompts |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["derivation"]["rows"]:
        found = ", ".join(r["derived_from"]) or "none"
        lines.append(f"| {r['suspect']} | {r['kind']} | {r['truth']} | {found} | "
                     f"{r['nearest']} | {r['prompts']} |")  # fmt: skip
    rates = data["derivation"]["correct_rate"]
    lines += ["", f"Correct: fine-tunes {rates['derived']:.0%}, students {rates['distilled']:.0%}."]
    lines += _identity_markdown(data) + _queries_markdown(data)
    return "\n".join(lines) + "\n"


def _identity_markdown(data: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        "## (c) Identity behind an endpoint (loopback OpenAI-compatible server)",
        "",
        "Each teacher served plainly, behind a system prompt and at temperature 0.7; candidates: "
        "the four teachers and their four students.",
        "",
        "| condition | logprobs | closed-set accuracy | identity 'same' | identity 'different' "
        "| others 'different' | self-agreement (min / mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["identity"]["summary"]:
        tokens = f"none, modal of {r['samples']}" if r["samples"] else "none"
        lines.append(
            f"| {r['condition']} | {'top-5' if r['top_k'] else tokens} | "
            f"{r['closed_set_accuracy']:.0%} | {r['identity_same']:.0%} | "
            f"{r['identity_different']:.0%} | {r['others_different']:.0%} | "
            f"{r['self_agreement_min']:.3f} / {r['self_agreement_mean']:.3f} |"
        )
    return lines + _modal_markdown(data) + _distribution_markdown(data)


def _modal_markdown(data: Mapping[str, Any]) -> list[str]:
    mean = data["modal"]["mean"]
    lines = ["", f"The modal token at T 0.7 ({data['modal']['rows'][0]['prompts']} prompts per "
             "teacher, local sampling): how often it is the greedy token.", "",
             "| teacher | 1 sample | modal of 5 | modal of 9 | two modes of 5 agree "
             "| mode of 5 held by ≤ 2 |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in [*data["modal"]["rows"], {"teacher": "mean", **mean}]:
        lines.append(f"| {r['teacher']} | {r['modal_1_is_greedy']:.3f} | "
                     f"{r['modal_5_is_greedy']:.3f} | {r['modal_9_is_greedy']:.3f} | "
                     f"{r['modal_5_self_agreement']:.3f} | {r['modal_5_tied']:.3f} |")  # fmt: skip
    return lines


def _distribution_markdown(data: Mapping[str, Any]) -> list[str]:
    plan = data["distribution"]["plan"]
    lines = ["", f"Distribution tests: suspect's vs candidate's continuations, {plan['prompts']} "
             f"prompts × {plan['continuations']} continuations of {plan['max_tokens']} tokens a "
             f"side at T {plan['temperature']} ({plan['queries_per_side']} queries a side), "
             f"{plan['permutations']} within-prompt permutations; candidate: the teacher. "
             "Rejection rates (null: same sampling distribution).", "",
             "| suspect | tests | MMD α 0.01 | MMD α 0.05 | MMD mean p | likelihood α 0.01 "
             "| likelihood α 0.05 | likelihood mean p |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in data["distribution"]["summary"]:
        lines.append(f"| {r['condition']} | {r['n']} | {r['mmd_reject_0.01']:.2f} | "
                     f"{r['mmd_reject_0.05']:.2f} | {r['mmd_mean_p']:.2f} | "
                     f"{r['likelihood_reject_0.01']:.2f} | {r['likelihood_reject_0.05']:.2f} | "
                     f"{r['likelihood_mean_p']:.2f} |")  # fmt: skip
    return lines


def _queries_markdown(data: Mapping[str, Any]) -> list[str]:
    lines = ["", "## (d) Prompts per verdict (early stopping)", "",
             "Distillation and derivation: prompts until the derivation verdict; identity: "
             "until the true candidate's identity verdict.", "",
             "| part | probes | decisive | median | max | budget |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for part, r in data["queries"].items():
        lines.append(f"| {part} | {r['probes']} | {r['decisive']} | {r['median']:.0f} | "
                     f"{r['max']} | {r['budget']} |")  # fmt: skip
    lines += ["", "Each model answers each prompt once (one query); candidates' and controls' "
              "answers are cached and shared between probes. With the modal token the suspect "
              f"answers each prompt {MODAL} times: {MODAL} × the prompts above per identity "
              "verdict (those probes went on for the derivation verdicts: median "
              f"{data['queries'][f'identity, modal of {MODAL}']['suspect_queries_median']:.0f} "
              "suspect queries in all). A distribution test is fixed-size: "
              f"{data['distribution']['plan']['queries_per_side']} queries from the suspect "
              "(shared by every candidate) and as many from each candidate; the likelihood "
              "variant adds local scoring only."]  # fmt: skip
    return lines


def main() -> None:
    import platform

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ROOT / ".work" / "zoo-behaviour")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: threads only contend
    started = time.perf_counter()
    data: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "machine": f"{platform.machine()} CPU, 1 torch thread"}  # fmt: skip
    probes = default_probes(BUDGET, seed=0)
    data["prompts"] = probes.to_json()
    with tempfile.TemporaryDirectory() as work:
        zoo = Zoo(args.zoo, ResponseCache(Path(work) / "answers.sqlite"))
        data["distillation"] = distillation(zoo, probes)
        data["confound"] = confound(zoo, probes)
        data["derivation"] = derivation(zoo, probes)
        data["identity"] = identity(zoo, probes)
        data["modal"] = modal_agreement(zoo, probes)
        data["distribution"] = distribution(zoo, probes)
        zoo.cache.close()
    data["queries"] = queries(data)
    data["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "behaviour.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (args.out / "behaviour.md").write_text(markdown(data), encoding="utf-8")
    print(markdown(data))


if __name__ == "__main__":
    main()
