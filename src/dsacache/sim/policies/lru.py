"""`token-lru`: exact least-recently-used replacement of whole tokens (the paper's policy).

State: one doubly-linked list per region over the units (the dense key ids), in one flat array
`link` (list_moves.py: link[2*x] = prev, link[2*x+1] = next). Node n + p (n = number of units)
is region p's sentinel: the list is circular, sentinel.next is the most recently used unit,
sentinel.prev the least recently used. link[2*x] == -1 means x is not cached. A hit moves the
unit to the MRU end; a miss inserts it there, first evicting the region's LRU unit when the
region is full (the driver says when). The walk, bypass, occupancy and counting are the
driver's (driver.py); the list moves are list_moves.py's.

With RowRules.protect_row the victim is the least recently used unit that the current row does
not select (the driver marks those). Nodes the row does not select never move during the row and
new ones enter at the MRU end, so the next such victim lies towards the MRU end of the last one:
`g` keeps it, and each node is skipped at most once per row.

The same hooks serve `fifo` (promote=False: hits leave the order alone, so the list is insertion
order and the victim the oldest insertion), `near-miss` (token-lru plus prefetches) and
`line-lru` (the units are 128-byte lines).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np
from numba import njit

from dsacache.sim.policies import list_moves as moves
from dsacache.sim.policies.base import register
from dsacache.sim.policies.driver import DrivenPolicy, Hooks, Row, make_replay, no_row
from dsacache.trace.blocks import StepBlock


class ListState(NamedTuple):
    slot_of: np.ndarray  # per unit: the slot holding it, -1: not resident ([1] if keyed)
    ids: np.ndarray  # per slot: the unit it holds ([1] if keyed)
    link: np.ndarray  # list nodes (list_moves.py), then one sentinel per region
    sent0: int  # node of region 0's sentinel
    off: np.ndarray  # int64 [regions]: region p's first slot
    promote: bool  # a hit moves the unit to the MRU end (LRU; FIFO: no)
    mark: np.ndarray  # the driver's marks per unit (RowRules.protect_row)
    extra: tuple  # what a policy built on these hooks adds (line-lru's layout, near-miss's source)


KEYED, SLOTTED = 0, 1  # Hooks.variant: the list's nodes are the units, or slots holding them

# g = (sentinel, the region's first slot, next victim under protect_row (-1: from the LRU end),
# row number, protect_row, keyed): the last two are compile-time constants of the kernel


@njit(inline="always")
def list_begin(st: ListState, row: Row, sel: np.ndarray, u: int) -> tuple:
    return st.sent0 + row.p, st.off[row.p], -1, row.now, row.protect, row.variant == KEYED


@njit(inline="always")
def list_find(st: ListState, x: int, g: tuple, s: int) -> bool:
    return st.link[2 * x] >= 0 if g[5] else st.slot_of[x] >= 0


@njit(inline="always")
def list_hit(st: ListState, x: int, g: tuple, i: int, s: int) -> tuple:
    if st.promote:
        moves.to_front(st.link, x if g[5] else st.slot_of[x], g[0])
    return g


@njit(inline="always")
def _unmarked(st: ListState, v: int, head: int, now: int, keyed: bool) -> int:
    """The first node from v towards the MRU end whose unit the row does not select (head:
    none)."""
    while v != head and st.mark[v if keyed else st.ids[v]] == now:
        v = st.link[2 * v]
    return v


@njit(inline="always")
def list_admit(st: ListState, x: int, g: tuple, i: int, s: int, u: int, full: bool) -> tuple:
    link = st.link
    head, first, nxt, now, protect, keyed = g
    if full:
        if protect:
            v = _unmarked(st, link[2 * head] if nxt < 0 else nxt, head, now, keyed)
            if v == head:  # every resident is the row's (only a prefetch can meet this)
                return (head, first, -1, now, protect, keyed), False
            after = _unmarked(st, link[2 * v], head, now, keyed)
            moves.unlink(link, v)
            nxt = -1 if after == head else after
        else:
            v = moves.pop_back(link, head)
        if keyed:
            link[2 * v] = -1
        else:
            st.slot_of[st.ids[v]] = -1  # the victim's slot is x's
    else:
        v = first + u  # the region's next free slot
    if keyed:
        v = x
    else:
        st.ids[v] = x
        st.slot_of[x] = v
    moves.push_front(link, v, head)
    return (head, first, nxt, now, protect, keyed), True


LIST_HOOKS = Hooks(list_begin, list_find, list_hit, list_admit, no_row, marks=True)
list_replay = make_replay("token_list", LIST_HOOKS)


class ListPolicy(DrivenPolicy):
    """Shared body of token-lru and fifo (and near-miss, line-lru): a linked list per region.

    keyed (KEYED): the list's nodes are the units themselves (two links per unit: one random
    access per hit; token-lru, fifo). Otherwise (SLOTTED) each region has as many slots as it
    holds units and a unit id per slot: a small list that stays in cache when the capacity is
    small (near-miss, line-lru, whose units are many). Each keeps the speed its policy had with
    its own kernel; the decisions are the same."""

    promote: ClassVar[bool] = True
    kernel = list_replay

    def build_state(self) -> None:
        self.keyed = type(self).kernel.hooks.variant == KEYED
        n, regions = self.n_units(), self.n_regions
        self.off = self.slot_off
        nodes = n if self.keyed else int(self.region_slots.sum())
        small = max(n, nodes + regions) < 2**31 and not self.wide
        dtype = np.int32 if small else np.int64
        self.slot_of = np.full(1 if self.keyed else max(n, 1), -1, dtype)
        self.ids = np.zeros(1 if self.keyed else max(nodes, 1), dtype)
        self.sent0 = nodes
        self.link = moves.new_lists(nodes, regions, small)

    def extra(self, block: StepBlock) -> tuple:
        """The state a policy built on these hooks adds (ListState.extra)."""
        return ()

    def state(self, block: StepBlock) -> ListState:
        return ListState(
            self.slot_of, self.ids, self.link, self.sent0, self.off, self.promote, self.mark,
            self.extra(block),
        )  # fmt: skip


@register
class TokenLRU(ListPolicy):
    name = "token-lru"
    summary = "exact LRU over whole tokens (the paper's reserved-region policy)"
    online = True
    prefetches = False
    promote = True
