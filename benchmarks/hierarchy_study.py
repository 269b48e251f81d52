"""Policies at the HBM level (SGLang's HiSparse buffers): every demand policy's buffer hit rate
and host bytes per step at N = 1, 1.5, 2, 3 and 4 x k rows per request and layer, on
recordings and synthetic traces (docs/hierarchy.md, "Policies at this level").

Traces, built once into --cache with the real CLI:
- recordings of the bundled `tiny` backbone (benchmarks/frontier_traces.py: 1024-token prompts
  from held-out passages, 256 decode steps, k = 32 / 64 / 128, one batch of 4 requests);
- synthetic DeepSeek-V3.2 traces of the statistics generator (`dsacache synth --generator
  stats`; k = 2048, 4 layers, 1000 steps from a 32K context) at the paper's statistics and at
  new-lookup 0.3 and 0.7 (it treats every layer alike, so 4 layers are 4 samples);
- synthetic DeepSeek-V3.2 traces of the indexer-model generator (`--generator indexer`, seeds 0
  and 1; k = 2048, 1000 steps from a 32K context) on a half-depth model: 31 layers sampling the
  61 (a reduced model, docs/indexer-model.md), so 1 early, 9 middle and 21 deep layers, the mix
  of the real 61 layers (2 / 18 / 41). Its layer groups have different dynamics and every
  (request, layer) buffer is simulated on its own, so a trace's hit rate is the mean over its
  layers, and only this mix makes it the whole model's.
Each (trace, policy, N) is one `simulate_hierarchy` call (the same as `dsacache hierarchy TRACE
--buffer-tokens N --buffer-policy P`).

    .venv/bin/python benchmarks/hierarchy_study.py [--cache hierarchy-traces]
        [--out docs/hierarchy-policies] [--traces a,b]

Writes OUT.json (every number), OUT.md (the tables of docs/hierarchy.md) and OUT.png (hit rate
vs N / k per policy, one panel per trace); --from-json redraws OUT.md and OUT.png from OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dsacache.report.figures import plot_buffer
from dsacache.sim.hierarchy import HierarchyConfig, level_policies, simulate_hierarchy
from dsacache.trace import open_trace
from dsacache.trace.indexer_model import GROUPS, IndexerModel
from dsacache.trace.model import Trace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier_traces import SPECS as FRONTIER  # noqa: E402
from frontier_traces import build as build_recordings  # noqa: E402
from frontier_traces import shown  # noqa: E402

RATIOS = (1.0, 1.5, 2.0, 3.0, 4.0)
RECORDINGS = tuple(s.name for s in FRONTIER if not s.args)
DS = ("--preset", "deepseek-v3.2", "--layers", "4", "--steps", "1000", "--context", "32768")
SYNTH = {
    "ds-paper": ("--generator", "stats", *DS),
    "ds-nl0.3": ("--generator", "stats", *DS, "--new-lookup", "0.3"),
    "ds-nl0.7": ("--generator", "stats", *DS, "--new-lookup", "0.7"),
}
# half the depth of DeepSeek-V3.2 with its layer mix (a reduced model samples the 61 layers):
# 1 early, 9 middle, 21 deep
IX = ("--generator", "indexer", "--preset", "deepseek-v3.2", "--layers", "31", "--steps", "1000",
      "--context", "32768")  # fmt: skip
INDEXER = {
    "ds-indexer-s0": (*IX, "--seed", "0"),
    "ds-indexer-s1": (*IX, "--seed", "1"),
}
ROOT = Path(__file__).resolve().parents[1]


def build_synth(cache: Path, specs: dict[str, tuple[str, ...]]) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, args in specs.items():
        path = cache / name
        if not (path / "zarr.json").exists():
            t0 = time.perf_counter()
            tmp = (cache / (name + ".part")).resolve()
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [sys.executable, "-m", "dsacache", "synth", *args, "--out", str(tmp)]
            # from the repository root: the arguments name files in it
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
            tmp.rename(path)
            print(f"built {name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        out[name] = path
    return out


def command_of(name: str, specs: dict[str, tuple[str, ...]]) -> str:
    if name in specs:
        return "dsacache synth " + " ".join(specs[name])
    return shown(next(s for s in FRONTIER if s.name == name))


def policy_rows(name: str, trace: Trace) -> list[dict]:
    k = trace.geometry.top_k
    rows = []
    for policy in level_policies():
        for ratio in RATIOS:
            n = int(round(ratio * k))
            t0 = time.perf_counter()
            r = simulate_hierarchy(trace, HierarchyConfig(n, policy))
            per = r.host_bytes_per_step
            rows.append({
                "trace": name, "buffer_policy": policy, "buffer_tokens": n, "top_k": k,
                "ratio": ratio, "buffer_hit_rate": r.hit_rate, "hits": r.hits,
                "misses": r.misses, "cold_misses": r.cold_misses,
                "whole_requests": r.whole_requests, "host_bytes": r.host_bytes,
                **{f"host_bytes_per_step_{s}": v for s, v in per.items()},
                "seconds": time.perf_counter() - t0,
            })  # fmt: skip
    return rows


def layer_groups(trace: Trace) -> list[dict]:
    """An indexer-model trace's layers by group, each group replayed on its own. A buffer's
    state is its (request, layer)'s own, so for most policies a group's hits are exactly its
    layers' in the whole trace; hazard's table is shared by all layers (and hazard-plus reads
    the layer below), so alone they learn from the group's layers only."""
    if trace.meta.get("generator") != "indexer" or len(trace.requests) != 1:
        return []
    model = IndexerModel.from_dict(trace.meta["indexer"]["model"])
    g = trace.geometry
    indices = np.asarray(trace.indices[:])
    out = []
    for group in GROUPS:
        layers = [i for i in range(g.layers) if model.group_of(i, g.layers) == group]
        if not layers:
            continue
        sub = Trace.from_arrays(np.ascontiguousarray(indices[:, layers]), trace.context_lens,
                                g.with_overrides(layers=len(layers)), source=group)  # fmt: skip
        out.append({"group": group, "layers": layers, "rows": policy_rows(group, sub)})
    return out


def study(name: str, path: Path, command: str) -> dict:
    trace = open_trace(path)
    rows = policy_rows(name, trace)
    ctx = [int(x.max_context) for x in trace.requests]
    return {
        "name": name, "command": command, "layers": trace.geometry.layers,
        "top_k": trace.geometry.top_k, "requests": len(trace.requests), "steps": trace.steps,
        "max_context": ctx, "kv_bytes_per_token": trace.geometry.kv_bytes_per_token,
        "accesses": rows[0]["hits"] + rows[0]["misses"], "rows": rows,
        "groups": layer_groups(trace),
    }  # fmt: skip


GROUP_POLICIES = ("token-lru", "hazard-plus", "min")
FAMILIES = ("recordings", "statistics", "indexer")


def family(t: dict) -> str:
    """recordings, or the generator a synthetic trace's command names."""
    if t["name"] in RECORDINGS:
        return "recordings"
    return "indexer" if "--generator indexer" in t["command"] else "statistics"


def _cell(rows: list[dict], policy: str, ratio: float, key: str) -> dict:
    return next(r for r in rows if r["buffer_policy"] == policy and r["ratio"] == ratio)[key]


def markdown(res: dict) -> str:
    pols = sorted(level_policies(), key=lambda p: (p == "min", p))
    head = "| trace | policy | " + " | ".join(f"N = {r:g} k" for r in RATIOS) + " |\n"
    sep = "| --- | --- |" + " --- |" * len(RATIOS) + "\n"
    out = ["Buffer hit rate (fraction of selected rows found in the buffer):\n\n", head, sep]
    for t in res["traces"]:
        for p in pols:
            cells = " | ".join(f"{_cell(t['rows'], p, r, 'buffer_hit_rate'):.3f}" for r in RATIOS)
            out.append(f"| {t['name']} | {p} | {cells} |\n")
    out.append("\nHost reads per step and per (request, layer), KiB: mean / p99 of the steps' "
               "totals divided by requests x layers:\n\n")  # fmt: skip
    out += [head, sep]
    for t in res["traces"]:
        per = t["requests"] * t["layers"] * 1024
        for p in pols:
            cells = " | ".join(
                f"{_cell(t['rows'], p, r, 'host_bytes_per_step_mean') / per:.0f} / "
                f"{_cell(t['rows'], p, r, 'host_bytes_per_step_p99') / per:.0f}"
                for r in RATIOS
            )
            out.append(f"| {t['name']} | {p} | {cells} |\n")
    out.append("\nMean over traces of each policy's hit rate, and what it buys over token-lru "
               "(hit-rate points), per trace family:\n\n")  # fmt: skip
    out += [head.replace("trace", "traces"), sep]
    for group in FAMILIES:
        ts = [t for t in res["traces"] if family(t) == group]
        if not ts:
            continue
        for p in pols:
            cells = []
            for r in RATIOS:
                h = np.mean([_cell(t["rows"], p, r, "buffer_hit_rate") for t in ts])
                lru = np.mean([_cell(t["rows"], "token-lru", r, "buffer_hit_rate") for t in ts])
                cells.append(f"{h:.3f} ({100 * (h - lru):+.1f})")
            out.append(f"| {group} ({len(ts)}) | {p} | {' | '.join(cells)} |\n")
    grouped = [t for t in res["traces"] if t.get("groups")]
    if grouped:
        out.append("\nIndexer-model traces by layer group (each group's layers replayed on their "
                   "own; for all but hazard and hazard-plus, which then learn from the group's "
                   "layers only, the whole trace is their access-weighted mean):\n\n")  # fmt: skip
        out += [head.replace("| trace |", "| trace | group (layers) |"),
                sep.replace("| --- |", "| --- | --- |", 1)]  # fmt: skip
        for t in grouped:
            for grp in t["groups"]:
                for p in GROUP_POLICIES:
                    cells = " | ".join(f"{_cell(grp['rows'], p, r, 'buffer_hit_rate'):.3f}"
                                       for r in RATIOS)  # fmt: skip
                    out.append(f"| {t['name']} | {grp['group']} ({len(grp['layers'])}) | {p} | "
                               f"{cells} |\n")  # fmt: skip
    out.append("\nTraces:\n\n")
    for t in res["traces"]:
        ceiling = 1 - t["rows"][0]["cold_misses"] / t["accesses"]
        out.append(f"- {t['name']}: `{t['command']}` ({t['requests']} request(s), "
                   f"{t['layers']} layers, k = {t['top_k']}, {t['steps']} steps, largest "
                   f"context {max(t['max_context'])}; first selections are "
                   f"{1 - ceiling:.1%} of the accesses: no policy's hit rate passes "
                   f"{ceiling:.3f})\n")  # fmt: skip
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("hierarchy-traces"))
    ap.add_argument("--out", type=Path, default=Path("docs/hierarchy-policies"))
    ap.add_argument("--traces", default=None, help="Comma-separated trace names (default: all).")
    ap.add_argument("--from-json", action="store_true")
    args = ap.parse_args()
    out = args.out
    if args.from_json:
        res = json.loads(out.with_suffix(".json").read_text())
    else:
        names = None if args.traces is None else args.traces.split(",")
        synth = {**SYNTH, **INDEXER}
        rec = [n for n in RECORDINGS if names is None or n in names]
        paths = build_recordings(args.cache, rec) if rec else {}
        paths.update(build_synth(args.cache, {n: a for n, a in synth.items()
                                              if names is None or n in names}))  # fmt: skip
        res = {"ratios": RATIOS, "policies": level_policies(), "traces": []}
        for name, path in paths.items():
            t0 = time.perf_counter()
            res["traces"].append(study(name, path, command_of(name, synth)))
            print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    plot_buffer([r for t in res["traces"] for r in t["rows"]], out.with_suffix(".png"), host=False)
    print(markdown(res))


if __name__ == "__main__":
    main()
