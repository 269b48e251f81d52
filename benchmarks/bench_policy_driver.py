"""Every policy on the one driver (sim/policies/driver.py) against its own kernel from before.

Both versions of every registered policy replay the same in-memory traces in this run,
alternately, and the best engine time of each is compared (SimResult.engine_seconds' definition:
the policy's own calls, backward pass included, here as the thread's CPU seconds: the machine
is shared, and a descheduled process loses wall time, not CPU time); hit and miss counts (and
prefetches, line tallies) must be identical. The old policies are the package of a git
revision (--baseline; default 2653439, the last commit before every policy ran on the
driver), copied into a temporary directory under another package name and imported, so old and
new kernels live side by side.

Traces (synthesized in memory at the paper's statistics, near-miss rows modelled):
- bench: 10 layers, k = 2048, 1000 steps, 32K context (20.5 M accesses);
- deepseek: DeepSeek-V3.2 geometry, 61 layers, k = 2048, 100 steps, 32K context (12.5 M).
Capacities: 0.5x one step's footprint (layers x k tokens) and 65536 on the first, 2x the
footprint on the second. Target: new / old <= 1.10. --cold also times the new version with
cold-miss counting on (Counters.cold_misses) against the same old one.

    .venv/bin/python benchmarks/bench_policy_driver.py [--baseline REV] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsacache.sim.config import SimConfig
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters
from dsacache.sim.policies.driver import warm_up
from dsacache.trace import Geometry, RequestTrace, Trace
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.synth import synthesize
from dsacache.trace.synth_near_miss import near_miss_for

TARGET = 1.10
BASELINE = "2653439"  # the last commit before every policy ran on the driver
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/dsacache/sim/policies"


def load_old(rev: str, tmp: Path) -> dict[str, type]:
    """The registry of revision `rev`'s policy package, imported as `old_policies`."""
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:{PACKAGE}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    pkg = tmp / "old_policies"
    pkg.mkdir()
    for name in names:
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{PACKAGE}/{name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (pkg / name).write_text(re.sub(r"dsacache\.sim\.policies\b", "old_policies", src))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("old_policies").POLICIES


def cpu_replay(policy: object, blocks: list[StepBlock], counters: Counters) -> float:
    """replay()'s engine time, as this thread's CPU seconds (a shared machine deschedules a
    process at random; its CPU time stays), over blocks read beforehand."""
    clock = time.thread_time
    t0 = clock()
    if policy.needs_backward_pass:
        for block in reversed(blocks):
            policy.prepare_block(block)
    policy.prepare()
    for block in blocks:
        policy.run_block(block, counters)
    return clock() - t0


def run_once(
    cls: type, blocks: StepBlocks, cap: int, source: str | None, cold: bool = False
) -> tuple[float, tuple]:
    """(engine CPU seconds, every tally) of one replay."""
    layers = blocks.layers
    policy = cls(blocks, parse_partition("global", layers, cap), blocks.trace.geometry)
    if source is not None:
        if hasattr(policy, "configure"):
            policy.configure(SimConfig(cls.name, capacity_tokens=cap, near_miss_source=source))
        else:
            policy.set_source(source)
    counters = Counters.zeros(layers, lines=cls.counts_lines, cold=cold)
    engine = cpu_replay(policy, blocks.read_all, counters)
    tallies = [counters.hits, counters.misses, counters.prefetches]
    tallies += [counters.line_hits, counters.line_misses]
    return engine, tuple(0 if a is None else int(a.sum()) for a in tallies)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old policies")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policy", action="append", help="default: every registered one")
    ap.add_argument("--trace", action="append", choices=["bench", "deepseek"])
    ap.add_argument("--cold", action="store_true", help="new version counts cold misses")
    args = ap.parse_args()
    traces = {  # geometry, steps, capacities (tokens)
        "bench": (Geometry(10, 2048, 656, 132, 64), 1000, (10240, 65536)),
        "deepseek": (Geometry(61, 2048, 656, 132, 64), 100, (249856,)),
    }
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.baseline, Path(tmp))
        policies = args.policy or sorted(set(POLICIES) & set(old))
        for name in policies:  # compile both versions before any clock
            POLICIES[name].warmup()
            if args.cold:
                warm_up(POLICIES[name], cold=True)
            old[name].warmup()
        for tname in args.trace or list(traces):
            geometry, steps, capacities = traces[tname]
            t0 = time.perf_counter()
            trace = synthesize(geometry, steps, 32768)
            near_rows = near_miss_for(trace, 64)
            trace = Trace(
                [
                    RequestTrace(r.indices, r.context_lens, m)
                    for r, m in zip(trace.requests, near_rows, strict=True)
                ],
                geometry,
            )
            plain, near = StepBlocks(trace), StepBlocks(trace, near_miss=True)
            for b in (plain, near):
                b.read_all = list(b)
            print(f"{tname}: {trace!r} ({time.perf_counter() - t0:.1f} s to synthesize)")
            for name in policies:
                nm = POLICIES[name].uses_near_miss
                blocks = near if nm else plain
                for cap in capacities:
                    best = {"old": np.inf, "new": np.inf}
                    counts = {}
                    for _ in range(args.repeats):
                        for which, cls in (("old", old[name]), ("new", POLICIES[name])):
                            cold = args.cold and which == "new"
                            s, c = run_once(cls, blocks, cap, "trace" if nm else None, cold)
                            best[which] = min(best[which], s)
                            counts[which] = c
                    same = counts["old"] == counts["new"]
                    ratio = best["new"] / best["old"]
                    n = counts["new"][0] + counts["new"][1]
                    ok &= same and ratio <= TARGET
                    print(
                        f"  {name:13s} capacity {cap:>7,}: old {best['old']:.3f} s, new "
                        f"{best['new']:.3f} s ({n / best['new'] / 1e6:.0f} M/s), new/old "
                        f"{ratio:.3f}, counts {'identical' if same else 'DIFFERENT'}",
                        flush=True,
                    )
    print(f"{'PASS' if ok else 'FAIL'}: every new/old <= {TARGET:.2f} with identical counts")


if __name__ == "__main__":
    main()
