"""Remote benchmark: fingerprints read by byte ranges through the loopback hub server.

1. The cached 7B-shaped pair of ``bench_scale.py`` (``benchmarks/.work/scale``), served
   from disk by ``forebear.bench.hub_server.HubServer`` as ``bench/base`` and
   ``bench/derived`` (weights behind an LFS-style redirect, ``LATENCY`` added to every
   request), is fingerprinted remotely and locally: bytes fetched against the weights'
   size, requests, seconds, peak RSS; the remote fingerprints' arrays must equal the
   local ones', and the two comparisons (and the full-weights one in ``scale.json``)
   must agree. A second remote run over the same range cache must fetch nothing.
2. A virtual DeepSeek-V3 (``forebear.bench.virtual``, 689 GB generated on demand) is
   served as ``deepseek-ai/DeepSeek-V3-virtual`` and fingerprinted remotely.

Every measured job runs in a fresh process (its peak RSS is reported) with a fresh
temporary range cache; the server runs in this process, whose peak RSS is the server's.
Writes ``benchmarks/results/remote.json`` and ``remote.md``.

Usage: python benchmarks/bench_remote.py [--out DIR] [--skip-7b] [--skip-deepseek]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_scale import RESULTS, WORK, _fresh, drop_page_cache

from forebear.bench.hub_server import HubServer
from forebear.bench.virtual import deepseek_v3_repo

LATENCY = 0.002  # seconds added to every request by the server
GOAL_7B = 0.01  # bytes fetched / weights, at most
GOAL_V3 = 0.002
DEEPSEEK = "deepseek-ai/DeepSeek-V3-virtual"
# huggingface_hub's offline switch (set by `make bench`) would refuse the loopback hub.
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}

FINGERPRINT = """
import dataclasses, json, os, resource, sys, time
from forebear.fingerprint import fingerprint, save_fingerprint
from forebear.model import open_model
ref, endpoint, cache, out, content = sys.argv[1:6]
started = time.perf_counter()
with open_model(ref, endpoint=endpoint or None, cache_dir=cache or None) as model:
    found = fingerprint(model, content_units=int(content) if content else None)
    wall = time.perf_counter() - started
    traffic = model.traffic()
    weights, files = model.bytes_on_disk, len(model.weight_files)
save_fingerprint(found, out)
peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # VmHWM on Linux
print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_mb(), "weights_bytes": weights,
                  "weight_files": files, "traffic": traffic and dataclasses.asdict(traffic),
                  "layers": len(found.layers),
                  "layers_sketched": [i for i, s in enumerate(found.layers) if s is not None],
                  "content_units": found.meta["settings"]["content_units"],
                  "fingerprint_bytes": os.path.getsize(out)}))
"""

COMPARE = """
import json, sys
import numpy as np
from forebear.compare import compare
from forebear.fingerprint import load_fingerprint

def same(a, b):
    arrays = lambda f: [f.embedding] + [getattr(s, k, None) for s in f.layers
                                        for k in ("units", "up", "gate")]
    pairs = list(zip(arrays(a), arrays(b))) if len(a.layers) == len(b.layers) else [(0, 1)]
    return a.tokens == b.tokens and all(p is q is None or np.array_equal(p, q) for p, q in pairs)

files = json.loads(sys.argv[1])  # {"local": {"base": path, "derived": path}, "remote": ...}
loaded = {w: {m: load_fingerprint(p) for m, p in pair.items()} for w, pair in files.items()}
result = {"identical_arrays": {m: same(loaded["local"][m], loaded["remote"][m])
                               for m in ("base", "derived")},
          "same_files": {m: loaded["local"][m].meta["files"] == loaded["remote"][m].meta["files"]
                         for m in ("base", "derived")}}
for where, pair in loaded.items():
    found = compare(pair["base"], pair["derived"])
    result[where] = {"verdict": found.verdict, "derived": found.derived, "log10_p": found.log10_p}
print(json.dumps(result))
"""


def peak_mb() -> float:
    """This process's peak RSS (ru_maxrss is VmHWM on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; its one line of JSON (with ``process_s``, the
    whole process's wall time, imports included), or the error."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=False,
        env=CHILD_ENV,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"job failed: {tail}"}
    found: dict[str, Any] = json.loads(done.stdout)
    return found | {"process_s": time.perf_counter() - started}


def fingerprint_job(
    ref: str,
    out: Path,
    endpoint: str = "",
    cache: Path | None = None,
    server: HubServer | None = None,
    cold: bool = True,
    name: str = "",
    content: int | None = None,
) -> dict[str, Any]:
    """Fingerprint ``ref`` in a fresh process (remote when ``endpoint`` is given;
    ``content``: its content sample's size, None for the default)."""
    print(f"remote: fingerprint {ref} ({'remote' if endpoint else 'local'})", file=sys.stderr)
    dropped = drop_page_cache() if cold else False
    if server is not None:
        server.reset_stats()
    found = child(FINGERPRINT, ref, endpoint, str(cache or ""), str(out),
                  "" if content is None else str(content))  # fmt: skip
    where = "remote" if endpoint else "local"
    found |= {"ref": ref, "name": name or ref, "where": where, "cold_cache": dropped}
    if server is not None:
        stats = server.stats()
        found["server"] = {"requests": stats.requests, "bytes_served": stats.bytes_served}
    if found.get("traffic") and found.get("weights_bytes"):
        found["fetched_fraction"] = found["traffic"]["bytes_fetched"] / found["weights_bytes"]
    return found


def run_7b(temp: Path) -> dict[str, Any]:
    folders = {name: WORK / name for name in ("base", "derived")}
    if not all(_fresh(folder) for folder in folders.values()):
        message = f"skipped: no cached scale pair under {WORK} (run benchmarks/bench_scale.py)"
        print(f"remote: 7B {message}", file=sys.stderr)
        return {"skipped": message}
    repos = {
        f"bench/{name}": {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
        for name, folder in folders.items()
    }
    jobs: list[dict[str, Any]] = []
    files: dict[str, dict[str, str]] = {"local": {}, "remote": {}, "content": {}}
    with HubServer(repos, latency=LATENCY) as server:
        for name, folder in folders.items():
            cache = temp / f"cache-{name}"
            files["local"][name] = str(temp / f"{name}-local.fbf")
            files["remote"][name] = str(temp / f"{name}-remote.fbf")
            files["content"][name] = str(temp / f"{name}-content.fbf")
            local = Path(files["local"][name])
            # The remote default (no content sample), so the arrays can be compared; then
            # the local default, which reads every MLP weight for its content sample.
            jobs.append(fingerprint_job(str(folder), local, name=f"scale/{name} (folder)",
                                        content=0))  # fmt: skip
            with_content = fingerprint_job(
                str(folder), Path(files["content"][name]), name=f"scale/{name} (folder)"
            )
            jobs.append(with_content | {"where": "local, content sample"})
            ref, endpoint = f"bench/{name}", server.endpoint
            jobs.append(fingerprint_job(ref, Path(files["remote"][name]), endpoint, cache, server))
            if name == "base":  # the same range cache again: everything should come from it
                again = fingerprint_job(ref, temp / "rerun.fbf", endpoint, cache, server)
                jobs.append(again | {"where": "remote, cached"})
    checks = child(COMPARE, json.dumps(files))
    checks["full_weights_verdict"] = _scale_verdict()
    return {"jobs": jobs, "checks": checks}


def _scale_verdict() -> str | None:
    """The full-weights comparison's verdict on the same pair, if scale.json recorded it."""
    path = RESULTS / "scale.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text()).get("methods", [])
    verdicts = [
        r.get("verdict_class") or r.get("verdict") for r in rows if r["method"] == "forebear"
    ]
    return verdicts[0] if verdicts else None


def run_deepseek(temp: Path) -> dict[str, Any]:
    started = time.perf_counter()
    repo = deepseek_v3_repo(seed=0)
    built = time.perf_counter() - started
    total = sum(file.size for file in repo.values())
    with HubServer({DEEPSEEK: repo}, latency=LATENCY) as server:
        out, cache = temp / "v3.fbf", temp / "cache-v3"
        job = fingerprint_job(DEEPSEEK, out, server.endpoint, cache, server, cold=False)
    return {"repo_bytes": total, "files": len(repo), "build_s": built, "job": job}


def _row(job: dict[str, Any]) -> str:
    if "error" in job:
        return f"| {job['name']} | {job['where']} | {job['error']} | | | | |"
    traffic = job.get("traffic")
    fetched = "–" if traffic is None else f"{traffic['bytes_fetched'] / 1e6:,.1f}"
    share = "–" if traffic is None else f"{100 * job['fetched_fraction']:.3f} %"
    requests = "–" if traffic is None else f"{traffic['requests']:,}"
    return (
        f"| {job['name']} | {job['where']} | {fetched} | {share} | {requests} | "
        f"{job['wall_s']:.1f} | {job['peak_rss_mb']:,.0f} |"
    )


HEAD = [
    "| model | read | fetched (MB) | of weights | requests | wall (s) | peak RSS (MB) |",
    "|---|---|---|---|---|---|---|",
]


def _met(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**not met**")


def _checks_7b(part: dict[str, Any]) -> list[str]:
    checks = part["checks"]
    if "error" in checks:
        return [f"checks failed: {checks['error']}"]
    shares = [j.get("fetched_fraction") for j in part["jobs"] if j["where"] == "remote"]
    worst = None if None in shares else max(shares)
    again = [j for j in part["jobs"] if j["where"] == "remote, cached"]
    rerun = (again[0].get("traffic") if again else None) or {}
    full, local, remote = checks["full_weights_verdict"], checks["local"], checks["remote"]
    content = checks.get("content") or {}
    agree = full is None or full.startswith("derived") == remote["derived"]
    return [
        f"goal: fetched ≤ {100 * GOAL_7B:g} % of the weights: "
        f"{_met(None if worst is None else worst <= GOAL_7B)}"
        + ("" if worst is None else f" (at most {100 * worst:.3f} %)"),
        f"remote fingerprints' arrays identical to the local ones': {checks['identical_arrays']}; "
        f"file identities equal: {checks['same_files']}",
        f"verdict from the remote fingerprints `{remote['verdict']}` (log10 p "
        f"{remote['log10_p']:.1f}), from the local `{local['verdict']}` (log10 p "
        f"{local['log10_p']:.1f}): {'equal' if remote == local else '**differ**'}; full-weights "
        f"verdict in scale.json `{full}`: {'agrees' if agree else '**disagrees**'}",
        f"with content samples (the local default): `{content.get('verdict')}` (log10 p "
        f"{content.get('log10_p', float('nan')):.1f})",
        f"second run over the same range cache: {rerun.get('bytes_fetched', '?')} bytes fetched, "
        f"{rerun.get('bytes_cached', 0) / 1e6:,.1f} MB from the cache, "
        f"{rerun.get('requests', '?')} request(s) (goal 0 bytes: "
        f"{_met(rerun.get('bytes_fetched') == 0 if rerun else None)})",
    ]


def _deepseek(part: dict[str, Any], server_mb: float | None) -> list[str]:
    if "skipped" in part:
        return ["## DeepSeek-V3, virtual", "", part["skipped"]]
    job, share = part["job"], part["job"].get("fetched_fraction", 1.0)
    lines = [
        f"## DeepSeek-V3, virtual ({part['repo_bytes'] / 1e9:,.1f} GB, {part['files']} files, "
        "bytes generated on demand by the server)",
        "",
        *HEAD,
        _row(job),
        "",
    ]
    if "error" in job:
        return lines
    return [
        *lines,
        f"- goal: fetched ≤ {100 * GOAL_V3:g} % of the weights: "
        f"{_met(share <= GOAL_V3)} ({100 * share:.3f} %)",
        f"- layers sketched: {len(job['layers_sketched'])} of {job['layers']} (a MoE layer "
        "through its first routed expert); no content sample (remote default)",
        f"- fingerprint file: {job['fingerprint_bytes'] / 1e6:.2f} MB",
        f"- server: {job['server']['requests']:,} requests, "
        f"{job['server']['bytes_served'] / 1e6:,.1f} MB served; the server process's peak RSS "
        f"over the whole benchmark: {server_mb or 0:,.0f} MB",
    ]


def to_markdown(report: dict[str, Any]) -> str:
    machine, llama = report["machine"], report["llama_7b"]
    lines = [
        "# Remote benchmark: fingerprints by byte ranges from a loopback hub",
        "",
        f"Generated by `benchmarks/bench_remote.py` ({report['date']}, {report['total_s']:.0f} s "
        f"in all) on {machine['cpus']} CPU cores (load average {machine['load_before']:.1f} "
        f"before, {machine['load_after']:.1f} after: other work shares them, so seconds are "
        f"upper bounds), Python {machine['python']}, forebear {report['forebear']}.",
        "",
        "Server: `forebear.bench.hub_server.HubServer` on 127.0.0.1, in the benchmark's "
        f"process, **{report['latency_s'] * 1e3:g} ms injected per request**, weights behind an "
        "LFS-style 302. Each job runs in a fresh process (peak RSS: its VmHWM) with a fresh "
        "range cache; wall: opening the model and fingerprinting it. The page cache is dropped "
        "before each 7B job when allowed.",
        "",
        "## 7B-shaped pair (bench_scale.py's, served from disk)",
        "",
    ]
    if "skipped" in llama:
        lines += [llama["skipped"], ""]
    else:
        lines += [*HEAD, *map(_row, llama["jobs"]), "", *(f"- {x}" for x in _checks_7b(llama)), ""]
    return "\n".join([*lines, *_deepseek(report["deepseek_v3"], report["server_peak_rss_mb"]), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-7b", action="store_true")
    parser.add_argument("--skip-deepseek", action="store_true")
    args = parser.parse_args()
    import forebear

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="forebear-remote-") as name:
        temp = Path(name)
        llama = {"skipped": "skipped: --skip-7b"} if args.skip_7b else run_7b(temp)
        skip = {"skipped": "skipped: --skip-deepseek"}
        deepseek = skip if args.skip_deepseek else run_deepseek(temp)
    report = {
        "schema": "forebear.bench.remote/1",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "forebear": forebear.__version__,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
        "latency_s": LATENCY,
        "goals": {"llama_7b_fetched_fraction": GOAL_7B, "deepseek_v3_fetched_fraction": GOAL_V3},
        "total_s": time.perf_counter() - started,
        "server_peak_rss_mb": peak_mb(),
        "llama_7b": llama,
        "deepseek_v3": deepseek,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "remote.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "remote.md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
