"""Throughput of `dsacache.analysis.analyze` on an in-memory DSA-like trace.

1000 steps x 10 layers x k=2048 over a 32K-token context (~20 M accesses). Each (step, layer)
keeps ~45 % of the previous step's tokens and draws the rest at random, so the metrics land
near the paper's (new-lookup fraction ~0.55). Target: >= 5 M accesses/s end to end.

    .venv/bin/python benchmarks/bench_analyze.py [--steps N] [--layers L] [--k K]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from dsacache.analysis import analyze
from dsacache.trace import Geometry, Trace

TARGET = 5e6


@numba.njit(cache=True)
def _generate(steps: int, layers: int, k: int, context: int, keep: float, seed: int) -> np.ndarray:
    np.random.seed(seed)
    out = np.empty((steps, layers, k), dtype=np.int32)
    mark = np.zeros(context, dtype=np.int64)  # stamp of the row that holds the token
    stamp = 0
    for t in range(steps):
        for l in range(layers):  # noqa: E741
            stamp += 1
            n = 0
            if t > 0:
                for j in range(k):
                    tok = out[t - 1, l, j]
                    if np.random.random() < keep:
                        out[t, l, n] = tok
                        mark[tok] = stamp
                        n += 1
            while n < k:
                tok = np.random.randint(0, context)
                if mark[tok] != stamp:
                    out[t, l, n] = tok
                    mark[tok] = stamp
                    n += 1
    return out


def make_trace(steps: int, layers: int, k: int, context: int, seed: int = 0) -> Trace:
    idx = _generate(steps, layers, k, context, 0.45, seed)
    geometry = Geometry(layers, k, 656, 132, 64)
    return Trace.from_arrays(idx, np.full(steps, context, dtype=np.int64), geometry)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--k", type=int, default=2048)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    analyze(make_trace(4, 2, 8, 64))  # warm the JIT (compile or load from cache)
    t0 = time.perf_counter()
    trace = make_trace(args.steps, args.layers, args.k, args.context)
    print(f"generated {trace!r} in {time.perf_counter() - t0:.2f} s")

    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run = analyze(trace)
        wall = time.perf_counter() - t0
        if wall < best:
            best, result = wall, run
    rate = result.accesses / best
    d = result.to_dict()
    print(
        f"new_lookup={d['new_lookup_fraction']:.3f} persistence={d['persistence_mean_steps']:.3f} "
        f"lookback={d['lookback_mean_steps']:.3f} interlayer={d['interlayer_overlap']:.3f} "
        f"ws={d['working_set_ratio']:.3f} page={d['page_utilization']:.3f}"
    )
    print(
        f"analyze: {result.accesses:,} accesses in {best:.3f} s end to end "
        f"(kernel {result.engine_seconds:.3f} s): {rate / 1e6:.1f} M accesses/s"
    )
    print(f"{'PASS' if rate >= TARGET else 'FAIL'}: target {TARGET / 1e6:.0f} M accesses/s")


if __name__ == "__main__":
    main()
