"""`line-lru`: LRU over 128-byte lines instead of whole tokens (the ablation).

Layout (where a token's KV row lives). KV is paged, `block_tokens` (B) tokens per page, rows
packed within a page, the pages of one (request, layer) contiguous. The (request, layer) areas
lie back to back in the order request -> layer, each area starting on a 128-byte boundary (its
size rounded up to whole lines, so no line holds rows of two (request, layer) pairs and regions
never share a line). Token t of (r, l) occupies bytes

    [area(r, l) + (t // B) * B * kv + (t % B) * kv,  + kv)      (= area(r, l) + t * kv)

with kv = geometry.kv_bytes_per_token and the area sized for the request's largest context.
Its lines are floor(start / 128) .. floor((end - 1) / 128): neighbouring tokens share their
first/last line when kv is not a multiple of 128.

Replay. A token access touches each of its lines in order, each an LRU access of that line in
the layer's region (a miss inserts the line at the MRU end, evicting the LRU line when full).
The token access is a HIT iff all its lines hit. Region capacity in lines is
capacity_tokens * kv // 128 (floor). Counters.hits/misses count token accesses; the policy sets
counts_lines, so the driver also gives it per-layer line tallies (Counters.line_hits /
line_misses) and the traffic it reports is lines x 128 B (a token miss may fetch only some of
its lines; a shared line is fetched once for two tokens). A layer that bypasses the reservation
misses every token and every line.

Not bounded by `min`: when kv is not a multiple of 128, a line holds parts of neighbouring
tokens, so fetching one token's lines brings in (part of) its neighbours: a free prefetch at
line granularity. line-lru can then miss fewer *tokens* than MIN over whole tokens with the
same bytes (e.g. kv = 64, capacity 2 tokens = 1 line, accesses 0 1 0 1: line-lru misses once,
MIN twice). When kv is a multiple of 128 every row is whole lines of its own, line-lru equals
token-lru, and MIN <= line-lru holds (tests/test_sim_policies_extra.py checks both).

The slot-based LRU state (`SlotLRU`) is shared with `near-miss`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from ref_policies import list_moves as moves
from ref_policies.base import LINE_BYTES, Counters, TokenPolicy, register
from ref_policies.belady import region_keys

# ---------------------------------------------------------------- LRU lists over slots
#
# Each region p owns slots off[p] .. off[p] + alloc[p] - 1 and a sentinel node sent0 + p; its
# list is circular through the sentinel: link[2*n] = prev, link[2*n+1] = next of node n,
# sentinel.next the MRU id, sentinel.prev the LRU id. slot_of[x] is the slot holding id x (-1:
# not resident), ids[s] the id in slot s, used[p] the slots filled. The list moves are
# list_moves.py's, inlined; the kernels (here and in near_miss.py) are compiled without numba's
# reference counting (_nrt=False), which would otherwise count every inlined move's array
# arguments (measured 5-10x slower). Their walks stay their own: a token access touches several
# lines (line-lru), and prefetch rows interleave with the demand row (near-miss), which the
# driver's one-lookup-per-access hooks do not express.


class SlotLRU:
    """State of per-region LRU lists over dense ids 0..n_ids-1 (numpy arrays for the kernels).

    cap[p]: capacity of region p in ids; alloc[p] the ids region p can ever hold (slots
    allocated: min(cap, alloc)). Ids, slots and links are int32 when they fit (less memory
    traffic), else int64 (force64: always, to compile that variant).
    """

    def __init__(
        self, n_ids: int, cap: np.ndarray, alloc: np.ndarray, force64: bool = False
    ) -> None:
        self.cap = np.array(cap, np.int64)
        alloc = np.minimum(np.asarray(alloc, np.int64), self.cap)
        regions = len(alloc)
        self.off = np.zeros(regions, np.int64)
        self.off[1:] = np.cumsum(alloc)[:-1]
        n_slots = int(alloc.sum())
        self.sent0 = n_slots
        small = max(n_ids, n_slots + regions) < 2**31
        dtype = np.int32 if small and not force64 else np.int64
        self.slot_of = np.full(max(n_ids, 1), -1, dtype)
        self.ids = np.zeros(max(n_slots, 1), dtype)
        self.link = moves.new_lists(n_slots, regions, dtype == np.int32)
        self.used = np.zeros(regions, np.int64)

    def arrays(self) -> tuple:
        """(slot_of, ids, link, sent0, used, cap, off): the kernels' argument order."""
        return (self.slot_of, self.ids, self.link, self.sent0, self.used, self.cap, self.off)

    def resident(self, p: int) -> list[int]:
        """Ids held by region p, MRU first (for tests)."""
        out, n = [], int(self.link[2 * (self.sent0 + p) + 1])
        while n != self.sent0 + p:
            out.append(int(self.ids[n]))
            n = int(self.link[2 * n + 1])
        return out


# ---------------------------------------------------------------- line-lru kernel


@njit(cache=True, boundscheck=False, _nrt=False)
def _line_block(
    block: np.ndarray,
    area: np.ndarray,
    max_ctx: np.ndarray,
    kv: int,
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
    line_hits: np.ndarray,
    line_misses: np.ndarray,
) -> int:
    """Replay block [steps, layers, requests, k]; area[r, l] is the byte base of (r, l).

    Returns -1, or the block row of an index out of range.
    """
    nb, nl, nr, k = block.shape
    for t in range(nb):
        for layer in range(nl):
            p = of_layer[layer]
            c = cap[p] if p >= 0 else 0
            head = sent0 + p
            u = used[p] if p >= 0 else 0
            o = off[p] if p >= 0 else 0
            th = 0
            tm = 0
            lh = 0
            lm = 0
            for r in range(nr):
                base = area[r, layer]
                lim = max_ctx[r]
                for s in range(k):
                    tok = block[t, layer, r, s]
                    if tok < 0:
                        continue
                    if tok >= lim:
                        return t
                    start = base + tok * kv
                    first = start >> 7
                    last = (start + kv - 1) >> 7
                    if c <= 0:
                        tm += 1
                        lm += last - first + 1
                        continue
                    all_hit = True
                    for line in range(first, last + 1):
                        sl = slot_of[line]
                        if sl >= 0:
                            lh += 1
                            moves.to_front(link, sl, head)  # move to the MRU end
                            continue
                        lm += 1
                        all_hit = False
                        if u < c:
                            sl = o + u
                            u += 1
                        else:  # evict the LRU line
                            sl = moves.pop_back(link, head)
                            slot_of[ids[sl]] = -1
                        ids[sl] = line
                        slot_of[line] = sl
                        moves.push_front(link, sl, head)
                    if all_hit:
                        th += 1
                    else:
                        tm += 1
            if p >= 0:
                used[p] = u
            hits[layer] += th
            misses[layer] += tm
            line_hits[layer] += lh
            line_misses[layer] += lm
    return -1


def line_areas(max_context: np.ndarray, layers: int, kv: int) -> tuple[np.ndarray, int]:
    """Byte base of every (request, layer) area (int64 [requests, layers]) and total bytes."""
    size = np.asarray(max_context, np.int64) * kv
    size = -(-size // LINE_BYTES) * LINE_BYTES  # whole lines
    per = np.repeat(size, layers)  # request -> layer order
    base = np.zeros(per.shape[0], np.int64)
    base[1:] = np.cumsum(per)[:-1]
    return base.reshape(len(size), layers), int(per.sum())


@register
class LineLRU(TokenPolicy):
    name = "line-lru"
    summary = "LRU over 128-byte lines of the paged KV rows (a token hits iff all its lines hit)"
    online = True
    prefetches = False  # fetches only lines of requested tokens (see the module doc)
    counts_lines = True

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        kv = geometry.kv_bytes_per_token
        keys = blocks.keys
        self.kv = kv
        self.area, total = line_areas(keys.max_context, geometry.layers, kv)
        lines_of_area = -(-(keys.max_context * kv) // LINE_BYTES)  # per request
        cap = partition.capacity * kv // LINE_BYTES
        self.lru = SlotLRU(total // LINE_BYTES, cap, region_keys(partition, lines_of_area))
        self.of_layer = np.ascontiguousarray(partition.of_layer, np.int32)

    def run_block(self, block: StepBlock, counters: Counters) -> None:
        if counters.line_hits is None or counters.line_misses is None:
            raise ValueError("line-lru needs Counters.zeros(layers, lines=True)")
        bad = _line_block(
            block.indices,
            self.area,
            self.blocks.keys.max_context,
            self.kv,
            self.of_layer,
            *self.lru.arrays(),
            counters.hits,
            counters.misses,
            counters.line_hits,
            counters.line_misses,
        )
        if bad >= 0:
            raise self.index_error(block.start + bad)

    @classmethod
    def warmup(cls) -> None:
        block = np.array([[[[0, 1, -1]], [[2, -1, 0]]]], np.int32)  # [1, 2, 1, 3]
        area, total = line_areas(np.array([3]), 2, 200)
        for force64 in (False, True):  # both index widths
            lru = SlotLRU(total // LINE_BYTES, np.array([3]), np.array([3]), force64)
            z = [np.zeros(2, np.int64) for _ in range(4)]
            _line_block(
                block,
                area,
                np.full(1, 3, np.int64),
                200,
                np.array([0, -1], np.int32),
                *lru.arrays(),
                *z,
            )
