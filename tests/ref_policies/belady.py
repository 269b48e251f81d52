"""`min`: Belady's MIN with bypass, the exact optimum (fewest misses) for unit-size objects.

Each region is an independent cache (keys are per (request, layer, token), so regions never
share a key). On a miss when the region is full, the incoming key's next use is compared with
the furthest next use among the resident keys: if the incoming key is used furthest in the
future (or never), it is bypassed (not inserted); otherwise the resident key used furthest is
evicted and the incoming one takes its place. A key never used again is never inserted (that
changes no hit count: it would be the first victim anyway).

The next-use pass (engine time; the driver reads the blocks outside the clock): the driver
hands prepare_block() every step block from the last to the first; a dense "next position"
table, one entry per key (as export_libcachesim's _fill_block), gives every access the reverse
rank of its key's next access, and prepare() turns the ranks into 0-based positions in the
whole trace's access order. Memory: 4 bytes per access (uint32 positions, one array per block,
plus 4 bytes per key during the pass) while the trace has fewer than 2**32 - 1 accesses; 8
bytes per access (int64) beyond. The "never used again" sentinel is the array type's maximum
(`never`); if the pass outgrows uint32 midway, every array is widened to int64.

The resident keys of each region live in an indexed binary max-heap on next use ((priority,
key) pairs in one flat array, each region its own segment; pos_of[key] = the key's heap node,
-1 if not resident). A hit raises the key's priority to its new next use (sift up); an
eviction replaces the root (sift down). Every access costs O(log capacity).

MIN bounds every policy that fetches a token only when it is accessed and never holds more than
the capacity (token-lru, fifo, hazard*). keep-previous checks a row against the previous step's
kept tokens while it keeps the current row's, so it holds up to twice its capacity: MIN at twice
the capacity bounds it, at equal capacity it can miss less. A prefetching policy (near-miss) can
miss less than MIN, but its misses plus prefetches (tokens read from HBM) are never fewer than
MIN's misses. line-lru is NOT bounded when kv_bytes_per_token is not a multiple of 128: a
128-byte line shared by neighbouring tokens acts as a prefetch of the neighbour (see
line_lru.py); with whole-line rows it is.

`bypass=False` gives demand paging (every miss is inserted, the furthest-used resident key is
evicted): MIN as libCacheSim's Belady computes it; not registered, used by the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from ref_policies.base import register
from ref_policies.driver import DrivenPolicy, Hooks, make_replay, same_g

NEVER = np.iinfo(np.int64).max  # "never used again" in int64 arrays
NEVER32 = np.iinfo(np.uint32).max  # ... in uint32 arrays
# Positions are stored as uint32 while the trace's accesses stay below this (tests lower it).
SMALL_LIMIT = int(NEVER32)


# ---------------------------------------------------------------- next-use pass


@njit(cache=True, boundscheck=False)
def next_use_block(
    block: np.ndarray,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    nxt: np.ndarray,
    out: np.ndarray,
    seen: int,
) -> int:
    """Walk block [steps, layers, requests, k] backwards; `seen` accesses follow it.

    nxt[key]: reverse rank (accesses after it, counted from the trace's end) of the key's next
    access, the dtype's maximum if none; updated to this block's first access of the key.
    out[i] (access i of the block in access order, same dtype as nxt) gets the reverse rank of
    its next use. Returns the new `seen`, or -1 - (block row) of an index out of range.
    """
    nb, nl, nr, k = block.shape
    i = out.shape[0]
    for t in range(nb - 1, -1, -1):
        for layer in range(nl - 1, -1, -1):
            for r in range(nr - 1, -1, -1):
                lim = max_ctx[r]
                base = key_off[r] + layer * lim
                for s in range(k - 1, -1, -1):
                    tok = block[t, layer, r, s]
                    if tok < 0:
                        continue
                    if tok >= lim or i == 0:
                        return -1 - t
                    i -= 1
                    key = base + tok
                    out[i] = nxt[key]
                    nxt[key] = seen
                    seen += 1
    return seen


@njit(cache=True, boundscheck=False)
def to_positions(out: np.ndarray, total: int, never: int) -> None:
    """Reverse ranks -> 0-based positions in access order (`never` stays), in place."""
    for i in range(out.shape[0]):
        v = out[i]
        if v != never:
            out[i] = total - 1 - v


# ---------------------------------------------------------------- replay with an indexed max-heap


# st = (next_use, heap, pos_of, heap_n, heap_off, bypass, never); g = (heap size, first node,
# capacity) of the region. heap[2*j] / heap[2*j+1]: priority (next use) / key of heap node j;
# region p's heap is nodes heap_off[p] .. heap_off[p] + heap_n[p] - 1 (a binary max-heap, root
# first); pos_of[key] = the key's node, -1 if not resident.


@njit(inline="always")
def _begin(st: tuple, t: int, step: int, layer: int, p: int, c: int) -> tuple:
    return st[3][p], st[4][p], c


@njit(inline="always")
def _find(st: tuple, key: int, g: tuple) -> bool:
    return st[2][key] >= 0


@njit(inline="always")
def _sift_up(heap: np.ndarray, pos_of: np.ndarray, base: int, j: int, nu: int, key: int) -> None:
    """Place (nu, key) at node j or above it (its priority grew, or a new leaf)."""
    while j > 0:
        par = (j - 1) >> 1
        pp = heap[2 * (base + par)]
        if pp >= nu:
            break
        pk = heap[2 * (base + par) + 1]
        heap[2 * (base + j)] = pp
        heap[2 * (base + j) + 1] = pk
        pos_of[pk] = base + j
        j = par
    heap[2 * (base + j)] = nu
    heap[2 * (base + j) + 1] = key
    pos_of[key] = base + j


@njit(inline="always")
def _hit(st: tuple, key: int, g: tuple, i: int) -> tuple:
    """Its next use moves further out: sift up from its node."""
    heap, pos_of = st[1], st[2]
    base = g[1]
    _sift_up(heap, pos_of, base, pos_of[key] - base, np.int64(st[0][i]), key)
    return g


@njit(inline="always")
def _miss(st: tuple, key: int, g: tuple, i: int) -> tuple:
    next_use, heap, pos_of, bypass, never = st[0], st[1], st[2], st[5], st[6]
    n, base, c = g
    nu = np.int64(next_use[i])
    if bypass and nu == never:
        return g
    if n < c:  # room: a new leaf
        _sift_up(heap, pos_of, base, n, nu, key)
        return n + 1, base, c
    if bypass and nu >= heap[2 * base]:
        return g  # the incoming key is used furthest: bypass it
    pos_of[heap[2 * base + 1]] = -1  # evict the root, sift down
    j = 0
    while True:
        ch = 2 * j + 1
        if ch >= n:
            break
        cp = heap[2 * (base + ch)]
        if ch + 1 < n:
            rp = heap[2 * (base + ch + 1)]
            if rp > cp:
                ch += 1
                cp = rp
        if cp <= nu:
            break
        ck = heap[2 * (base + ch) + 1]
        heap[2 * (base + j)] = cp
        heap[2 * (base + j) + 1] = ck
        pos_of[ck] = base + j
        j = ch
    heap[2 * (base + j)] = nu
    heap[2 * (base + j) + 1] = key
    pos_of[key] = base + j
    return g


@njit(inline="always")
def _end(st: tuple, p: int, g: tuple) -> None:
    st[3][p] = g[0]


min_replay = make_replay("min", Hooks(_begin, same_g, _find, _hit, _miss, _end))


# ---------------------------------------------------------------- the policy


def region_keys(partition: Partition, max_context: np.ndarray) -> np.ndarray:
    """Keys each region can ever hold (int64 [regions]): max_context[r] per (request, layer) of
    its layers (line-lru passes lines per (request, layer) area instead)."""
    per_layer = int(np.asarray(max_context, np.int64).sum())
    out = np.zeros(partition.regions, np.int64)
    for p in partition.of_layer:
        if p >= 0:
            out[p] += per_layer
    return out


@register
class Belady(DrivenPolicy):
    name = "min"
    summary = "Belady's MIN with bypass: the exact optimum (a bound, needs the future)"
    online = False
    prefetches = False
    needs_backward_pass = True
    emits_hit_mask = False  # it could (the driver fills masks); the LLC front runs no backward pass
    kernel = min_replay
    bypass: bool = True

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        keys = blocks.keys
        alloc = np.minimum(partition.capacity, region_keys(partition, keys.max_context))
        self.heap_off = np.zeros(partition.regions, np.int64)
        self.heap_off[1:] = np.cumsum(alloc)[:-1]
        self.heap_n = np.zeros(partition.regions, np.int64)
        self.heap = np.zeros(2 * max(int(alloc.sum()), 1), np.int64)
        self.pos_of = np.full(max(keys.size, 1), -1, np.int64)
        self._next: dict[int, np.ndarray] = {}  # block start -> next-use positions
        self._nxt: np.ndarray | None = None  # per key, during the backward pass
        self._seen = 0

    def prepare_block(self, block: StepBlock) -> None:
        keys = self.blocks.keys
        if self._nxt is None:
            self._nxt = np.full(max(keys.size, 1), NEVER32, np.uint32)
        n = int(np.count_nonzero(block.indices >= 0))
        if self._nxt.dtype == np.uint32 and self._seen + n >= SMALL_LIMIT:
            self._widen()
        out = np.empty(n, self._nxt.dtype)
        got = next_use_block(
            block.indices, keys.key_offset, keys.max_context, self._nxt, out, self._seen
        )
        if got < 0:
            raise self.index_error(block.start - 1 - got)
        self._seen = got
        self._next[block.start] = out

    def _widen(self) -> None:
        """uint32 -> int64 for every array of the pass (the trace outgrew uint32)."""

        def wide(a: np.ndarray) -> np.ndarray:
            w = a.astype(np.int64)
            w[a == NEVER32] = NEVER
            return w

        self._nxt = wide(self._nxt)
        self._next = {start: wide(a) for start, a in self._next.items()}

    def prepare(self) -> None:
        if self._nxt is None:  # no backward pass ran: an empty trace, or a driver bug
            if len(self.blocks):
                raise RuntimeError("min: the driver must run the backward pass first")
            return
        never = NEVER32 if self._nxt.dtype == np.uint32 else NEVER
        self._nxt = None
        for out in self._next.values():
            to_positions(out, self._seen, never)

    def state(self, block: StepBlock) -> tuple:
        if block.start not in self._next:
            raise RuntimeError("min: prepare() must run first, over the same step blocks")
        next_use = self._next.pop(block.start)
        never = int(np.iinfo(next_use.dtype).max)
        return (next_use, self.heap, self.pos_of, self.heap_n, self.heap_off, self.bypass, never)

    @classmethod
    def warmup(cls) -> None:
        super().warmup()
        block = np.array([[[[0, 1, -1, 2]]], [[[1, 3, 0, -1]]], [[[2, 0, 3, 1]]]], np.int32)
        off, ctx = np.zeros(1, np.int64), np.full(1, 4, np.int64)
        for dtype, never in ((np.uint32, NEVER32), (np.int64, NEVER)):
            nxt = np.full(4, never, dtype)
            out = np.empty(9, dtype)
            seen = next_use_block(block, off, ctx, nxt, out, 0)
            to_positions(out, seen, int(never))
            for bypass in (True, False):
                heap_n, heap_off = np.zeros(1, np.int64), np.zeros(1, np.int64)
                heap, pos_of = np.zeros(4, np.int64), np.full(4, -1, np.int64)
                st = (out, heap, pos_of, heap_n, heap_off, bypass, int(never))
                z = [np.zeros(1, np.int64) for _ in range(2)]
                cap = np.full(1, 2, np.int64)
                min_replay(block, 0, off, ctx, np.zeros(1, np.int32), cap, st, z[0], z[1], None)


class BeladyNoBypass(Belady):
    """MIN without bypass (demand paging), as libCacheSim's Belady: for cross-checks only."""

    bypass = False
