"""`token-lru`: exact least-recently-used replacement of whole tokens (the paper's policy).

State: one doubly-linked list per region over the dense key ids, kept in one flat array
`link` (link[2*i] = prev, link[2*i+1] = next, so a node's two pointers share a cache line).
Node n + p (n = number of keys) is region p's sentinel: the list is circular, sentinel.next is
the most recently used token, sentinel.prev the least recently used. link[2*key] == -1 means the
key is not cached. A hit moves the key to the MRU end; a miss inserts it there, first evicting
the region's LRU token when the region is full. The walk, bypass and counting are the driver's
(driver.py); the list moves are list_moves.py's.

`fifo` (fifo.py) runs the same hooks with promote=False: hits leave the order alone, so the
list is insertion order and the victim is the oldest insertion.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from ref_policies import list_moves as moves
from ref_policies.base import register
from ref_policies.driver import DrivenPolicy, Hooks, make_replay, same_g

# st = (link, size, sent0, promote); g = (fill level, capacity, sentinel) of the region


@njit(inline="always")
def _begin(st: tuple, t: int, step: int, layer: int, p: int, c: int) -> tuple:
    return st[1][p], c, st[2] + p


@njit(inline="always")
def _find(st: tuple, key: int, g: tuple) -> bool:
    return st[0][2 * key] >= 0


@njit(inline="always")
def _hit(st: tuple, key: int, g: tuple, i: int) -> tuple:
    if st[3]:
        moves.to_front(st[0], key, g[2])
    return g


@njit(inline="always")
def _miss(st: tuple, key: int, g: tuple, i: int) -> tuple:
    link = st[0]
    sz, c, head = g
    if sz >= c:  # evict the LRU (or oldest) token
        link[2 * moves.pop_back(link, head)] = -1
    else:
        sz += 1
    moves.push_front(link, key, head)
    return sz, c, head


@njit(inline="always")
def _end(st: tuple, p: int, g: tuple) -> None:
    st[1][p] = g[0]


list_replay = make_replay("token_list", Hooks(_begin, same_g, _find, _hit, _miss, _end))


class ListPolicy(DrivenPolicy):
    """Shared body of token-lru and fifo: a linked list per region, one kernel."""

    promote: ClassVar[bool] = True
    kernel = list_replay

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        n, regions = blocks.keys.size, partition.regions
        self.sent0 = n
        self.link = moves.new_lists(n, regions, n + regions < 2**31)
        self.size = np.zeros(regions, np.int64)

    def state(self, block: StepBlock) -> tuple:
        return (self.link, self.size, self.sent0, self.promote)

    @classmethod
    def warmup(cls) -> None:
        super().warmup()
        for mask in (None, np.zeros((1, 1, 1, 2), np.uint8)):  # int64 links (2**31 keys and up)
            block, one = np.array([[[[0, 1]]]], np.int32), np.ones(1, np.int64)
            st = (moves.new_lists(2, 1, small=False), np.zeros(1, np.int64), 2, cls.promote)
            z = np.zeros(1, np.int64), np.zeros(1, np.int64)
            list_replay(block, 0, one - 1, one * 2, np.zeros(1, np.int32), one, st, *z, mask)


@register
class TokenLRU(ListPolicy):
    name = "token-lru"
    summary = "exact LRU over whole tokens (the paper's reserved-region policy)"
    online = True
    prefetches = False
    promote = True
