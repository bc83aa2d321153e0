"""The lineage benchmark: the tree of the whole full zoo against its manifest, and merges.

1. ``forebear tree`` over every model of the full zoo (every pair compared on the weights):
   edge precision and recall against the manifest's parent edges (undirected), direction
   accuracy on the true edges found (decided right, decided wrong, undetermined), edges
   between the manifest's independent families, and each merge's recovered parents. The
   distilled model's edge is behaviour only: it is no weight edge, and it should get none.
   The same comparisons are assembled again with the manifest's parents as declared base
   models (what honest model cards say), reported apart.
1b. The identifiability control: each continued pre-training run the tree misplaces is
   trained again from the fine-tuned sibling instead of the base (same data, seed, steps),
   so the zoo's world (siblings) and the other (a chain) can be compared: when the weights
   look alike in both, no method reading weights can place it.
2. ``forebear decompose`` of each zoo merge on its true parents with llama-a as the base: the
   recovered method and weights against the recipe (goal ±0.03), the residual (an exact merge
   against the one trained further); and of a DARE and a DARE-TIES merge of the zoo's two
   fine-tunes that the bench makes itself (density 0.3, weights 0.6 / 0.4; the zoo holds
   neither).

Writes benchmarks/results/lineage.json and lineage.md. Usage:
    python benchmarks/bench_lineage.py [--zoo benchmarks/.work/zoo-full]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from forebear.lineage import decompose
from forebear.lineage.priors import Priors
from forebear.lineage.tree import Lineage, compared
from forebear.model import open_model
from forebear.zoo.build import run_build
from forebear.zoo.folders import load_folder, save_folder
from forebear.zoo.manifest import load_manifest
from forebear.zoo.profiles import profile_specs
from forebear.zoo.transforms.merges import merge_dare, merge_dare_ties

ROOT = Path(__file__).resolve().parent
GOAL_WEIGHTS = 0.03
GOAL_DIRECTION = 0.9
Recipe = tuple[str, Callable[[Mapping[str, Any]], tuple[float, ...]]]
MERGES: dict[str, Recipe] = {
    "llama-a-merge-linear": ("linear", lambda p: tuple(p["weights"])),
    "llama-a-merge-slerp": ("slerp", lambda p: (1 - p["t"], p["t"])),
    "llama-a-merge-ties": ("ties", lambda p: (0.5, 0.5)),
    "llama-a-merge-ft": ("linear, then trained", lambda p: tuple(p["weights"])),
}
DARE = {"density": 0.3, "weights": [0.6, 0.4]}
MADE: dict[str, tuple[Callable[..., Any], str]] = {  # merges the bench makes: transform, folder
    "llama-a-merge-dare (made by the bench)": (merge_dare, "llama-a-merge-dare"),
    "llama-a-merge-dare-ties (made by the bench)": (merge_dare_ties, "llama-a-merge-dare-ties"),
}
DARE_RECIPE: dict[str, Recipe] = {
    "llama-a-merge-dare (made by the bench)": ("dare", lambda p: tuple(p["weights"])),
    "llama-a-merge-dare-ties (made by the bench)": ("dare_ties", lambda p: tuple(p["weights"])),
}


def _truth(manifest: Any) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """Weight edges (parent, child) and each model's family index (components of them)."""
    edges = {(p, name) for name, spec in manifest.models.items() if spec.kind == "derived"
             for p in spec.parents}  # fmt: skip
    family = {name: i for i, name in enumerate(manifest.models)}
    changed = True
    while changed:
        changed = False
        for p, c in edges:
            low = min(family[p], family[c])
            if family[p] != low or family[c] != low:
                family[p] = family[c] = low
                changed = True
    return edges, family


def tree(zoo: Path) -> dict[str, Any]:
    manifest = load_manifest(zoo)
    by_path = {str(manifest.model_path(n)): n for n in manifest.models}
    started = time.perf_counter()

    def say(message: str) -> None:
        if message.startswith("compare ") and message.split()[1].split("/")[0].endswith("00"):
            print(f"lineage: {message}", file=sys.stderr)  # every hundredth pair

    truth, family = _truth(manifest)
    derived = [name for name, spec in manifest.models.items() if spec.kind == "derived"]
    honest = {name: list(manifest.models[name].parents) for name in derived}
    rng = np.random.default_rng(0)
    false = {  # each derived model names another relative of its family, never its parent
        name: [str(rng.choice(sorted(n for n in manifest.models if family[n] == family[name]
                                     and n != name and n not in honest[name])))]
        for name in derived
    }  # fmt: skip
    with compared(list(by_path), progress=say) as evidence:
        weights = evidence.assemble()
        seconds = time.perf_counter() - started
        with_cards = {
            kind: _named(evidence.assemble(Priors.from_mapping(
                {n: {"base_model": bases} for n, bases in claims.items()})), by_path)
            for kind, claims in (("declared", honest), ("misdeclared", false))
        }  # fmt: skip
    found = _named(weights, by_path)
    return {
        "models": len(by_path), "seconds": seconds, "comparisons": weights.comparisons,
        "merges": found["merges"], "edges": found["edges"], "warnings": weights.warnings,
        **_scores(found["edges"], truth, family),
        **{kind: {"edges": cards["edges"], **_scores(cards["edges"], truth, family),
                  "attached_by_priors": sorted(f"{e['parent']} → {e['child']}"
                                               for e in cards["edges"]
                                               if e["attached_by"] == "priors")}
           for kind, cards in with_cards.items()},
    }  # fmt: skip


def _named(found: Lineage, by_path: Mapping[str, str]) -> dict[str, Any]:
    """Edges and merges with the zoo's model names for paths."""
    data = found.to_json()
    edges = [{**e, "parent": by_path[e["parent"]], "child": by_path[e["child"]]}
             for e in data["edges"]]  # fmt: skip
    merges = {
        by_path[m["model"]]: {"parents": sorted(by_path[p] for p in m["parents"]),
                              "verdict": m["verdict"], "best": m["best"]}
        for m in data["merges"]
    }  # fmt: skip
    return {"edges": edges, "merges": merges}


CONTROLS = (("llama-a", "llama-a-ft", "llama-a-cpt"),
            ("gpt_neox-a", "gpt_neox-a-ft", "gpt_neox-a-cpt"))  # fmt: skip


def control(zoo: Path) -> list[dict[str, Any]]:
    """Each (base, fine-tune, continued pre-training) of ``CONTROLS`` in the zoo's world (the
    two trained beside each other from the base) and in the other (the continued run trained
    from the fine-tune: same data, seed, steps and rate), made here from the zoo's cache."""
    specs = {s.name: s for s in profile_specs("full")}
    chosen = [specs[n] for trio in CONTROLS for n in trio[:2]]
    chains = {trio: replace(specs[trio[2]], name=f"{trio[1]}-then-cpt", parents=(trio[1],))
              for trio in CONTROLS}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-lineage-control-"))
    try:
        built = run_build([*chosen, *chains.values()], work, cache=zoo / ".cache").manifest
        zoo_manifest = load_manifest(zoo)
        rows = []
        for trio in CONTROLS:
            base, ft = (str(zoo_manifest.model_path(n)) for n in trio[:2])
            worlds = (("siblings (the zoo)", trio[2], str(zoo_manifest.model_path(trio[2]))),
                      ("chain (made here)", chains[trio].name,
                       str(built.model_path(chains[trio].name))))  # fmt: skip
            for world, name, path in worlds:
                rows.append({"world": world, "model": name, **_placed(base, ft, path)})
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _placed(base: str, ft: str, child: str) -> dict[str, Any]:
    """The child's distances to the base and the fine-tune, and its parent in their tree."""
    with compared([base, ft, child]) as evidence:
        found = evidence.assemble()
        pairs = evidence.pairs
    far, near = (pairs[(other, child)].change for other in (base, ft))
    (edge,) = [e for e in found.edges if child in (e.parent, e.child)]
    other = edge.parent if edge.child == child else edge.child
    return {"to_base": far, "to_finetune": near,
            "tree_neighbour": "fine-tune" if other == ft else "base"}  # fmt: skip


def _scores(edges: list[dict[str, Any]], truth: set[tuple[str, str]], family: dict[str, int]
            ) -> dict[str, Any]:  # fmt: skip
    undirected = {frozenset(t) for t in truth}
    pair = {id(e): frozenset((e["parent"], e["child"])) for e in edges}
    hits = [e for e in edges if pair[id(e)] in undirected]
    right = [e for e in hits if (e["parent"], e["child"]) in truth]
    decided = [e for e in hits if e["decided_by"] == "weights"]
    found_pairs = set(pair.values())
    reversed_ = [e for e in hits if e not in right]
    return {
        "true_edges": len(truth), "predicted_edges": len(edges),
        "precision": len(hits) / max(len(edges), 1),
        "recall": len(undirected & found_pairs) / max(len(undirected), 1),
        "direction_right": len(right), "direction_decided": len(decided),
        "direction_decided_right": sum((e["parent"], e["child"]) in truth for e in decided),
        "cross_family_edges": [e for e in edges if family[e["parent"]] != family[e["child"]]],
        "missed": sorted(f"{p} → {c}" for p, c in truth if frozenset((p, c)) not in found_pairs),
        "extra": sorted(f"{e['parent']} → {e['child']}" for e in edges
                        if pair[id(e)] not in undirected),
        "wrong_direction": sorted(f"{e['child']} → {e['parent']} ({e['decided_by']}, "
                                  f"P {e['p_weights']:.2f})" for e in reversed_),
    }  # fmt: skip


def _made(zoo: Path, folder: Path) -> dict[str, Path]:
    """The DARE and DARE-TIES merges of the zoo's two fine-tunes (``DARE``'s density and
    weights), made here: the zoo holds none (adding one would change every pair of the full
    zoo's committed results)."""
    manifest = load_manifest(zoo)
    (ft, config, tokenizer), (ft2, _, _), (base, _, _) = (
        load_folder(manifest.model_path(n)) for n in ("llama-a-ft", "llama-a-ft2", "llama-a")
    )
    found = {}
    for name, (transform, where) in MADE.items():
        made = transform([ft, ft2], [config, config], base=base, rng=np.random.default_rng(7),
                         **DARE)  # fmt: skip
        found[name] = save_folder(folder / where, made.state, made.config, tokenizer)
    return found


def merges(zoo: Path) -> list[dict[str, Any]]:
    manifest = load_manifest(zoo)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-lineage-"))
    extra = _made(zoo, work)
    for name, (method, expected) in {**MERGES, **DARE_RECIPE}.items():
        parents = ("llama-a-ft", "llama-a-ft2")
        if name in manifest.models:
            spec = manifest.models[name]
            params, parents = dict(spec.params), spec.parents
        else:
            params = dict(DARE)
        paths = [extra.get(name) or manifest.model_path(name),
                 *(manifest.model_path(n) for n in (*parents, "llama-a"))]  # fmt: skip
        models = [open_model(p) for p in paths]
        started = time.perf_counter()
        try:
            found = decompose(models[0], models[1:3], models[3])
        finally:
            for model in models:
                model.close()
        truth = expected(params)
        best = found.best
        error = None if best is None else max(abs(a - b) for a, b in zip(best.weights, truth,
                                                                         strict=True))  # fmt: skip
        rows.append({
            "model": name, "recipe": method, "true_weights": list(truth),
            "verdict": found.verdict, "method": None if best is None else best.method,
            "weights": None if best is None else list(best.weights),
            "params": None if best is None else dict(best.params),
            "residual": None if best is None else best.residual, "weight_error": error,
            "exact_threshold": found.exact_threshold, "seconds": time.perf_counter() - started,
        })  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return rows


def to_markdown(report: dict[str, Any]) -> str:
    t = report["tree"]
    found = t["true_edges"] - len(t["missed"])
    lines = [
        "# Lineage benchmark: the full zoo's tree, and merge decomposition",
        "",
        f"Generated by `benchmarks/bench_lineage.py` ({report['date']}) on "
        f"{report['cpus']} CPU cores, forebear {report['forebear']}.",
        "",
        f"## Tree of all {t['models']} models ({t['comparisons']} pairs compared on the weights, "
        f"{t['seconds']:.0f} s)",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| parent edges found (recall) | {found}/{t['true_edges']} ({t['recall']:.2f}) | all |",
        f"| edge precision | {t['precision']:.2f} ({t['predicted_edges']} edges) | — |",
        f"| direction right, of the true edges found | {t['direction_right']}/{found} "
        f"({t['direction_right'] / max(found, 1):.2f}) | ≥ {GOAL_DIRECTION:.0%} |",
        f"| directions the weights decide (P ≥ 0.9), right | {t['direction_decided_right']}/"
        f"{t['direction_decided']} | — |",
        f"| edges between independent families | {len(t['cross_family_edges'])} | 0 |",
        "",
    ]
    for title, key in (("Missed parent edges", "missed"), ("Edges not in the manifest", "extra"),
                       ("Found with the direction reversed", "wrong_direction")):  # fmt: skip
        if t[key]:
            lines += [f"{title}:", "", *(f"- {x}" for x in t[key]), ""]
    lines += [
        "### With declared base models",
        "",
        "The same comparisons, assembled again with metadata priors. A declared parent edge "
        "enters the tree only where the weights cannot rule it out: it replaces the longest "
        "edge of the cycle it closes when within 1.1 × that edge's distance and no worse on "
        "coordinates and frozen tensors; a model declaring two bases and lying between them "
        "is their merge. Such edges say so. *Honest cards*: each derived model declares its "
        "manifest parents. *False cards*: each declares another model of its family, never "
        "its parent (seeded).",
        "",
    ]
    for kind, title in (("declared", "honest cards"), ("misdeclared", "false cards")):
        d = t[kind]
        d_found = d["true_edges"] - len(d["missed"])
        lines += [
            f"- {title}: parent edges found {d_found}/{d['true_edges']} ({d['recall']:.2f}), "
            f"precision {d['precision']:.2f}, edges between independent families "
            f"{len(d['cross_family_edges'])}, direction right (weights, then priors where "
            f"the weights do not decide) {d['direction_right']}/{d_found}",
            *(f"  - attached by the priors: {x}" for x in d["attached_by_priors"]),
            *(f"  - missed: {x}" for x in d["missed"]),
        ]
    lines.append("")
    lines += _control_markdown(report["control"])
    lines += ["Merges recognised in the tree:", ""]
    lines += [f"- {m}: {x['verdict']} of {', '.join(x['parents'])}" for m, x in t["merges"].items()]
    lines += ["", "## Decomposition of the zoo's merges (true parents, llama-a as base)", "",
              "| merge | recipe | verdict | fitted | weights (true) | error | residual |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in report["merges"]:
        weights = "–" if row["weights"] is None else ", ".join(f"{w:.3f}" for w in row["weights"])
        true = ", ".join(f"{w:.2f}" for w in row["true_weights"])
        params = "".join(f", {k} {v:.3f}" for k, v in (row["params"] or {}).items())
        error = "–" if row["weight_error"] is None else f"{row['weight_error']:.4f}"
        residual = "–" if row["residual"] is None else f"{row['residual']:.2g}"
        lines.append(f"| {row['model']} | {row['recipe']} | {row['verdict']} | {row['method']}"
                     f"{params} | {weights} ({true}) | {error} | {residual} |")  # fmt: skip
    exact = [r for r in report["merges"] if r["recipe"] != "linear, then trained"]
    within = all(r["weight_error"] is not None and r["weight_error"] <= GOAL_WEIGHTS for r in exact)
    lines += ["", f"- goal: weights within ±{GOAL_WEIGHTS} for linear / SLERP / TIES / DARE / "
              f"DARE-TIES: {'met' if within else '**not met**'}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _control_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Identifiability control: siblings or a chain?",
        "",
        "Each continued pre-training the tree puts beside its fine-tuned sibling, trained "
        "again here from that fine-tune (same data, seed, steps and rate). Distances are the "
        "tree's (relative change).",
        "",
        "| world | model | to the base | to the fine-tune | ratio | tree puts it beside |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["to_finetune"] / row["to_base"]
        lines.append(
            f"| {row['world']} | {row['model']} | {row['to_base']:.4f} | "
            f"{row['to_finetune']:.4f} | {ratio:.3f} | {row['tree_neighbour']} |"
        )
    lines += [
        "",
        "Where both worlds give the same ratio, the weights hold no trace of which happened: "
        "a light fine-tune's update is a short step along the way the continued run goes on "
        "the same data, and 600 steps at ten times its rate leave nothing of it. Only "
        "metadata can place such a model (above).",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", type=Path, default=ROOT / ".work" / "zoo-full")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    import forebear

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
        "forebear": forebear.__version__, "merges": merges(args.zoo), "tree": tree(args.zoo),
        "control": control(args.zoo),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lineage.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "lineage.md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
