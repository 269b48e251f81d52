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

from dsacache.sim.partition import Partition
from dsacache.sim.policies import list_moves as moves
from dsacache.sim.policies.base import NO_RULES, RowRules, register
from dsacache.sim.policies.driver import DrivenPolicy, Hooks, Row, make_replay, no_row
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry


class ListState(NamedTuple):
    link: np.ndarray  # list nodes (list_moves.py): units, then one sentinel per region
    sent0: int  # node of region 0's sentinel
    promote: bool  # a hit moves the unit to the MRU end (LRU; FIFO: no)
    mark: np.ndarray  # the driver's marks (RowRules.protect_row)


# g = (sentinel, next victim under protect_row (-1: look from the LRU end), row number,
# protect_row)


@njit(inline="always")
def list_begin(st: ListState, row: Row, sel: np.ndarray, u: int) -> tuple:
    return st.sent0 + row.p, -1, row.now, row.protect


@njit(inline="always")
def list_find(st: ListState, x: int, g: tuple, s: int) -> bool:
    return st.link[2 * x] >= 0


@njit(inline="always")
def list_hit(st: ListState, x: int, g: tuple, i: int, s: int) -> tuple:
    if st.promote:
        moves.to_front(st.link, x, g[0])
    return g


@njit(inline="always")
def _unmarked(link: np.ndarray, mark: np.ndarray, v: int, head: int, now: int) -> int:
    """The first node from v towards the MRU end that the row does not select (head: none)."""
    while v != head and mark[v] == now:
        v = link[2 * v]
    return v


@njit(inline="always")
def list_admit(st: ListState, x: int, g: tuple, i: int, s: int, u: int, full: bool) -> tuple:
    link = st.link
    head, nxt, now, protect = g
    if full:
        if protect:
            v = _unmarked(link, st.mark, link[2 * head] if nxt < 0 else nxt, head, now)
            if v == head:  # every resident is the row's (only a prefetch can meet this)
                return (head, -1, now, protect), False
            after = _unmarked(link, st.mark, link[2 * v], head, now)
            moves.unlink(link, v)
            nxt = -1 if after == head else after
        else:
            v = moves.pop_back(link, head)
        link[2 * v] = -1
    moves.push_front(link, x, head)
    return (head, nxt, now, protect), True


LIST_HOOKS = Hooks(list_begin, list_find, list_hit, list_admit, no_row)
list_replay = make_replay("token_list", LIST_HOOKS)


class ListPolicy(DrivenPolicy):
    """Shared body of token-lru and fifo (and near-miss, line-lru): a linked list per region."""

    promote: ClassVar[bool] = True
    kernel = list_replay

    def __init__(
        self,
        blocks: StepBlocks,
        partition: Partition,
        geometry: Geometry,
        rules: RowRules = NO_RULES,
    ) -> None:
        super().__init__(blocks, partition, geometry, rules)
        n, regions = self.n_units(), self.n_regions
        self.sent0 = n
        self.link = moves.new_lists(n, regions, n + regions < 2**31 and not self.wide)

    def state(self, block: StepBlock) -> ListState:
        return ListState(self.link, self.sent0, self.promote, self.mark)


@register
class TokenLRU(ListPolicy):
    name = "token-lru"
    summary = "exact LRU over whole tokens (the paper's reserved-region policy)"
    online = True
    prefetches = False
    promote = True
