"""`token-lru`: exact least-recently-used replacement of whole tokens (the paper's policy).

State: one doubly-linked list per region over the dense key ids, kept in one flat array
`link` (link[2*i] = prev, link[2*i+1] = next, so a node's two pointers share a cache line).
Node n + p (n = number of keys) is region p's sentinel: the list is circular, sentinel.next is
the most recently used token, sentinel.prev the least recently used. link[2*key] == -1 means the
key is not cached. A hit moves the key to the MRU end; a miss inserts it there, first evicting
the region's LRU token when the region is full. A region of capacity 0 never inserts, and a
layer outside every region (partition.of_layer == -1) only misses.

`fifo` (fifo.py) runs the same kernel with promote=False: hits leave the order alone, so the
list is insertion order and the victim is the oldest insertion.

Both emit per-access hit masks (Counters.hit_mask): `list_block` takes `mask` = None (the
branch is pruned at compile time, so the plain replay is unchanged) or a uint8 array of the
block's shape, zeros on entry, in which it sets 1 at every hit.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from dsacache.sim.partition import Partition
from dsacache.sim.policies.base import Counters, TokenPolicy, register
from dsacache.sim.policies.common import count_bypassed
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry


@njit(cache=True, boundscheck=False)
def list_block(
    block: np.ndarray,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    of_layer: np.ndarray,
    cap: np.ndarray,
    size: np.ndarray,
    link: np.ndarray,
    sent0: int,
    promote: bool,
    hits: np.ndarray,
    misses: np.ndarray,
    mask: np.ndarray | None = None,
) -> int:
    """Replay block [steps, layers, requests, k]; return -1, or the block row of an index that
    is out of range (state is then undefined). mask: None, or uint8 of the block's shape
    (zeros on entry) that gets 1 at every hit."""
    nb, nl, nr, k = block.shape
    for t in range(nb):
        for layer in range(nl):
            p = of_layer[layer]
            h = 0
            m = 0
            if p < 0 or cap[p] == 0:  # bypass: every valid slot a miss
                m = count_bypassed(block, t, layer, max_ctx)
                if m < 0:
                    return t
                misses[layer] += m
                continue
            c = cap[p]
            sz = size[p]
            head = sent0 + p
            for r in range(nr):
                lim = max_ctx[r]
                base = key_off[r] + layer * lim
                for s in range(k):
                    tok = block[t, layer, r, s]
                    if tok < 0:
                        continue
                    if tok >= lim:
                        return t
                    key = base + tok
                    pv = link[2 * key]
                    if pv >= 0:
                        h += 1
                        if mask is not None:
                            mask[t, layer, r, s] = 1
                        if promote and pv != head:
                            nx = link[2 * key + 1]
                            link[2 * pv + 1] = nx  # unlink
                            link[2 * nx] = pv
                            first = link[2 * head + 1]  # relink at the MRU end
                            link[2 * key] = head
                            link[2 * key + 1] = first
                            link[2 * first] = key
                            link[2 * head + 1] = key
                        continue
                    m += 1
                    if sz >= c:  # evict the LRU (or oldest) token
                        v = link[2 * head]
                        vp = link[2 * v]
                        link[2 * vp + 1] = head
                        link[2 * head] = vp
                        link[2 * v] = -1
                    else:
                        sz += 1
                    first = link[2 * head + 1]
                    link[2 * key] = head
                    link[2 * key + 1] = first
                    link[2 * first] = key
                    link[2 * head + 1] = key
            size[p] = sz
            hits[layer] += h
            misses[layer] += m
    return -1


class ListPolicy(TokenPolicy):
    """Shared body of token-lru and fifo: a linked list per region, one kernel."""

    promote: bool = True
    emits_hit_mask = True

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        n, regions = blocks.keys.size, partition.regions
        dtype = np.int32 if n + regions < 2**31 else np.int64
        self.sent0 = n
        self.link = np.full(2 * (n + regions), -1, dtype=dtype)
        sentinels = np.arange(n, n + regions)
        self.link[2 * sentinels] = sentinels  # empty circular lists
        self.link[2 * sentinels + 1] = sentinels
        self.size = np.zeros(regions, np.int64)
        self.cap = np.ascontiguousarray(partition.capacity, dtype=np.int64)
        self.of_layer = np.ascontiguousarray(partition.of_layer, dtype=np.int32)

    def run_block(self, block: StepBlock, counters: Counters) -> None:
        keys = self.blocks.keys
        bad = list_block(
            block.indices,
            keys.key_offset,
            keys.max_context,
            self.of_layer,
            self.cap,
            self.size,
            self.link,
            self.sent0,
            self.promote,
            counters.hits,
            counters.misses,
            counters.hit_mask,
        )
        if bad >= 0:
            raise self.index_error(block.start + bad)

    @classmethod
    def warmup(cls) -> None:
        block = np.array([[[[0, 1, -1, 0]]], [[[1, 2, 0, -1]]]], dtype=np.int32)
        one = np.zeros(1, np.int64)
        for dtype, mask in itertools.product((np.int32, np.int64), (None, np.uint8)):
            link = np.full(2 * 5, -1, dtype=dtype)
            link[8] = link[9] = 4
            list_block(
                block,
                one.copy(),
                np.full(1, 4, np.int64),
                np.zeros(1, np.int32),
                np.full(1, 2, np.int64),
                np.zeros(1, np.int64),
                link,
                4,
                cls.promote,
                np.zeros(1, np.int64),
                np.zeros(1, np.int64),
                None if mask is None else np.zeros(block.shape, mask),
            )


@register
class TokenLRU(ListPolicy):
    name = "token-lru"
    summary = "exact LRU over whole tokens (the paper's reserved-region policy)"
    promote = True
