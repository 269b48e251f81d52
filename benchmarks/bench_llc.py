"""Throughput of the line-level LLC engine (sim/llc) on a long random-ish line stream.

Stream: KV-gather-like runs of 6 consecutive lines (a 656-byte row spans 6-7 lines) at random
line addresses over 4x the cache, interleaved with index-scan-like runs of 66 lines; ~20 M line
accesses in all, replayed line by line (the streaming shortcut off). Cache: 32768 sets x 16
ways of 128 B (64 MiB). Target: >= 20 M line accesses/s for LRU; SRRIP and DRRIP are reported.
Then the LRU and SRRIP streaming shortcuts on a weights-like sweep (4.7 M lines, H100 shape):
their time against the same sweep replayed line by line, with identical counters.

    .venv/bin/python benchmarks/bench_llc.py [--lines N] [--sets S] [--ways W]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dsacache.sim.llc.engine import EngineConfig, LLCEngine
from dsacache.sim.llc.hardware import CacheShape, hardware
from dsacache.sim.llc.stream import INDEX_SCAN, KV_GATHER, WEIGHTS, Runs

TARGET = 20e6


def make_stream(lines: int, sets: int, ways: int, seed: int = 0) -> Runs:
    rng = np.random.default_rng(seed)
    span = 4 * sets * ways
    n_runs = lines // 12  # half the lines in 6-line runs, half in 66-line runs (1 in 12)
    scan = rng.random(n_runs) < 1 / 12
    count = np.where(scan, 66, 6).astype(np.int64)
    first = rng.integers(0, span, n_runs).astype(np.int64)
    cls = np.where(scan, INDEX_SCAN, KV_GATHER).astype(np.int8)
    m = np.full(n_runs, 15, np.uint8)
    per_step = 10_000
    step_start = np.append(np.arange(0, n_runs, per_step), n_runs).astype(np.int64)
    return Runs(0, first, count, cls, m, m.copy(), step_start)


def replay(runs: Runs, shape: CacheShape, policy: str, shortcut: bool) -> tuple[float, LLCEngine]:
    eng = LLCEngine(EngineConfig(shape, policy, shortcut=shortcut))
    t0 = time.perf_counter()
    eng.run(runs)
    return time.perf_counter() - t0, eng


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=20_000_000)
    ap.add_argument("--sets", type=int, default=32768)
    ap.add_argument("--ways", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    shape = CacheShape(args.sets, args.ways)

    warm = make_stream(12_000, 4, 2)
    for policy in ("lru", "srrip", "drrip"):  # compile or load the kernels
        replay(warm, CacheShape(4, 2), policy, False)

    runs = make_stream(args.lines, args.sets, args.ways)
    n = int(runs.count.sum())
    print(
        f"stream: {n:,} line accesses in {len(runs):,} runs; cache {shape.sets} sets x "
        f"{shape.ways} ways ({shape.capacity_bytes >> 20} MiB)"
    )
    rates = {}
    for policy in ("lru", "srrip", "drrip"):
        best = min(replay(runs, shape, policy, False)[0] for _ in range(args.repeats))
        _, eng = replay(runs, shape, policy, False)
        hits = int(eng.counters[:, 1].sum())
        rates[policy] = n / best
        print(
            f"{policy:6s}: {best:.3f} s, {n / best / 1e6:.1f} M line accesses/s, "
            f"hit rate {hits / n:.3f}"
        )
    ok = rates["lru"] >= TARGET
    print(f"{'PASS' if ok else 'FAIL'}: LRU target {TARGET / 1e6:.0f} M line accesses/s")

    h100 = hardware("h100").shape
    sweep_lines = 4_739_000  # ~ DeepSeek-V3.2 weights of one layer (606 MB) in 128 B lines
    start = 4 * args.sets * args.ways + 123  # beyond the random stream's lines: all misses
    sweep = Runs(
        0,
        np.array([start], np.int64),
        np.array([sweep_lines], np.int64),
        np.array([WEIGHTS], np.int8),
        np.array([15], np.uint8),
        np.array([15], np.uint8),
        np.array([0, 1], np.int64),
    )
    for policy in ("lru", "srrip"):
        times = {}
        counts = {}
        for shortcut in (True, False):
            eng = LLCEngine(EngineConfig(h100, policy, shortcut=shortcut))
            eng.run(runs)  # same warm state for both
            t0 = time.perf_counter()
            eng.run(sweep)
            times[shortcut] = time.perf_counter() - t0
            counts[shortcut] = eng.counters.copy()
        same = np.array_equal(counts[True], counts[False])
        print(
            f"{policy}: weights sweep of {sweep_lines:,} lines on H100 ({h100.sets} x "
            f"{h100.ways}): shortcut {times[True] * 1e3:.1f} ms, line by line "
            f"{times[False] * 1e3:.1f} ms ({times[False] / times[True]:.0f}x), "
            f"counters identical: {same}"
        )


if __name__ == "__main__":
    main()
