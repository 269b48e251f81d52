"""Hit rate vs reserved MiB for every token-level policy on a DeepSeek-V3.2 synthetic trace.

Each cell: demand hit rate, and in brackets the HBM token reads per access ((misses +
prefetches) / accesses) — prefetching policies can beat MIN's hit rate (MIN bounds demand
fetching only) but pay for it in reads. The trace is synthetic (calibrated to the paper's
statistics); its near-miss rows (m = 256 per step and layer, half of them tokens selected
at the next step) are a model, not measured, so the `near-miss` row shows what such
information would be worth. `near-miss (layer below)`
prefetches the layer below's selection instead (no near-miss data needed).

    .venv/bin/python benchmarks/policy_table.py [--steps 100] [--mib 10,20,40,80,160,320]
"""

from __future__ import annotations

import argparse
import time

from dsacache.sim import POLICIES, SimConfig, simulate
from dsacache.trace import RequestTrace, Trace, preset
from dsacache.trace.synth import synthesize
from dsacache.trace.synth_near_miss import near_miss_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--mib", default="10,20,40,80,160,320")
    ap.add_argument("--partition", default="global")
    args = ap.parse_args()
    sizes = [float(x) for x in args.mib.split(",")]
    t0 = time.perf_counter()
    plain = synthesize(preset("deepseek-v3.2"), args.steps, args.context, seed=0)
    near = near_miss_for(plain, 256, hit_share=0.5, seed=0)
    pairs = zip(plain.requests, near, strict=True)
    with_near = Trace(
        [RequestTrace(r.indices, r.context_lens, nm) for r, nm in pairs], plain.geometry, plain.meta
    )
    print(
        f"trace: deepseek-v3.2 synthetic, {args.steps} steps from {args.context} tokens, "
        f"partition {args.partition} ({time.perf_counter() - t0:.0f} s to build)"
    )
    rows = [(name, plain, None) for name in POLICIES if name != "near-miss"]
    rows += [("near-miss (layer below)", plain, "layer-below")]
    rows += [("near-miss (trace rows)", with_near, "trace")]
    print(f"{'policy':<26}" + "".join(f"{m:>12.0f} MiB" for m in sizes))
    for label, trace, source in rows:
        name = label.split(" ")[0]
        cells = []
        for mib in sizes:
            cfg = SimConfig(name, None, mib, args.partition, near_miss_source=source)
            r = simulate(trace, cfg)
            reads = (r.misses + r.prefetches) / max(r.accesses, 1)
            cells.append(f"{r.hit_rate:>8.4f} ({reads:.2f})")
        print(f"{label:<26}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
