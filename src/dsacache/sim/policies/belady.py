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
the capacity (token-lru, fifo, hazard*); a policy that may hold m times its capacity
(max_occupancy_factor; keep-previous: 2) is bounded by MIN at m times the capacity. A
prefetching policy (near-miss) can miss less than MIN, but its misses plus prefetches (tokens
read from HBM) are never fewer than MIN's misses. line-lru is NOT bounded when
kv_bytes_per_token is not a multiple of 128: a 128-byte line shared by neighbouring tokens acts
as a prefetch of the neighbour (see line_lru.py); with whole-line rows it is.

Row rules (base.RowRules). no_bypass gives demand paging (every miss is inserted, the
furthest-used resident key is evicted): MIN as libCacheSim's Belady computes it. protect_row
evicts the furthest next use among the residents the current row does not select: begin_row
gives the row's residents priority -1 (below every next use), its misses enter at -1 too, and
end_row raises each of the row's tokens to its next use. With both, this is the fewest misses
any demand policy can have under the same rules (each eviction takes the resident whose next
use is furthest among those it may take).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from dsacache.sim.policies.base import register
from dsacache.sim.policies.driver import DrivenPolicy, Hooks, Row, make_replay
from dsacache.trace.blocks import StepBlock

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


class MinState(NamedTuple):
    """heap[2*j] / heap[2*j+1]: priority (next use) / key of heap node j; region p's heap is
    nodes heap_off[p] .. heap_off[p] + occupancy - 1 (a binary max-heap, root first);
    pos_of[key] = the key's node, -1 if not resident."""

    next_use: np.ndarray  # uint32 or int64 per access of the block
    heap: np.ndarray  # int64 [2 * slots]
    pos_of: np.ndarray  # int64 [keys]
    heap_off: np.ndarray  # int64 [regions]
    bypass: bool  # not RowRules.no_bypass
    never: int  # "never used again" in next_use's dtype


PINNED = -1  # the priority of a token of the row being replayed (below every next use)


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
def _sift_down(
    heap: np.ndarray, pos_of: np.ndarray, base: int, n: int, j: int, nu: int, key: int
) -> None:
    """Place (nu, key) at node j or below it, in a heap of n nodes (its priority fell, or it
    replaces the root)."""
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


# g = (the region's first heap node, RowRules.protect_row)


@njit(inline="always")
def _begin(st: MinState, row: Row, sel: np.ndarray, u: int) -> tuple:
    base = st.heap_off[row.p]
    if row.protect:  # the row's residents sink below every other resident
        for s in range(sel.shape[0]):
            if sel[s] >= 0:
                key = row.base + sel[s] * row.stride
                j = st.pos_of[key]
                if j >= 0:
                    _sift_down(st.heap, st.pos_of, base, u, j - base, PINNED, key)
    return base, row.protect


@njit(inline="always")
def _find(st: MinState, key: int, g: tuple, s: int) -> bool:
    return st.pos_of[key] >= 0


@njit(inline="always")
def _hit(st: MinState, key: int, g: tuple, i: int, s: int) -> tuple:
    """Its next use moves further out: sift up from its node (protect_row: at the row's end)."""
    base, protect = g
    if not protect:
        pos_of = st.pos_of
        _sift_up(st.heap, pos_of, base, pos_of[key] - base, np.int64(st.next_use[i]), key)
    return g


@njit(inline="always")
def _admit(st: MinState, key: int, g: tuple, i: int, s: int, u: int, full: bool) -> tuple:
    heap, pos_of = st.heap, st.pos_of
    base, protect = g
    nu = np.int64(st.next_use[i])
    if st.bypass and nu == st.never:
        return g, False
    pr = PINNED if protect else nu
    if not full:  # room: a new leaf
        _sift_up(heap, pos_of, base, u, pr, key)
        return g, True
    root = heap[2 * base]
    if (st.bypass and nu >= root) or root == PINNED:
        return g, False  # the incoming key is used furthest (or every resident is the row's)
    pos_of[heap[2 * base + 1]] = -1  # evict the root
    _sift_down(heap, pos_of, base, u, 0, pr, key)
    return g, True


@njit(inline="always")
def _end(st: MinState, row: Row, sel: np.ndarray, g: tuple, u: int) -> None:
    if row.protect:  # the row's tokens rise to their next uses
        i = row.i0
        for s in range(sel.shape[0]):
            if sel[s] >= 0:
                key = row.base + sel[s] * row.stride
                j = st.pos_of[key]
                if j >= 0:
                    base = g[0]
                    _sift_up(st.heap, st.pos_of, base, j - base, np.int64(st.next_use[i]), key)
                i += 1


min_replay = make_replay("min", Hooks(_begin, _find, _hit, _admit, _end))


# ---------------------------------------------------------------- the policy


@register
class Belady(DrivenPolicy):
    name = "min"
    summary = "Belady's MIN with bypass: the exact optimum (a bound, needs the future)"
    online = False
    prefetches = False
    needs_backward_pass = True
    emits_hit_mask = False  # it could (the driver fills masks); the LLC front runs no backward pass
    kernel = min_replay

    def build_state(self) -> None:
        self.heap_off = self.slot_off
        self.heap = np.zeros(2 * max(int(self.region_slots.sum()), 1), np.int64)
        self.pos_of = np.full(max(self.blocks.keys.size, 1), -1, np.int64)
        self._next: dict[int, np.ndarray] = {}  # block start -> next-use positions
        self._nxt: np.ndarray | None = None  # per key, during the backward pass
        self._seen = 0

    def prepare_block(self, block: StepBlock) -> None:
        keys = self.blocks.keys
        if self._nxt is None:
            self._nxt = np.full(max(keys.size, 1), NEVER32, np.uint32)
            if self.wide:
                self._widen()
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

    def state(self, block: StepBlock) -> MinState:
        if block.start not in self._next:
            raise RuntimeError("min: prepare() must run first, over the same step blocks")
        next_use = self._next.pop(block.start)
        never = int(np.iinfo(next_use.dtype).max)
        rules = self.rules
        return MinState(
            next_use,
            self.heap,
            self.pos_of,
            self.heap_off,
            not rules.no_bypass,
            never,
        )
