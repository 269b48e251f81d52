"""The doubly-linked list moves every list-based policy uses, inlined into its kernel.

A list lives in one flat int array `link`: link[2*n] = prev, link[2*n+1] = next of node n (a
node's two pointers share a cache line). Each list is circular through a sentinel node `head`:
head's next is the front (MRU) node, head's prev the back (LRU) node; an empty list is the
sentinel pointing at itself. Nodes are keys (token-lru, fifo) or slots (line-lru, near-miss).

`inline="always"` makes numba paste each body into the caller before optimisation, so the moves
cost what they would written out by hand (benchmarks/bench_policy_driver.py measures it).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def new_lists(nodes: int, lists: int, small: bool) -> np.ndarray:
    """`lists` empty circular lists over `nodes` nodes; sentinel of list p = node nodes + p.
    int32 when `small` (less memory traffic), else int64. Every node starts unlinked (-1)."""
    link = np.full(2 * (nodes + lists), -1, dtype=np.int32 if small else np.int64)
    sentinels = np.arange(nodes, nodes + lists)
    link[2 * sentinels] = sentinels
    link[2 * sentinels + 1] = sentinels
    return link


@njit(inline="always")
def push_front(link: np.ndarray, n: int, head: int) -> None:
    """Link the unlinked node n at the front of head's list."""
    first = link[2 * head + 1]
    link[2 * n] = head
    link[2 * n + 1] = first
    link[2 * first] = n
    link[2 * head + 1] = n


@njit(inline="always")
def unlink(link: np.ndarray, n: int) -> None:
    """Take node n out of its list (its own pointers are left as they were)."""
    pv = link[2 * n]
    nx = link[2 * n + 1]
    link[2 * pv + 1] = nx
    link[2 * nx] = pv


@njit(inline="always")
def to_front(link: np.ndarray, n: int, head: int) -> None:
    """Move the linked node n to the front of head's list (nothing if it is there already)."""
    if link[2 * n] != head:
        unlink(link, n)
        push_front(link, n, head)


@njit(inline="always")
def pop_back(link: np.ndarray, head: int) -> int:
    """Unlink and return the back (LRU) node of head's non-empty list."""
    v = link[2 * head]
    vp = link[2 * v]  # v's next is head: no need to load it
    link[2 * vp + 1] = head
    link[2 * head] = vp
    return v
