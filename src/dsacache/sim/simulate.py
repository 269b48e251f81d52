"""The token-level driver: replay a trace against a reserved region under one policy.

`simulate(trace, cfg)` feeds the policy the trace's interleaved step blocks in access order
(step -> layer -> request -> slot) and returns hits and misses, per layer and in total.
engine_seconds is the policy's own time (its backward pass if it needs one, prepare() and every
run_block()); compiling the kernels (warmup, before the clock starts) and reading /
decompressing / interleaving the blocks are excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsacache.sim.config import SimConfig
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters
from dsacache.sim.policies.driver import replay
from dsacache.trace.blocks import StepBlocks
from dsacache.trace.model import Trace
from dsacache.units import LINE_BYTES, MIB


@dataclass
class SimResult:
    """Outcome of one simulation. Per-layer arrays are int64 [layers]; a `prefetch` is a token
    the policy brought into the region ahead of demand (an HBM read no access asked for).

    capacity_tokens is the capacity asked for in tokens (from MiB: rounded down, see
    SimConfig), requested_mib the MiB asked for (None when given in tokens);
    effective_capacity_tokens what the regions hold in all (per-layer: floor(N / layers) x
    layers). line_hits / line_misses: 128-byte line accesses for a line-granular policy
    (line-lru), whose traffic is counted in lines. near_miss_source: where `near-miss` took its
    prefetches from (None for the other policies)."""

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
    effective_capacity_tokens: int | None = None
    per_layer_line_hits: np.ndarray | None = None
    per_layer_line_misses: np.ndarray | None = None
    requested_mib: float | None = None
    near_miss_source: str | None = None

    @property
    def capacity_mib(self) -> float:
        return self.capacity_tokens * self.kv_bytes_per_token / MIB

    @property
    def effective_tokens(self) -> int:
        eff = self.effective_capacity_tokens
        return int(self.capacity_tokens if eff is None else eff)

    @property
    def line_hits(self) -> int | None:
        lh = self.per_layer_line_hits
        return None if lh is None else int(lh.sum())

    @property
    def line_misses(self) -> int | None:
        lm = self.per_layer_line_misses
        return None if lm is None else int(lm.sum())

    @property
    def reserved_bytes(self) -> int:
        """KV gather bytes the region served (line hits x 128 B for a line policy)."""
        if self.line_hits is not None:
            return self.line_hits * LINE_BYTES
        return int(self.hits) * self.kv_bytes_per_token

    @property
    def hbm_bytes(self) -> int:
        """KV gather bytes read from HBM on demand (line misses x 128 B for a line policy)."""
        if self.line_misses is not None:
            return self.line_misses * LINE_BYTES
        return int(self.misses) * self.kv_bytes_per_token

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain Python numbers and lists."""
        kv = self.kv_bytes_per_token
        pre = self.per_layer_prefetches
        eff = self.effective_tokens
        out: dict[str, Any] = {
            "policy": self.policy,
            "partition": self.partition,
            "requested_capacity_mib": self.requested_mib,
            "capacity_tokens": int(self.capacity_tokens),
            "capacity_mib": float(self.capacity_mib),
            "effective_capacity_tokens": eff,
            "effective_capacity_mib": eff * kv / MIB,
            "kv_bytes_per_token": int(kv),
            "accesses": int(self.accesses),
            "hits": int(self.hits),
            "misses": int(self.misses),
            "hit_rate": float(self.hit_rate),
            "prefetches": int(self.prefetches),
            "near_miss_source": self.near_miss_source,
            "engine_seconds": float(self.engine_seconds),
            "bytes": {
                "kv_gather_reserved": self.reserved_bytes,
                "kv_gather_hbm": self.hbm_bytes,
                "prefetch_hbm": int(self.prefetches) * kv,
            },
            "per_layer": {
                "hits": [int(x) for x in self.per_layer_hits],
                "misses": [int(x) for x in self.per_layer_misses],
                "prefetches": [] if pre is None else [int(x) for x in pre],
            },
        }
        if self.per_layer_line_hits is not None and self.per_layer_line_misses is not None:
            out["line_bytes"] = LINE_BYTES
            out["line_hits"] = self.line_hits
            out["line_misses"] = self.line_misses
            out["per_layer"]["line_hits"] = [int(x) for x in self.per_layer_line_hits]
            out["per_layer"]["line_misses"] = [int(x) for x in self.per_layer_line_misses]
        return out


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
    source = cfg.near_miss_source
    # near-miss rows are read only when the policy is told to prefetch from them
    blocks = StepBlocks(trace, near_miss=policy_cls.uses_near_miss and source == "trace")
    policy = policy_cls(blocks, partition, g)
    policy.configure(cfg)
    counters = Counters.zeros(g.layers, lines=policy_cls.counts_lines)
    engine = replay(policy, blocks, counters, progress)

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
        effective_capacity_tokens=int(partition.capacity.sum()),
        per_layer_line_hits=counters.line_hits,
        per_layer_line_misses=counters.line_misses,
        requested_mib=None if cfg.capacity_mib is None else float(cfg.capacity_mib),
        near_miss_source=source,
    )
