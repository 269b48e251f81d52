"""Benchmark: the indexer-model generator at DeepSeek-V3.2 scale, streamed to a trace store.

Target (issue 15 item 4): 61 layers, k = 2048, 200 steps from a 64K context in <= 5 min on the
2-core dev machine, memory bounded; 128K works. The statistics generator runs on the same
geometry in the same process as the baseline (ratio), and the machine's load average is printed
beside every figure (the machine is shared).

    .venv/bin/python benchmarks/bench_synth_indexer.py [--steps 200] [--context 65536]
        [--also-context 131072] [--scores]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from dsacache.trace import Geometry, preset
from dsacache.trace.geometry import INDEXERS
from dsacache.trace.synth import synthesize
from dsacache.trace.synth_indexer import synthesize_indexer


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} / {five:.1f} / {fifteen:.1f}"


def run_indexer(steps: int, context: int, tmp: Path, scores: bool) -> float:
    out = tmp / f"ix-{context}.zarr"
    before = load()
    t0 = time.perf_counter()
    trace = synthesize_indexer(
        preset("deepseek-v3.2"), INDEXERS["deepseek-v3.2"], steps, context, seed=0, out=out,
        scores=scores,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    pairs = steps * trace.geometry.layers
    print(f"indexer deepseek-v3.2: {steps} steps x 61 layers x k=2048 from {context}"
          f"{' (+ scores)' if scores else ''}")  # fmt: skip
    print(f"  wall {wall:.1f} s ({pairs / wall:.0f} (step, layer) pairs/s), "
          f"peak RSS so far {peak_rss_gib():.2f} GiB, store {size_mib(out):.0f} MiB")  # fmt: skip
    print(f"  {before} before, {load()} after")
    ok = wall <= 300
    print(f"  target <= 300 s: {'PASS' if ok else 'FAIL'}")
    shutil.rmtree(out, ignore_errors=True)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--context", type=int, default=65536)
    ap.add_argument("--also-context", type=int, default=0, help="a second context (e.g. 131072)")
    ap.add_argument("--scores", action="store_true", help="store the scores too")
    args = ap.parse_args()
    # Warm the JIT on tiny traces so the figures are generation + compression + writes.
    tiny = Geometry(2, 16, 656, 132, 64)
    synthesize_indexer(tiny, INDEXERS["deepseek-v3.2"], 4, 64)
    synthesize(tiny, 4, 64)
    tmp = Path(tempfile.mkdtemp(prefix="dsacache-bench-"))
    try:
        t0 = time.perf_counter()
        synthesize(preset("deepseek-v3.2"), args.steps, args.context, out=tmp / "stats.zarr")
        stats = time.perf_counter() - t0
        print(f"stats deepseek-v3.2 (baseline): {args.steps} steps from {args.context}: "
              f"{stats:.1f} s ({load()})")  # fmt: skip
        wall = run_indexer(args.steps, args.context, tmp, args.scores)
        print(f"  indexer / stats: {wall / stats:.1f}x")
        if args.also_context:
            run_indexer(args.steps, args.also_context, tmp, args.scores)
        print(f"peak RSS of the whole run: {peak_rss_gib():.2f} GiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
