"""The token-level driver: replay a trace against a reserved region under one policy.

`simulate(trace, cfg)` feeds the policy the trace's interleaved step blocks in access order
(step -> layer -> request -> slot) and returns hits and misses, per layer and in total.
engine_seconds is the policy's own time (prepare() plus every run_block()); compiling the
kernels (warmup, before the clock starts) and reading/interleaving the blocks are excluded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsacache.sim.config import MIB, SimConfig
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters
from dsacache.trace.blocks import StepBlocks
from dsacache.trace.model import Trace


@dataclass
class SimResult:
    """Outcome of one simulation. Per-layer arrays are int64 [layers]; a `prefetch` is a token
    the policy brought into the region ahead of demand (an HBM read no access asked for)."""

    policy: str
    partition: str
    capacity_tokens: int
    accesses: int
    hits: int
    misses: int
    hit_rate: float
    engine_seconds: float
    per_layer_hits: np.ndarray
    per_layer_misses: np.ndarray
    prefetches: int = 0
    per_layer_prefetches: np.ndarray | None = None
    kv_bytes_per_token: int = 0

    @property
    def capacity_mib(self) -> float:
        return self.capacity_tokens * self.kv_bytes_per_token / MIB

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain Python numbers and lists."""
        kv = self.kv_bytes_per_token
        pre = self.per_layer_prefetches
        return {
            "policy": self.policy,
            "partition": self.partition,
            "capacity_tokens": int(self.capacity_tokens),
            "capacity_mib": float(self.capacity_mib),
            "kv_bytes_per_token": int(kv),
            "accesses": int(self.accesses),
            "hits": int(self.hits),
            "misses": int(self.misses),
            "hit_rate": float(self.hit_rate),
            "prefetches": int(self.prefetches),
            "engine_seconds": float(self.engine_seconds),
            "bytes": {
                "kv_gather_reserved": int(self.hits) * kv,
                "kv_gather_hbm": int(self.misses) * kv,
                "prefetch_hbm": int(self.prefetches) * kv,
            },
            "per_layer": {
                "hits": [int(x) for x in self.per_layer_hits],
                "misses": [int(x) for x in self.per_layer_misses],
                "prefetches": [] if pre is None else [int(x) for x in pre],
            },
        }


def simulate(
    trace: Trace, cfg: SimConfig, progress: Callable[[int], None] | None = None
) -> SimResult:
    """Replay `trace` against the reserved region `cfg` describes.

    progress: called with the number of steps of each block once it has been replayed (the
    calls sum to trace.steps).
    """
    policy_cls = POLICIES[cfg.policy]
    g = trace.geometry
    capacity = cfg.tokens(g)
    partition = parse_partition(cfg.partition, g.layers, capacity)
    policy_cls.warmup()
    blocks = StepBlocks(trace, near_miss=policy_cls.uses_near_miss)
    policy = policy_cls(blocks, partition, g)
    counters = Counters.zeros(g.layers)

    t0 = time.perf_counter()
    policy.prepare()
    engine = time.perf_counter() - t0
    for block in blocks:
        t0 = time.perf_counter()
        policy.run_block(block, counters)
        engine += time.perf_counter() - t0
        if progress is not None:
            progress(block.stop - block.start)

    hits, misses = int(counters.hits.sum()), int(counters.misses.sum())
    accesses = hits + misses
    return SimResult(
        policy=cfg.policy,
        partition=partition.spec,
        capacity_tokens=capacity,
        accesses=accesses,
        hits=hits,
        misses=misses,
        hit_rate=hits / accesses if accesses else 0.0,
        engine_seconds=engine,
        per_layer_hits=counters.hits,
        per_layer_misses=counters.misses,
        prefetches=int(counters.prefetches.sum()),
        per_layer_prefetches=counters.prefetches,
        kv_bytes_per_token=g.kv_bytes_per_token,
    )
