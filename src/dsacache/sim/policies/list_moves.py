"""The doubly-linked list moves every list-based policy uses, inlined into its kernel.

A list lives in one flat int array `link` of fixed-width node records: link[w*n] = prev and
link[w*n+1] = next of node n (w = 2 by default, so a node's two pointers share a cache line; a
policy that keeps more per node in the same record, as hazard's last selection and class, passes
its width). Each list is circular through a sentinel node `head`: head's next is the front (MRU)
node, head's prev the back (LRU) node; an empty list is the sentinel pointing at itself. Nodes
are keys (token-lru, fifo, near-miss, hazard), or lines (line-lru).

`inline="always"` makes numba paste each body into the caller before optimisation, so the moves
cost what they would written out by hand (benchmarks/bench_policy_driver.py measures it).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def new_lists(nodes: int, lists: int, small: bool, width: int = 2) -> np.ndarray:
    """`lists` empty circular lists over `nodes` nodes; sentinel of list p = node nodes + p.
    int32 when `small` (less memory traffic), else int64. Every node starts unlinked (-1), and
    so does every other field of its record."""
    link = np.full(width * (nodes + lists), -1, dtype=np.int32 if small else np.int64)
    sentinels = np.arange(nodes, nodes + lists)
    link[width * sentinels] = sentinels
    link[width * sentinels + 1] = sentinels
    return link


@njit(inline="always")
def push_front(link: np.ndarray, n: int, head: int, w: int = 2) -> None:
    """Link the unlinked node n at the front of head's list."""
    first = link[w * head + 1]
    link[w * n] = head
    link[w * n + 1] = first
    link[w * first] = n
    link[w * head + 1] = n


@njit(inline="always")
def unlink(link: np.ndarray, n: int, w: int = 2) -> None:
    """Take node n out of its list (its own pointers are left as they were)."""
    pv = link[w * n]
    nx = link[w * n + 1]
    link[w * pv + 1] = nx
    link[w * nx] = pv


@njit(inline="always")
def to_front(link: np.ndarray, n: int, head: int, w: int = 2) -> None:
    """Move the linked node n to the front of head's list (nothing if it is there already)."""
    if link[w * n] != head:
        unlink(link, n, w)
        push_front(link, n, head, w)


@njit(inline="always")
def pop_back(link: np.ndarray, head: int) -> int:
    """Unlink and return the back (LRU) node of head's non-empty list."""
    v = link[2 * head]
    vp = link[2 * v]  # v's next is head: no need to load it
    link[2 * vp + 1] = head
    link[2 * head] = vp
    return v
