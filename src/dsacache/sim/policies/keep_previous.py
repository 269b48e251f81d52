"""`keep-previous`: the region holds exactly the previous step's top-k (the paper's §5.3 baseline).

An access of token x by (request r, layer l) at step t hits iff x was kept for (r, l) at step
t-1; after step t's row is read, the region holds that row's selection instead (whatever it held
for (r, l) before is dropped). Nothing else is ever cached.

Capacity rule, per step: region p serves L_p layers (those with partition.of_layer == p); at
step t it is shared by the R_t requests that still have a step t (requests that finished
earlier hold nothing and take no share), so each (request, layer) of it may keep
q_t = floor(capacity[p] / (L_p * R_t)) tokens (= floor(floor(capacity[p] / L_p) / R_t)). When
q_t >= k the whole selection is kept; otherwise each (request, layer) keeps only the first q_t
*valid* entries of its row in slot order (slot order = the indexer's rank order; -1 slots hold
nothing and use no quota). A layer outside every region, or a region of capacity 0, has q = 0:
every access misses.

State: held[key] = the last step at which the key was kept (-2: never), one int32 per key.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.sim.partition import Partition
from dsacache.sim.policies.base import Counters, TokenPolicy, register
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry

NEVER = -2


@njit(cache=True, boundscheck=False)
def keep_previous_block(
    block: np.ndarray,
    step0: int,
    key_off: np.ndarray,
    max_ctx: np.ndarray,
    layer_share: np.ndarray,
    active: np.ndarray,
    held: np.ndarray,
    hits: np.ndarray,
    misses: np.ndarray,
) -> int:
    """Replay block [steps, layers, requests, k] whose row 0 is step `step0`; return -1, or the
    block row of an index that is out of range.

    layer_share[l]: floor(capacity / L_p) of layer l's region (0: bypass); active[t]: requests
    that have step step0 + t (the quota is layer_share // active).
    """
    nb, nl, nr, k = block.shape
    for t in range(nb):
        cur = step0 + t
        prev = cur - 1
        n_active = max(active[t], 1)
        for layer in range(nl):
            q = layer_share[layer] // n_active
            h = 0
            m = 0
            for r in range(nr):
                lim = max_ctx[r]
                base = key_off[r] + layer * lim
                kept = 0
                for s in range(k):
                    tok = block[t, layer, r, s]
                    if tok < 0:
                        continue
                    if tok >= lim:
                        return t
                    key = base + tok
                    if held[key] == prev:
                        h += 1
                    else:
                        m += 1
                    if kept < q:  # tokens of one row are distinct: no lookup sees this write
                        held[key] = cur
                        kept += 1
            hits[layer] += h
            misses[layer] += m
    return -1


def layer_share(partition: Partition) -> np.ndarray:
    """floor(capacity[p] / L_p) of each layer's region p (0 for a bypassed layer)."""
    of_layer = partition.of_layer
    share = np.zeros(of_layer.shape[0], np.int64)
    for p in range(partition.regions):
        members = of_layer == p
        n = int(members.sum())
        if n:
            share[members] = int(partition.capacity[p]) // n
    return share


def active_requests(request_steps: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Requests that have step t, for t in [start, stop) (int64 [stop - start])."""
    t = np.arange(start, stop, dtype=np.int64)
    return (np.asarray(request_steps, np.int64)[None, :] > t[:, None]).sum(axis=1).astype(np.int64)


@register
class KeepPrevious(TokenPolicy):
    name = "keep-previous"
    summary = "holds exactly the previous step's top-k of each (request, layer) (paper §5.3)"

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        self.share = layer_share(partition)
        self.request_steps = np.array([r.steps for r in blocks.trace.requests], np.int64)
        self.held = np.full(blocks.keys.size, NEVER, dtype=np.int32)

    def run_block(self, block: StepBlock, counters: Counters) -> None:
        keys = self.blocks.keys
        bad = keep_previous_block(
            block.indices,
            block.start,
            keys.key_offset,
            keys.max_context,
            self.share,
            active_requests(self.request_steps, block.start, block.stop),
            self.held,
            counters.hits,
            counters.misses,
        )
        if bad >= 0:
            raise self.index_error(block.start + bad)

    @classmethod
    def warmup(cls) -> None:
        block = np.array([[[[0, 1, -1]]], [[[1, 2, 0]]]], dtype=np.int32)
        keep_previous_block(
            block,
            0,
            np.zeros(1, np.int64),
            np.full(1, 4, np.int64),
            np.full(1, 2, np.int64),
            np.ones(2, np.int64),
            np.full(4, NEVER, np.int32),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
        )
