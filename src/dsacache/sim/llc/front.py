"""The `token` reservation: a token-level region in front of the shared LLC.

This is the paper's architecture (docs/architecture.md "Cache engines and policy semantics": a
fully-associative store of whole tokens, checked before the shared LLC) inside the whole-LLC
model of run.py.

- Capacity. The reserved X MiB are carved out of the LLC as whole ways, rounded DOWN like every
  reservation (the region never holds more than was asked for): r = floor(X x 2**20 / (sets x
  128 B)) ways, effective size r x sets x 128 B (requested and effective are both reported);
  an X > 0 below one way is an error. The shared LLC keeps the other ways - r ways of every set (at
  least one must be left). The region holds floor(effective bytes / kv_bytes_per_token) tokens,
  split by the front partition exactly as the token-level simulator splits it (`global`,
  `per-layer`: floor(N / layers) each, `pinned:L1,...`).
- X = 0 is allowed: 0 ways, a region of 0 tokens, the shared LLC keeps every way, and every
  gather misses the region and goes to the shared LLC (the same result as `--reservation
  none`).
- Gathers. Every KV-gather access, in the token-level simulator's order (step -> layer ->
  request -> slot), goes to the region under the front policy (default token-lru), whose
  decisions are exactly `dsacache.sim.simulate`'s (same policy class, same kernel, same
  partition). A hit is served by the region: no LLC line, no HBM byte. A miss goes on to the
  shared LLC (the region is checked *before* the shared LLC): the token's KV row (its line span
  in the paged layout, neighbours' shared first/last lines counted again: the region stores
  whole tokens) is fed to the shared LLC as a kv-gather run, in stream order within its layer
  (after the layer's weights and index scans, before its appends, like every other mode). The
  LLC's answer decides the HBM bytes; lines that miss are filled into the shared LLC (normal
  fills under its policy) as well as into the region. Gathers of a layer outside every region
  (`pinned:`) are misses of the region and go to the shared LLC the same way.
- Everything else (weights, index scans, appends) runs through the shared LLC exactly as in the
  other modes (same stream, policy, hash, sectors, shortcut) with the remaining ways. The
  region's decisions never depend on the shared LLC, so a step block's gathers are decided in
  the region first, and the block's stream (region misses only) then replays in the LLC.
- Output. The `kv-gather` class row counts lines: accesses = lines of every gathered row,
  hits = lines of the rows the region served + the region misses' lines the shared LLC hit,
  misses = lines read from HBM, HBM bytes = the shared LLC's kv-gather bytes. `token_region`
  reports tokens: accesses, hits, misses, hit rate, capacity, ways, and the region's token
  misses per step. Blocking misses per step = kv-gather line misses of the shared LLC, the same
  unit as the other modes.

A front policy must report per-access hits (TokenPolicy.emits_hit_mask, `front_policies()`:
token-lru, fifo, keep-previous, hazard, hazard-plus; not min, whose backward pass this driver
does not run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dsacache.errors import DsacacheError
from dsacache.sim.llc.engine import LLCEngine
from dsacache.sim.llc.hardware import CacheShape
from dsacache.sim.llc.kernels import K_ACCESSES, K_BYTES, K_HITS, K_MISSES, RES_NONE
from dsacache.sim.llc.layout import Layout
from dsacache.sim.llc.reservation import ResolvedReservation
from dsacache.sim.llc.stream import KV_GATHER, build_runs, context_table
from dsacache.sim.partition import parse_partition
from dsacache.sim.policies import POLICIES, Counters, TokenPolicy
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.model import Trace
from dsacache.units import LINE_BYTES, MIB

TOKEN = "token"


def front_policies() -> list[str]:
    """The token policies that can run the region: those that report per-access hits."""
    return sorted(n for n, c in POLICIES.items() if c.emits_hit_mask)


def front_policy_class(name: str) -> type[TokenPolicy]:
    """The token policy `name`, which must report per-access hits."""
    able = front_policies()
    if name not in POLICIES:
        raise DsacacheError(f"unknown front policy {name!r} (usable: {', '.join(able)})")
    cls = POLICIES[name]
    if not cls.emits_hit_mask:
        raise DsacacheError(
            f"front policy {name!r} cannot report per-access hits (usable: {', '.join(able)})"
        )
    return cls


def resolve_token(
    shape: CacheShape, reserve_bytes: int, classes: tuple[int, ...]
) -> tuple[CacheShape, ResolvedReservation]:
    """(the shared LLC's shape, the reservation): reserve_bytes rounded down to whole ways."""
    if tuple(classes) != (KV_GATHER,):
        raise DsacacheError("token reservation serves kv-gather only (--reserved-classes)")
    way_bytes = shape.sets * LINE_BYTES
    ways = int(reserve_bytes) // way_bytes
    if reserve_bytes > 0 and ways < 1:
        raise DsacacheError(
            f"token reservation {reserve_bytes / MIB:g} MiB is less than one way "
            f"({way_bytes / MIB:g} MiB)"
        )
    if ways >= shape.ways:
        raise DsacacheError(
            f"token reservation {reserve_bytes / MIB:g} MiB takes {ways} of "
            f"{shape.ways} ways; leave at least one for the shared LLC"
        )
    res = ResolvedReservation(
        TOKEN,
        RES_NONE,
        (KV_GATHER,),
        int(reserve_bytes),
        ways * way_bytes,
        np.zeros(shape.sets, dtype=np.int64),
        ways,
    )
    return CacheShape(shape.sets, shape.ways - ways), res


@dataclass
class FrontResult:
    """What the region did, plus the kv-gather class row (lines) and per-step blocking."""

    policy: str
    partition: str
    capacity_tokens: int  # what the region holds in all (per-layer: floor(N / layers) x layers)
    ways: int
    shared_ways: int
    hits: int
    misses: int
    gather: np.ndarray  # int64 [4]: accesses, hits, misses, HBM bytes of kv-gather, in lines
    blocking: np.ndarray  # int64 [steps]: kv-gather line misses of the shared LLC per step
    region_misses: np.ndarray  # int64 [steps]: the region's token misses per step
    engine_seconds: float
    stream_seconds: float

    def to_dict(self) -> dict:
        n = self.hits + self.misses
        return {
            "policy": self.policy,
            "partition": self.partition,
            "capacity_tokens": self.capacity_tokens,
            "ways": self.ways,
            "shared_ways": self.shared_ways,
            "accesses": n,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / n if n else None,
            "hbm_bytes": int(self.gather[K_BYTES]),
            "misses_per_step": [int(x) for x in self.region_misses],
        }


def _gather_lines(layout: Layout, idx: np.ndarray) -> np.ndarray:
    """int64 [steps, layers, requests, k]: lines of each valid slot's KV row (0 if empty)."""
    _, L, R, _ = idx.shape
    valid = idx >= 0
    tok = np.where(valid, idx, 0).astype(np.int64)
    li = np.arange(L, dtype=np.int64)[None, :, None, None]
    ri = np.arange(R, dtype=np.int64)[None, None, :, None]
    first, last, _, _ = layout.kv_row_lines(li, ri, tok)
    return np.where(valid, last - first + 1, 0)


def run_front(
    trace: Trace,
    layout: Layout,
    engine: LLCEngine,
    res: ResolvedReservation,
    policy_name: str,
    partition_spec: str,
    n_steps: int,
    block_elements: int,
    progress: Callable[[int], None] | None = None,
) -> FrontResult:
    """Replay the first n_steps steps: gathers through the region, the rest through `engine`
    (the shared LLC, already built with the remaining ways)."""
    g = trace.geometry
    cls = front_policy_class(policy_name)
    partition = parse_partition(
        partition_spec, g.layers, res.effective_bytes // g.kv_bytes_per_token
    )
    cls.warmup()
    blocks = StepBlocks(trace, block_elements)
    policy = cls(blocks, partition, g)
    counters = Counters.zeros(g.layers)
    blocking = np.zeros(n_steps, dtype=np.int64)
    region_misses = np.zeros(n_steps, dtype=np.int64)
    gather = np.zeros(4, dtype=np.int64)
    engine_s = stream_s = 0.0
    t0 = time.perf_counter()
    policy.prepare()
    engine_s += time.perf_counter() - t0
    for a, b in blocks.bounds:
        if a >= n_steps:
            break
        t0 = time.perf_counter()
        blk = blocks.read(a, min(b, n_steps))
        T, L, R, _ = blk.indices.shape
        lines = _gather_lines(layout, blk.indices)
        t1 = time.perf_counter()
        stream_s += t1 - t0
        counters.hit_mask = np.zeros(blk.indices.shape, np.uint8)
        policy.run_block(blk, counters)
        hit = counters.hit_mask.view(bool)
        miss = (blk.indices >= 0) & ~hit
        region_misses[blk.start : blk.stop] = np.count_nonzero(miss.reshape(T, -1), axis=1)
        hit_lines = int(lines[hit].sum())
        gather[K_ACCESSES] += hit_lines
        gather[K_HITS] += hit_lines
        engine_s += time.perf_counter() - t1
        # the shared LLC's runs: the block's stream with only the region's misses gathered
        t0 = time.perf_counter()
        missed = StepBlock(blk.start, np.where(miss, blk.indices, -1).astype(np.int32), None)
        runs = build_runs(layout, missed, context_table(trace, blk.start, blk.stop))
        t1 = time.perf_counter()
        stream_s += t1 - t0
        blocking[blk.start : blk.stop] = engine.run(runs)
        engine_s += time.perf_counter() - t1
        if progress is not None:
            progress(T)
    counters.hit_mask = None
    llc = engine.counters[KV_GATHER]
    gather[K_ACCESSES] += llc[K_ACCESSES]
    gather[K_HITS] += llc[K_HITS]
    gather[K_MISSES] += llc[K_MISSES]
    gather[K_BYTES] += llc[K_BYTES]
    return FrontResult(
        policy=policy_name,
        partition=partition.spec,
        capacity_tokens=int(partition.capacity.sum()),
        ways=res.ways,
        shared_ways=engine.config.shape.ways,
        hits=int(counters.hits.sum()),
        misses=int(counters.misses.sum()),
        gather=gather,
        blocking=blocking,
        region_misses=region_misses,
        engine_seconds=engine_s,
        stream_seconds=stream_s,
    )
