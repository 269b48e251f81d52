"""Engine speed of the online learned policies against token-lru, on a DeepSeek-V3.2-geometry
trace (61 layers, k=2048; synthetic at the paper's statistics), in one run.

Engine seconds (simulate(): the policy's own calls, no trace reading, no JIT) at 0.25x, 1x and
4x the step footprint; the ratio to token-lru's time at the same capacity is the figure of
merit (the issue's target: hazard within 2x of token-lru).

    .venv/bin/python benchmarks/bench_policy_speed.py [--steps 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

from dsacache.sim import SimConfig, simulate
from dsacache.trace import preset
from dsacache.trace.synth import synthesize

POLICIES = ("token-lru", "keep-previous", "hazard", "hazard-plus", "min")
FRACTIONS = (0.25, 1.0, 4.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--repeat", type=int, default=3, help="best of N engine times")
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()
    t0 = time.perf_counter()
    g = preset("deepseek-v3.2")
    trace = synthesize(g, args.steps, args.context, seed=0)
    fp = g.layers * g.top_k
    n = trace.steps * fp
    print(f"trace: deepseek-v3.2 synthetic, {args.steps} steps, {g.layers} layers, k={g.top_k}, "
          f"{n:,} accesses ({time.perf_counter() - t0:.0f} s to build)")  # fmt: skip
    names = [p for p in args.policies.split(",") if p]
    secs: dict[str, list[float]] = {}
    for name in names:
        row = []
        for f in FRACTIONS:
            cfg = SimConfig(name, capacity_tokens=int(f * fp))
            row.append(min(simulate(trace, cfg).engine_seconds for _ in range(args.repeat)))
        secs[name] = row
    base = secs.get("token-lru")
    print(f"{'policy':<14}" + "".join(f"{f:>8}x s  ratio" for f in FRACTIONS) + "  (M acc/s)")
    for name, row in secs.items():
        cells = "".join(
            f"{s:>10.2f} {s / base[i] if base else float('nan'):>6.2f}" for i, s in enumerate(row)
        )
        print(f"{name:<14}{cells}  ({n / 1e6 / max(row):.1f}-{n / 1e6 / min(row):.1f})")


if __name__ == "__main__":
    main()
