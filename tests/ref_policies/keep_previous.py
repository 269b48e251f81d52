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
The driver (driver.py) walks the accesses; the hooks below look up and keep.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dsacache.sim.partition import Partition
from dsacache.trace.blocks import StepBlock, StepBlocks
from dsacache.trace.geometry import Geometry
from ref_policies.base import register
from ref_policies.driver import DrivenPolicy, Hooks, make_replay

NEVER = -2


# st = (held, share, active); g = (quota of a row, quota left in this row, step)


@njit(inline="always")
def _begin(st: tuple, t: int, step: int, layer: int, p: int, c: int) -> tuple:
    q = st[1][layer] // max(st[2][t], 1)
    return q, q, step


@njit(inline="always")
def _row(st: tuple, g: tuple) -> tuple:
    return g[0], g[0], g[2]


@njit(inline="always")
def _find(st: tuple, key: int, g: tuple) -> bool:
    return st[0][key] == g[2] - 1


@njit(inline="always")
def _keep(st: tuple, key: int, g: tuple, i: int) -> tuple:
    if g[1] > 0:  # tokens of one row are distinct: no lookup of this row sees this write
        st[0][key] = g[2]
        return g[0], g[1] - 1, g[2]
    return g


@njit(inline="always")
def _end(st: tuple, p: int, g: tuple) -> None:
    pass


keep_previous_replay = make_replay(
    "keep_previous", Hooks(_begin, _row, _find, _keep, _keep, _end, same_update=True)
)


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
class KeepPrevious(DrivenPolicy):
    name = "keep-previous"
    summary = "holds exactly the previous step's top-k of each (request, layer) (paper §5.3)"
    online = True
    prefetches = False
    kernel = keep_previous_replay

    def __init__(self, blocks: StepBlocks, partition: Partition, geometry: Geometry) -> None:
        super().__init__(blocks, partition, geometry)
        self.share = layer_share(partition)
        self.request_steps = np.array([r.steps for r in blocks.trace.requests], np.int64)
        self.held = np.full(blocks.keys.size, NEVER, dtype=np.int32)

    def state(self, block: StepBlock) -> tuple:
        active = active_requests(self.request_steps, block.start, block.stop)
        return (self.held, self.share, active)
