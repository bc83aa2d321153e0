"""The scan benchmark: parent attribution through the index, and retrieval latency at scale.

1. Attribution: an index of every base of the full zoo (``forebear index``'s defaults), then
   ``scan`` of every derived model: is the true base the best relative? Once from fingerprints
   alone, once with ``--weights`` (the top candidates' weights compared in full).
2. Latency: synthetic indexes of 10 k, 100 k and 1 M vector-only entries (``index.synthetic``;
   clustered like real lineages), cached under benchmarks/.work/scan/; per size the query time
   of ``Index.candidates`` (k = 50, structural filter on) after the caches are warm, exact and
   ANN where it applies, the first (cold) query, the build time and the size on disk per entry.

Writes benchmarks/results/scan.json and scan.md. Usage:
    python benchmarks/bench_scan.py [--zoo benchmarks/.work/zoo-full] [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from forebear.index import Index, Search, make_record
from forebear.index.synthetic import synthetic_records, synthetic_vectors
from forebear.scan import scan
from forebear.zoo.manifest import load_manifest

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "scan"
QUERIES = 30
GRAPH_LIMIT = 200_000


def _roots(models: dict[str, Any], name: str) -> set[str]:
    parents = models[name]["parents"]
    return {name} if not parents else set().union(*(_roots(models, p) for p in parents))


def attribution(zoo: Path) -> dict[str, Any]:
    manifest = load_manifest(zoo)
    models = {name: {"parents": list(spec.parents), "kind": spec.kind}
              for name, spec in manifest.models.items()}  # fmt: skip
    bases = [n for n, m in models.items() if m["kind"] == "base"]
    derived = [n for n, m in models.items() if m["kind"] == "derived"]
    path = WORK / "zoo-bases.sqlite"
    for stale in WORK.glob("zoo-bases.sqlite*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    started = time.perf_counter()
    with Index.open(path) as index:
        for name in bases:
            index.add(make_record(str(manifest.model_path(name))))
    built = time.perf_counter() - started
    # Records hold absolute paths; the manifest's are relative when --zoo is.
    by_path = {str(Path(manifest.model_path(n)).resolve()): n for n in bases}
    rows = []
    for name in derived:
        truth = _roots(models, name)
        row: dict[str, Any] = {"model": name, "truth": sorted(truth)}
        for mode, weights in (("fingerprints", False), ("weights", True)):
            with Index.open(path) as index:
                start = time.perf_counter()
                result = scan(manifest.model_path(name), index, weights=weights)
            best = None if result.best is None else by_path.get(result.best.record.ref)
            ranked = [by_path.get(m.record.ref) for m in result.matches]
            rank = next((i for i, r in enumerate(ranked) if r in truth), None)
            row[mode] = {"best": best, "hit": best in truth, "retrieval_rank": rank,
                         "seconds": time.perf_counter() - start}  # fmt: skip
        rows.append(row)
    entry = _disk(path) / max(len(bases), 1)
    return {"bases": len(bases), "derived": len(derived), "index_seconds": built,
            "bytes_per_entry": entry, "rows": rows}  # fmt: skip


def _disk(path: Path) -> int:
    """Bytes of the index file and everything beside it (WAL, vector cache, ANN graph)."""
    found = [p for top in path.parent.glob(path.name + "*") for p in [top, *top.rglob("*")]]
    return sum(p.stat().st_size for p in found if p.is_file())


def latency(size: int, rng: np.random.Generator) -> dict[str, Any]:
    path = WORK / f"synthetic-{size}.sqlite"
    built = None
    with Index.open(path) as index:
        if len(index) < size:
            start = time.perf_counter()
            index.add_many(synthetic_records(size - len(index), rng, start=len(index)))
            built = time.perf_counter() - start
        start = time.perf_counter()
        # The ANN graph is built up to GRAPH_LIMIT entries (one thread: 41 min at 1 M on this
        # machine); beyond it the exact search is what a scan uses, and is measured as such.
        index.warm(Search.auto if size <= GRAPH_LIMIT else Search.exact)
        warmed = time.perf_counter() - start
    queries = synthetic_vectors(QUERIES, np.random.default_rng(size))
    found: dict[str, Any] = {"entries": size, "build_seconds": built, "warm_seconds": warmed,
                             "disk_bytes": _disk(path)}  # fmt: skip
    found["bytes_per_entry"] = found["disk_bytes"] / size
    graph = 50_000 < size <= GRAPH_LIMIT
    methods = [Search.auto, Search.exact] + ([Search.ann] if graph else [])
    for method in methods:
        with Index.open(path) as index:
            times = []
            for query in queries:
                start = time.perf_counter()
                index.candidates(query, k=50, min_hidden=3072, search=method)
                times.append(time.perf_counter() - start)
        found[method.value] = {"first": times[0], "median": statistics.median(times[1:]),
                               "max": max(times[1:])}  # fmt: skip
    return found


def recall(size: int) -> float | None:
    """Share of the exact top-50 the ANN search returns (its price for speed)."""
    path = WORK / f"synthetic-{size}.sqlite"
    if not 50_000 < size <= GRAPH_LIMIT:
        return None
    hits = total = 0
    with Index.open(path) as index:
        for query in synthetic_vectors(10, np.random.default_rng(size + 1)):
            exact = {c.record.ref for c in index.candidates(query, k=50, search=Search.exact)}
            ann = {c.record.ref for c in index.candidates(query, k=50, search=Search.ann)}
            hits, total = hits + len(exact & ann), total + len(exact)
    return hits / max(total, 1)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _built(seconds: float | None) -> str:
    return "cached" if seconds is None else f"{seconds:.0f}"


def markdown(data: dict[str, Any]) -> str:
    lines = ["# forebear scan benchmark", "", f"{os.cpu_count()} CPUs; {data['started']}.", "",
             "## Parent attribution through the index", ""]  # fmt: skip
    top = data.get("attribution")
    if top:
        for mode in ("fingerprints", "weights"):
            hits = sum(1 for r in top["rows"] if r[mode]["hit"])
            misses = [f"{r['model']} → {r[mode]['best'] or 'no relative'}" for r in top["rows"]
                      if not r[mode]["hit"]]  # fmt: skip
            seconds = statistics.median(r[mode]["seconds"] for r in top["rows"])
            lines.append(f"- **{mode}**: true base best for **{hits}/{len(top['rows'])}** derived "
                         f"models (index of {top['bases']} bases; median {seconds:.2f} s per scan)"
                         f"; misses: {'; '.join(misses) or 'none'}")  # fmt: skip
        ranks = [r["fingerprints"]["retrieval_rank"] for r in top["rows"]]
        first = sum(1 for rank in ranks if rank == 0)
        lines.append(f"- retrieval alone ranks the true base first for {first}/{len(ranks)}")
    lines += ["", "## Retrieval latency (k = 50, structural filter on, warm caches)", "",
              "| entries | build s | on disk per entry | auto median s | exact median s "
              "| ANN median s | ANN max s | first query s | ANN recall@50 |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in data["latency"]:
        ann = row.get("ann", {})
        lines.append(
            f"| {row['entries']:,} | {_built(row['build_seconds'])} | "
            f"{row['bytes_per_entry']:.0f} B | "
            f"{row['auto']['median']:.3f} | {row['exact']['median']:.3f} | "
            f"{_num(ann.get('median'))} | {_num(ann.get('max'))} | "
            f"{row['auto']['first']:.3f} | {_num(row.get('recall'))} |"
        )  # fmt: skip
    blob = "" if not top else f" (zoo-sized: {top['bytes_per_entry'] / 1e3:.0f} kB per entry)"
    lines += ["", "Vector-only synthetic entries; a real entry adds its fingerprint blob"
              f"{blob}; a 7B model's is 6.4 MB with content samples, 3.2 MB without.",
              ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ROOT / ".work" / "zoo-full")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if (args.zoo / "manifest.json").is_file():
        data["attribution"] = attribution(args.zoo)
    rng = np.random.default_rng(0)
    data["latency"] = []
    for size in args.sizes:
        row = latency(size, rng)
        row["recall"] = recall(size)
        data["latency"].append(row)
        print(f"bench_scan: {size:,} entries: {row}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scan.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (args.out / "scan.md").write_text(markdown(data), encoding="utf-8")
    print(markdown(data))


if __name__ == "__main__":
    main()
