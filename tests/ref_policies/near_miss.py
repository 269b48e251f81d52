"""`near-miss`: token LRU that also prefetches the tokens the indexer ranked just below the top-k.

Beyond the paper. The region is an exact token LRU (as `token-lru`); per (step, layer,
request) group, in access order:

- source `trace` (the trace carries near-miss indices; the driver passes block.near_miss,
  int32 [steps, layers, requests, m]): first the group's top-k demand accesses (LRU hits and
  misses exactly as token-lru), then the group's near-miss tokens are prefetched: each one not
  resident is inserted at the MRU end (evicting the LRU token when the region is full) and
  counted in Counters.prefetches (an HBM read no access asked for); a resident one is left
  where it is (not touched). They are meant for the following steps. A request without
  near-miss rows in such a trace gets no prefetches.
- source `layer-below`: a causal predictor (needs no near-miss rows).
  Right before layer l's demand accesses of a (step, request), the tokens layer l-1 selected
  at the same step and request are prefetched for layer l the same way (they are known by
  then: layer l-1's indexer has already run). Layer 0 has no layer below: nothing prefetched.

`source` (instance attribute) says which one is used. simulate() sets it from the run's
explicit choice (SimConfig.near_miss_source, set_source); built directly, the policy defaults to
`trace` when the trace carries near-miss rows, else `layer-below`. A trace with near-miss arrays
of width 0 (m = 0) under source `trace` has nothing to prefetch: exactly token-lru. Prefetches count
tokens actually inserted: none into a region of capacity 0 or for a layer that bypasses the
reservation (of_layer == -1, every access a miss). Demand counters (hits, misses) never
include prefetches.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.errors import DsacacheError
from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from dsacache.trace.model import Trace
from ref_policies import list_moves as moves
from ref_policies.base import Counters, TokenPolicy, register
from ref_policies.belady import region_keys
from ref_policies.line_lru import SlotLRU

SOURCE_TRACE = 0
SOURCE_LAYER_BELOW = 1


@njit(cache=True, boundscheck=False, _nrt=False)
def near_miss_block(
    block: np.ndarray,
    near: np.ndarray,
    source: int,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    of_layer: np.ndarray,
    slot_of: np.ndarray,
    ids: np.ndarray,
    link: np.ndarray,
    sent0: int,
    used: np.ndarray,
    cap: np.ndarray,
    off: np.ndarray,
    hits: np.ndarray,
    misses: np.ndarray,
    prefetches: np.ndarray,
) -> int:
    """Replay block [steps, layers, requests, k] with near [steps, layers, requests, m].

    Per (step, layer, request) three phases over one row each: 0 = prefetch the layer
    below's row (source layer-below), 1 = the demand accesses, 2 = prefetch the near-miss row
    (source trace). Returns -1, or the block row of an index out of range.
    """
    nb, nl, nr, k = block.shape
    for t in range(nb):
        for layer in range(nl):
            p = of_layer[layer]
            c = cap[p] if p >= 0 else 0
            head = sent0 + p
            u = used[p] if p >= 0 else 0
            o = off[p] if p >= 0 else 0
            h = 0
            m = 0
            pf = 0
            for r in range(nr):
                lim = max_ctx[r]
                base = key_off[r] + layer * lim
                for phase in range(3):
                    if phase == 0:
                        if c <= 0 or source != SOURCE_LAYER_BELOW or layer == 0:
                            continue
                        row = block[t, layer - 1, r]
                    elif phase == 1:
                        row = block[t, layer, r]
                    else:
                        if c <= 0 or source != SOURCE_TRACE or near.shape[3] == 0:
                            continue
                        row = near[t, layer, r]
                    demand = phase == 1
                    for s in range(row.shape[0]):
                        tok = row[s]
                        if tok < 0:
                            continue
                        if tok >= lim:
                            return t
                        x = base + tok
                        sl = slot_of[x]
                        if sl >= 0:
                            if demand:
                                h += 1
                                moves.to_front(link, sl, head)  # move to the MRU end
                            continue  # a resident prefetch is not touched
                        if demand:
                            m += 1
                            if c <= 0:
                                continue
                        else:
                            pf += 1
                        if u < c:
                            sl = o + u
                            u += 1
                        else:  # evict the LRU token
                            sl = moves.pop_back(link, head)
                            slot_of[ids[sl]] = -1
                        ids[sl] = x
                        slot_of[x] = sl
                        moves.push_front(link, sl, head)
            if p >= 0:
                used[p] = u
            hits[layer] += h
            misses[layer] += m
            prefetches[layer] += pf
    return -1


def has_rows(trace: Trace) -> bool:
    """Whether any request of `trace` carries near-miss rows (source `trace` needs them)."""
    return any(r.near_miss is not None for r in trace.requests)


@register
class NearMiss(TokenPolicy):
    name = "near-miss"
    summary = (
        "token LRU that prefetches the indexer's near-miss tokens (trace), else what the "
        "layer below selected at the same step"
    )
    online = True  # the trace's near-miss rows are the indexer's output at that step
    prefetches = True
    uses_near_miss = True

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        self.source = "trace" if has_rows(blocks.trace) else "layer-below"
        keys = blocks.keys
        cap = np.ascontiguousarray(partition.capacity, np.int64)
        self.lru = SlotLRU(keys.size, cap, region_keys(partition, keys.max_context))
        self.of_layer = np.ascontiguousarray(partition.of_layer, np.int32)
        self._none = np.full((1, 1, 1, 0), -1, np.int32)

    def set_source(self, source: str) -> None:
        """Use `source` (trace | layer-below); `trace` needs near-miss rows in the trace."""
        if source not in ("trace", "layer-below"):
            raise DsacacheError(f"unknown near-miss source {source!r} (trace, layer-below)")
        trace = self.blocks.trace
        if source == "trace" and not has_rows(trace):
            raise DsacacheError(
                f"{trace.source}: near-miss source 'trace' needs near-miss rows "
                "(dsacache record --near-miss M); this trace has none (use layer-below)"
            )
        self.source = source

    def run_block(self, block: StepBlock, counters: Counters) -> None:
        keys = self.blocks.keys
        near = block.near_miss if block.near_miss is not None else self._none
        src = SOURCE_TRACE if self.source == "trace" else SOURCE_LAYER_BELOW
        bad = near_miss_block(
            block.indices,
            near,
            src,
            keys.key_offset,
            keys.max_context,
            self.of_layer,
            *self.lru.arrays(),
            counters.hits,
            counters.misses,
            counters.prefetches,
        )
        if bad >= 0:
            raise self.index_error(block.start + bad, "indices/near_miss")

    @classmethod
    def warmup(cls) -> None:
        block = np.array([[[[0, 1, -1]], [[2, -1, 0]]]], np.int32)  # [1, 2, 1, 3]
        near = np.array([[[[2]], [[1]]]], np.int32)
        for src, force64 in ((SOURCE_TRACE, False), (SOURCE_LAYER_BELOW, True)):
            lru = SlotLRU(6, np.array([2]), np.array([2]), force64)
            z = [np.zeros(2, np.int64) for _ in range(3)]
            near_miss_block(
                block,
                near,
                src,
                np.zeros(1, np.int64),
                np.full(1, 3, np.int64),
                np.zeros(2, np.int32),
                *lru.arrays(),
                *z,
            )
