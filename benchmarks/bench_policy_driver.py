"""The shared replay driver (sim/policies/driver.py) against the hand-written kernels it replaced.

For token-lru, fifo, keep-previous and min (now hooks in the shared driver) and line-lru and
near-miss (own kernels, now with the shared list moves), both versions replay the same in-memory
traces in this run, alternately, and the best engine seconds (SimResult.engine_seconds'
definition: the policy's own calls, backward pass included) of each are compared; hit and miss
counts must be identical. The old kernels are the files of a git revision (--baseline; default
f0f1036, the last commit before the driver), copied into a temporary directory and imported.

Traces (synthesized in memory at the paper's statistics):
- bench_token_lru.py's: 10 layers, k = 2048, 1000 steps, 32K context (20.5 M accesses);
- DeepSeek-V3.2 geometry: 61 layers, k = 2048, 300 steps, 32K context (37.5 M accesses).
Capacities: 0.5x one step's footprint (layers x k tokens) on both, bench_token_lru.py's 65536
and 262144 on the first, 2x the footprint on DeepSeek's. Target: new / old <= 1.10.

    .venv/bin/python benchmarks/bench_policy_driver.py [--baseline REV] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters
from dsacache.sim.policies.driver import replay
from dsacache.trace import Geometry
from dsacache.trace.blocks import StepBlocks
from dsacache.trace.synth import synthesize

TARGET = 1.10
BASELINE = "f0f1036"  # the last commit with the hand-written kernels
ROOT = Path(__file__).resolve().parents[1]
OLD_FILES = ("lru", "keep_previous", "belady", "line_lru", "near_miss")


def load_old(rev: str, tmp: Path) -> dict[str, type]:
    """The policy classes of revision `rev` (its OLD_FILES), not registered."""
    classes: dict[str, type] = {}
    mods = {}
    for name in OLD_FILES:
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:src/dsacache/sim/policies/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        src = src.replace("@register\n", "")  # the old classes must not replace the new ones
        path = tmp / f"old_{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"old_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod

    class OldFIFO(mods["lru"].ListPolicy):
        promote = False

    classes["token-lru"] = mods["lru"].TokenLRU
    classes["fifo"] = OldFIFO
    classes["keep-previous"] = mods["keep_previous"].KeepPrevious
    classes["min"] = mods["belady"].Belady
    classes["line-lru"] = mods["line_lru"].LineLRU
    classes["near-miss"] = mods["near_miss"].NearMiss
    return classes


def run_once(cls: type, blocks: StepBlocks, spec: str, cap: int) -> tuple[float, int, int]:
    """(engine seconds, hits, misses) of one replay."""
    layers = blocks.layers
    policy = cls(blocks, parse_partition(spec, layers, cap), blocks.trace.geometry)
    counters = Counters.zeros(layers, lines=cls.counts_lines)
    engine = replay(policy, blocks, counters)
    return engine, int(counters.hits.sum()), int(counters.misses.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old kernels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policy", action="append", help="default: all six (repeatable)")
    ap.add_argument("--trace", action="append", choices=["bench", "deepseek"])
    args = ap.parse_args()
    policies = args.policy or ["token-lru", "fifo", "keep-previous", "min", "line-lru", "near-miss"]
    traces = {  # geometry, steps, capacities (tokens)
        "bench": (Geometry(10, 2048, 656, 132, 64), 1000, (10240, 65536, 262144)),
        "deepseek": (Geometry(61, 2048, 656, 132, 64), 300, (62464, 249856)),
    }
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.baseline, Path(tmp))
        for name in policies:  # compile both versions before any clock
            POLICIES[name].warmup()
            old[name].warmup()
        for tname in args.trace or list(traces):
            geometry, steps, capacities = traces[tname]
            t0 = time.perf_counter()
            trace = synthesize(geometry, steps, 32768)
            plain, near = StepBlocks(trace), StepBlocks(trace, near_miss=True)
            print(f"{tname}: {trace!r} ({time.perf_counter() - t0:.1f} s to synthesize)")
            for name in policies:
                blocks = near if POLICIES[name].uses_near_miss else plain
                for cap in capacities:
                    best = {"old": np.inf, "new": np.inf}
                    counts = {}
                    for _ in range(args.repeats):
                        for which, cls in (("old", old[name]), ("new", POLICIES[name])):
                            s, h, m = run_once(cls, blocks, "global", cap)
                            best[which] = min(best[which], s)
                            counts[which] = (h, m)
                    same = counts["old"] == counts["new"]
                    ratio = best["new"] / best["old"]
                    n = sum(counts["new"])
                    ok &= same and ratio <= TARGET
                    print(
                        f"  {name:13s} capacity {cap:>7,}: old {best['old']:.3f} s, new "
                        f"{best['new']:.3f} s ({n / best['new'] / 1e6:.0f} M/s), new/old "
                        f"{ratio:.3f}, counts {'identical' if same else 'DIFFERENT'}"
                    )
    print(f"{'PASS' if ok else 'FAIL'}: every new/old <= {TARGET:.2f} with identical counts")


if __name__ == "__main__":
    main()
