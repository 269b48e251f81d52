"""Benchmark: DeepSeek-V3.2 geometry, 1000 steps from a 32K context, written in chunks.

Target (issue 2): under 60 s and under 2 GB of memory on the 2-core dev machine.
Run: .venv/bin/python benchmarks/bench_synth.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from dsacache.trace import Geometry, preset
from dsacache.trace.synth import synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--out", type=Path, default=None, help="keep the trace here")
    args = ap.parse_args()
    # Warm the JIT on a tiny trace so the figure is generation + compression + writes.
    synthesize(Geometry(2, 16, 656, 132, 64), 4, 64)
    tmp = Path(tempfile.mkdtemp(prefix="dsacache-bench-"))
    out = args.out or tmp / "ds.zarr"
    try:
        start = time.perf_counter()
        trace = synthesize(preset("deepseek-v3.2"), args.steps, args.context, out=out, seed=0)
        wall = time.perf_counter() - start
        rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        size_mib = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / 2**20
        slots = args.steps * trace.geometry.layers * trace.geometry.top_k
        print(f"synth deepseek-v3.2: {args.steps} steps x 61 layers x k=2048 from {args.context}")
        print(
            f"  wall {wall:.1f} s ({slots / wall / 1e6:.2f} M slots/s), peak RSS {rss_gb:.2f} GB,"
        )
        print(f"  store {size_mib:.0f} MiB on disk")
        ok = wall < 60 and rss_gb < 2
        print(f"  target < 60 s and < 2 GB: {'PASS' if ok else 'FAIL'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
