"""Throughput of `dsacache.analysis.analyze` on calibrated synthetic traces, in memory.

Two cases: 1000 steps x 10 layers x k=2048 from a 32K context (~20 M accesses; per-key state
fits the caches) and DeepSeek-V3.2 geometry (61 layers, k=2048) for 300 steps (~37 M accesses;
per-key state of 61 layers x 33K tokens does not). Target: >= 5 M accesses/s end to end.

Each case also runs with --predictability (rank in slot order, and by score with random scores
attached), timed in the same run, reported as a ratio to the plain pass.

    .venv/bin/python benchmarks/bench_analyze.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dsacache.analysis import analyze
from dsacache.trace import Geometry, RequestTrace, Trace, preset
from dsacache.trace.synth import synthesize

TARGET = 5e6
CASES = [
    ("10 layers x k=2048, 1000 steps", Geometry(10, 2048, 656, 132, 64), 1000),
    ("deepseek-v3.2 (61 layers x k=2048), 300 steps", preset("deepseek-v3.2"), 300),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--context", type=int, default=32768)
    args = ap.parse_args()
    analyze(synthesize(Geometry(2, 8, 656, 132, 64), 4, 64))  # warm the JIT
    ok = True
    for label, geometry, steps in CASES:
        t0 = time.perf_counter()
        trace = synthesize(geometry, steps, args.context)
        print(f"{label}: generated in {time.perf_counter() - t0:.1f} s")
        rng = np.random.default_rng(0)
        scored = Trace(
            [
                RequestTrace(r.indices, r.context_lens, scores=_scores(r.indices, rng))
                for r in trace.requests
            ],
            trace.geometry,
            validate=False,
        )
        variants = {
            "plain": (trace, {}),
            "predictability, slot rank": (trace, {"predictability": True}),
            "predictability, score rank": (scored, {"predictability": True}),
        }
        times = dict.fromkeys(variants, float("inf"))
        result = None
        for _ in range(args.repeats):  # interleaved: the machine's noise hits all alike
            for name, (tr, kwargs) in variants.items():
                t0 = time.perf_counter()
                run = analyze(tr, **kwargs)
                wall = time.perf_counter() - t0
                if name == "plain" and wall < times[name]:
                    result = run
                times[name] = min(times[name], wall)
        best = times["plain"]
        rate = result.accesses / best
        d = result.to_dict()
        print(
            f"  new_lookup={d['new_lookup_fraction']:.3f} "
            f"persistence={d['persistence_mean_steps']:.3f} "
            f"lookback={d['lookback_mean_steps']:.3f} interlayer={d['interlayer_overlap']:.3f} "
            f"ws={d['working_set_ratio']:.3f} page={d['page_utilization']:.3f}"
        )
        print(
            f"  {result.accesses:,} accesses in {best:.2f} s end to end "
            f"(kernel {result.engine_seconds:.2f} s): {rate / 1e6:.1f} M accesses/s"
        )
        for name in list(variants)[1:]:
            print(f"  {name}: {times[name]:.2f} s, {times[name] / best:.2f}x the plain pass")
        ok &= rate >= TARGET
    print(f"{'PASS' if ok else 'FAIL'}: target {TARGET / 1e6:.0f} M accesses/s in every case")


def _scores(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(indices.shape, dtype=np.float32)
    return np.where(indices >= 0, values, np.float32(np.nan))


if __name__ == "__main__":
    main()
