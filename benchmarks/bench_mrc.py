"""Benchmark: exact miss-ratio curve (Mattson + Fenwick) on a 20 M-access DSA trace.

Trace: synthesize(Geometry(10, 2048, 656, 132, 64), 1000 steps, 32768 context) in memory:
1000 steps x 10 layers x k=2048 = 20.48 M accesses. Target (issue 4): >= 10 M accesses/s.
The figure is wall-clock time of `mrc()` (compile excluded by a warm-up call; block
interleaving included), also shown as the engine's own time. Baseline in the same run:
libCacheSim's LRU at ONE capacity on the same accesses (exported as oracleGeneral, unit
sizes), which must give the same hits as the curve at that capacity.

The run prints an overall verdict and exits nonzero (1) when a speed target is missed or the
curve's hits differ from libCacheSim's.

Run: .venv/bin/python benchmarks/bench_mrc.py [--steps N] [--no-baseline] [--sample-rate R]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dsacache.sim.mrc import mrc
from dsacache.trace import Geometry
from dsacache.trace.synth import synthesize

TARGET = 10e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--no-baseline", action="store_true", help="skip the libCacheSim run")
    ap.add_argument("--sample-rate", type=float, default=0.01, help="also time SHARDS at R")
    args = ap.parse_args()

    failures: list[str] = []
    g = Geometry(10, 2048, 656, 132, 64)
    trace = synthesize(g, args.steps, args.context, seed=0)
    mrc(synthesize(Geometry(2, 16, 656, 132, 64), 4, 64))  # compile / load the kernels
    for part in ("global", "per-layer"):
        t0 = time.perf_counter()
        curve = mrc(trace, part)
        wall = time.perf_counter() - t0
        n = curve.accesses
        print(
            f"mrc {part}: {n:,} accesses, wall {wall:.2f} s ({n / wall / 1e6:.1f} M acc/s), "
            f"engine {curve.engine_seconds:.2f} s ({n / curve.engine_seconds / 1e6:.1f} M acc/s),"
            f" {curve.compactions} compactions, {curve.cold_misses:,} cold, "
            f"saturates at {curve.saturation_tokens:,} tokens "
            f"({float(curve.capacity_mib(curve.saturation_tokens)):.1f} MiB)"
        )
        ok = n / wall >= TARGET
        print(f"  target >= {TARGET / 1e6:.0f} M accesses/s (wall): {'PASS' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"mrc {part} below {TARGET / 1e6:.0f} M accesses/s")
        if part == "global":
            exact = curve

    if args.sample_rate:
        t0 = time.perf_counter()
        sampled = mrc(trace, "global", sample_rate=args.sample_rate)
        wall = time.perf_counter() - t0
        caps = exact.points(100)
        err = abs(sampled.hits_at_many(caps) - exact.hits_at_many(caps)) / exact.accesses
        print(
            f"SHARDS R={args.sample_rate}: wall {wall:.2f} s "
            f"({sampled.accesses / wall / 1e6:.1f} M acc/s), hit-rate error vs exact over "
            f"{caps.size} capacities: mean {err.mean():.4f}, max {err.max():.4f}"
        )

    if not args.no_baseline:
        import libcachesim as lcs

        from dsacache.trace.export_libcachesim import export_libcachesim

        tmp = Path(tempfile.mkdtemp(prefix="dsacache-bench-"))
        try:
            path = tmp / "t.oracleGeneral"
            export_libcachesim(trace, path, object_size=1)
            cap = 4 * g.layers * g.top_k
            reader = lcs.TraceReader(trace=str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
            t0 = time.perf_counter()
            miss_ratio = lcs.LRU(cache_size=cap, hashpower=22).process_trace(reader)[0]
            base = time.perf_counter() - t0
            n = exact.accesses
            lcs_hits = n - round(miss_ratio * n)
            print(
                f"libCacheSim LRU, one capacity ({cap:,} tokens): {base:.2f} s "
                f"({n / base / 1e6:.1f} M acc/s); the whole curve took "
                f"{exact.engine_seconds / base:.2f}x that (engine time)"
            )
            same = lcs_hits == exact.hits_at(cap)
            print(
                f"  hits at {cap:,}: libCacheSim {lcs_hits:,}, curve {exact.hits_at(cap):,}: "
                f"{'SAME: PASS' if same else 'DIFFERENT: FAIL'}"
            )
            if not same:
                failures.append(f"hits at {cap:,} differ from libCacheSim LRU")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS: every target met" + ("" if args.no_baseline else ", same hits as libCacheSim"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
