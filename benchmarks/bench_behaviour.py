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
   candidates, with greedy tokens only and with top-5 log-probabilities: closed-set
   identification (nearest candidate) and the identity test's verdicts.
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

from forebear.behavior.base import Client
from forebear.behavior.cache import ResponseCache
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
            for top_k in (0, 5):
                endpoint = OpenAIClient(url, name, cache=zoo.cache)
                result = probe(endpoint, zoo.clients(candidates), budget=BUDGET, batch=50,
                               alpha=ALPHA, top_k=top_k, probes=probes)  # fmt: skip
                rows.append(_identity_row(result, teacher, condition, top_k))
                print(f"bench_behaviour: identity {name} top-{top_k}: {rows[-1]}", flush=True)
    return {"rows": rows, "summary": _identity_summary(rows)}


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
    for condition in CONDITIONS:
        for top_k in (0, 5):
            group = [r for r in rows if r["condition"] == condition and r["top_k"] == top_k]
            found.append({
                "condition": condition, "top_k": top_k, "n": len(group),
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
    for part in ("distillation", "derivation", "identity"):
        rows = data[part]["rows"]
        prompts = [r["prompts"] for r in rows]
        decisive = [r["prompts"] for r in rows if r["stopped"] == "decisive"]
        found[part] = {
            "median": statistics.median(prompts), "max": max(prompts), "probes": len(rows),
            "decisive": len(decisive), "budget": BUDGET,
        }  # fmt: skip
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
        lines.append(
            f"| {r['condition']} | {'top-5' if r['top_k'] else 'none'} | "
            f"{r['closed_set_accuracy']:.0%} | {r['identity_same']:.0%} | "
            f"{r['identity_different']:.0%} | {r['others_different']:.0%} | "
            f"{r['self_agreement_min']:.3f} / {r['self_agreement_mean']:.3f} |"
        )
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
              "answers are cached and shared between probes."]  # fmt: skip
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
        zoo.cache.close()
    data["queries"] = queries(data)
    data["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "behaviour.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (args.out / "behaviour.md").write_text(markdown(data), encoding="utf-8")
    print(markdown(data))


if __name__ == "__main__":
    main()
