"""Speed of `dsacache hierarchy` (sim/hierarchy.py) against `dsacache simulate` on the same trace,
in one run: the ratio of their times is the number (the machine is noisy; absolute times are
not).

Trace (synthesized in memory at the paper's statistics): DeepSeek-V3.2 geometry reduced to 8
layers, k = 2048, 2 requests, 500 steps from a 32K context (16.4 M accesses). For each policy:
- simulate: the token region of `simulate`, per-layer partition, N x requests tokens a layer
  (the same capacity in all as the buffers; no row rules, no per-step tallies);
- hierarchy: per-(request, layer) buffers of N = 4096 rows with the row rules, cold misses and
  per-step host bytes;
- hierarchy + LLC: the same with a 37.5 MiB token-lru LLC region in front (two replays).
Times are the best of --repeats of each call's wall time (compiles excluded: one warm-up call
first), alternating the variants; engine seconds are printed beside them.

    .venv/bin/python benchmarks/bench_hierarchy.py [--repeats 3] [--policies token-lru,min]
"""

from __future__ import annotations

import argparse
import time

from dsacache.sim import SimConfig, simulate
from dsacache.sim.hierarchy import HierarchyConfig, simulate_hierarchy
from dsacache.trace import Geometry
from dsacache.trace.synth import synthesize

BUFFER = 4096
LLC_MIB = 37.5  # the H200's persisting-L2 maximum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", default="token-lru,fifo,keep-previous,hazard-plus,min")
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args()
    g = Geometry(8, 2048, 656, 132, 64)
    trace = synthesize(g, args.steps, 32768, seed=0, requests=2)
    n_acc = trace.count_accesses()
    print(f"trace: {g.layers} layers, k={g.top_k}, 2 requests, {args.steps} steps, "
          f"{n_acc / 1e6:.1f} M accesses; buffer N = {BUFFER}")  # fmt: skip
    variants = {
        "simulate": lambda p: simulate(
            trace, SimConfig(p, capacity_tokens=BUFFER * 2 * g.layers, partition="per-layer")
        ),
        "hierarchy": lambda p: simulate_hierarchy(trace, HierarchyConfig(BUFFER, p)),
        "hierarchy+llc": lambda p: simulate_hierarchy(
            trace, HierarchyConfig(BUFFER, p, LLC_MIB, "token-lru")
        ),
    }
    print(f"{'policy':<14}" + "".join(f"{v:>22}" for v in variants) + "   hierarchy / simulate")
    for policy in args.policies.split(","):
        best = {v: float("inf") for v in variants}
        engine = {v: float("inf") for v in variants}
        for fn in variants.values():
            fn(policy)  # compile and warm
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                r = fn(policy)
                best[name] = min(best[name], time.perf_counter() - t0)
                engine[name] = min(engine[name], r.engine_seconds)
        cells = "".join(f"{best[v]:>9.3f} s ({engine[v]:6.3f})" for v in variants)
        ratio = best["hierarchy"] / best["simulate"]
        with_llc = best["hierarchy+llc"] / best["simulate"]
        print(f"{policy:<14}{cells}   {ratio:.2f} (with LLC {with_llc:.2f})")
    print("times: best wall seconds of each call (engine seconds in brackets)")


if __name__ == "__main__":
    main()
